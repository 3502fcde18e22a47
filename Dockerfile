# syntax=docker/dockerfile:1
# Build: docker build -t recordhook .
# Run:   docker run -p 8080:8080 -e RECORDHOOK_SIGNATURE__SIGNING_KEYS=PSK_… -v recordhook-data:/var/lib/recordhook recordhook

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin recordhook \
    && cp target/release/recordhook /usr/local/bin/recordhook

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/recordhook --create-home recordhook
COPY --from=build /usr/local/bin/recordhook /usr/local/bin/recordhook
COPY config.example.toml /etc/recordhook/config.toml
ENV RECORDHOOK_CONFIG=/etc/recordhook/config.toml \
    RECORDHOOK_STORE__PATH=/var/lib/recordhook/recordhook.db
USER recordhook
WORKDIR /var/lib/recordhook
VOLUME ["/var/lib/recordhook"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["recordhook", "healthcheck"]
# SIGTERM drains: readiness off, in-flight requests finish, deliveries get shutdown_grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["recordhook"]
CMD ["serve"]
