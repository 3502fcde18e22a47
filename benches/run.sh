#!/usr/bin/env bash
# End-to-end throughput benchmark over loopback, three receivers side by side in one run:
#
#   bare        examples/bare_axum.rs: axum 0.8 parsing the form into a struct, nothing else
#               (the ceiling of our HTTP stack on this machine)
#   ceiling     examples/http_ceiling.rs: recordhook's own request path (same config, signature
#               check, decoding, validation, routing) over a store that acknowledges at once
#               and keeps nothing: the part of the gap to bare axum that is not durability
#   recordhook  the release binary, `serve`: signatures required, SQLite with fsync on every
#               commit (the defaults), one `log` handler, stdout to /dev/null, RUST_LOG unset
#   recordhook_ingest  the same binary and store with the `log` handler taking no event
#               (`events = ["failed"]`; every callback here is `completed`): durable ingest
#               alone, so that the rows above and below split the cost of delivery from
#               that of storing
#   webhook     adnanh/webhook (Debian package) running /bin/true for every POST
#   recordhook_pg  with PG=1: the same binary and config on the PostgreSQL store, one
#               replica on a fresh database (created on the server at BENCH_POSTGRES_URL,
#               dropped afterwards), so both stores are measured in the same run
#
# Every request is a distinct, correctly signed form callback (one RecordingSid each),
# generated ahead of time by examples/gen_callbacks.rs and sent by wrk through
# benches/wrk/callbacks.lua. For each target: start it, wait until it answers, read its idle
# RSS, warm it up, run wrk while sampling RSS and counting what the process writes to storage
# (/proc/<pid>/io write_bytes: for recordhook on SQLite, its WAL and checkpoints; on PostgreSQL
# the server writes, so that row reads 0) and the CPU time it and wrk use (/proc/<pid>/stat,
# /usr/bin/time), stop it. Then print a markdown table (also
# written to target/bench/results.md) and check that recordhook stored one event per 2xx
# answer and that nobody answered anything but 2xx.
#
# Knobs (environment):
#   DURATION     wrk run per target (default 15s; wrk syntax: 10s, 1m)
#   CONNECTIONS  wrk connections (default 32)
#   THREADS      wrk threads (default 2)
#   WARMUP       warm-up run per target, with its own requests (default 2s)
#   MAX_RATE     requests/s the request file is sized for, per second of DURATION
#                (default 120000); if a target is faster, wrk prints a WARNING
#   KEEP_TMP=1   keep the temp dir (request files, logs, the SQLite store)
#   PG=1         also measure recordhook on PostgreSQL (needs psql and a server)
#   BENCH_POSTGRES_URL  admin URL of that server (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
#
# Needs: cargo, python3, curl; wrk and webhook are installed with apt-get when missing.
set -euo pipefail

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
MAX_RATE=${MAX_RATE:-120000}
PG=${PG:-0}
BENCH_POSTGRES_URL=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
KEY=PSK_bench_signing_key
PATH_CALLBACK=/recording-status

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LUA="$ROOT/benches/wrk/callbacks.lua"
OUT_DIR="$ROOT/target/bench"

# Our own settings only: nothing from the caller's environment may reconfigure recordhook.
unset RUST_LOG
while read -r name; do unset "$name"; done < <(compgen -e | grep '^RECORDHOOK_' || true)

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

# --- build and request files ---------------------------------------------------------------

log "building (release)"
cargo build --release --quiet --bin recordhook --example bare_axum --example gen_callbacks --example http_ceiling
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

BARE_PORT=$(free_port 18081)
# Any free port, not a fixed one another run on this machine may also pick: recordhook and
# recordhook_pg reuse it, since the request files are signed for it.
RH_PORT=$(free_port 0)
[[ $RH_PORT != "$BARE_PORT" ]] || RH_PORT=$(free_port 0)
WEBHOOK_PORT=$(free_port 9000)

RUN_SECS=$(seconds "$DURATION")
WARM_SECS=$(seconds "$WARMUP")
LINES=$((RUN_SECS * MAX_RATE))
WARM_LINES=$((WARM_SECS * MAX_RATE))
# Signed for recordhook's URL (the only target that checks); the others ignore the header.
RH_URL="http://127.0.0.1:$RH_PORT$PATH_CALLBACK"
log "signing $LINES + $WARM_LINES distinct callbacks for $RH_URL"
"$BIN/examples/gen_callbacks" --url "$RH_URL" --key "$KEY" --count "$LINES" --seed 1 --out "$TMP/run.tsv"
"$BIN/examples/gen_callbacks" --url "$RH_URL" --key "$KEY" --count "$WARM_LINES" --seed 2 --out "$TMP/warm.tsv"

cat >"$TMP/recordhook.toml" <<EOF
[server]
listen = "127.0.0.1:$RH_PORT"
path = "$PATH_CALLBACK"

[signature]
signing_keys = ["$KEY"]

[store]
path = "$TMP/recordhook.db"

[handlers.log]
type = "log"
EOF

sed -e "s|$TMP/recordhook.db|$TMP/recordhook_ingest.db|" -e 's|^type = "log"$|type = "log"\nevents = ["failed"]|' \
    "$TMP/recordhook.toml" >"$TMP/recordhook_ingest.toml"
"$BIN/recordhook" check-config --config "$TMP/recordhook_ingest.toml" >/dev/null \
    || die "the built recordhook does not accept the ingest-only config"

if [[ $PG == 1 ]]; then
    command -v psql >/dev/null || die "PG=1 needs psql"
    PG_DB="rh_bench_$$"
    psql -q -d "$BENCH_POSTGRES_URL" -c "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create a database at BENCH_POSTGRES_URL"
    EXTRA_CLEANUP+=("psql -q -d '$BENCH_POSTGRES_URL' -c 'DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)' >/dev/null 2>&1")
    PG_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' \
        "$BENCH_POSTGRES_URL" "$PG_DB")
    # The same listener, signature and handler as the SQLite run: only the store differs.
    cat >"$TMP/recordhook_pg.toml" <<EOF
[server]
listen = "127.0.0.1:$RH_PORT"
path = "$PATH_CALLBACK"

[signature]
signing_keys = ["$KEY"]

[store]
type = "postgres"
url = "$PG_URL"

[handlers.log]
type = "log"
EOF
    "$BIN/recordhook" check-config --config "$TMP/recordhook_pg.toml" >/dev/null \
        || die "the built recordhook does not accept the PostgreSQL config"
fi

cat >"$TMP/hooks.json" <<EOF
[
  {
    "id": "recording-status",
    "execute-command": "/bin/true",
    "http-methods": ["POST"],
    "response-message": "ok"
  }
]
EOF

bench bare "http://127.0.0.1:$BARE_PORT$PATH_CALLBACK" "http://127.0.0.1:$BARE_PORT$PATH_CALLBACK" -- \
    "$BIN/examples/bare_axum" "127.0.0.1:$BARE_PORT"

# Same port and config as recordhook, so the signed request files fit.
bench ceiling "$RH_URL" "http://127.0.0.1:$RH_PORT/healthz" -- \
    "$BIN/examples/http_ceiling" "$TMP/recordhook.toml"

bench recordhook "$RH_URL" "http://127.0.0.1:$RH_PORT/healthz" -- \
    "$BIN/recordhook" serve --config "$TMP/recordhook.toml"

bench recordhook_ingest "$RH_URL" "http://127.0.0.1:$RH_PORT/healthz" -- \
    "$BIN/recordhook" serve --config "$TMP/recordhook_ingest.toml"

if [[ $PG == 1 ]]; then
    # Same port as the SQLite run (stopped by now), so the signed request files fit.
    bench recordhook_pg "$RH_URL" "http://127.0.0.1:$RH_PORT/healthz" -- \
        "$BIN/recordhook" serve --config "$TMP/recordhook_pg.toml"
fi

bench webhook "http://127.0.0.1:$WEBHOOK_PORT/hooks/recording-status" "http://127.0.0.1:$WEBHOOK_PORT/" -- \
    webhook -hooks "$TMP/hooks.json" -ip 127.0.0.1 -port "$WEBHOOK_PORT"

# --- checks ------------------------------------------------------------------------------------

FAILED=0
CHECKS=()

# A recordhook target must have stored one event per 2xx answer. Requests still in flight
# when wrk stops (at most one per connection, per wrk run) may be stored without wrk
# counting them.
check_stored() {
    local name=$1 stored=$2 ok_2xx in_flight
    ok_2xx=$(( $(wrk_field "$TMP/$name.wrk" requests) + $(wrk_field "$TMP/$name.warm.wrk" requests) - NON2XX[$name] ))
    in_flight=$((stored - ok_2xx))
    if ((in_flight >= 0 && in_flight <= 2 * CONNECTIONS)); then
        CHECKS+=("- ok: $name stored $stored events for $ok_2xx 2xx answers (warm-up + run; $in_flight answered after wrk stopped counting, at most $((2 * CONNECTIONS)) can be)")
    else
        CHECKS+=("- FAIL: $name stored $stored events for $ok_2xx 2xx answers (warm-up + run)")
        FAILED=1
    fi
}
sqlite_events() {
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM events").fetchone()[0])' "$1"
}
check_stored recordhook "$(sqlite_events "$TMP/recordhook.db")"
check_stored recordhook_ingest "$(sqlite_events "$TMP/recordhook_ingest.db")"
if [[ $PG == 1 ]]; then
    check_stored recordhook_pg "$(psql -At -d "$PG_URL" -c "SELECT count(*) FROM events")"
fi

NAMES=(bare ceiling recordhook recordhook_ingest webhook)
[[ $PG == 1 ]] && NAMES+=(recordhook_pg)
for name in "${NAMES[@]}"; do
    if ((NON2XX[$name] == 0)); then
        CHECKS+=("- ok: $name answered every request 2xx (socket errors: ${ERRORS[$name]})")
    else
        CHECKS+=("- FAIL: $name answered ${NON2XX[$name]} requests with non-2xx (socket errors: ${ERRORS[$name]})")
        FAILED=1
    fi
    if ((DUPS[$name] > 0)); then
        CHECKS+=("- WARNING: ${DUPS[$name]} duplicate requests sent to $name: the request file wrapped; raise MAX_RATE")
    fi
done

# --- report --------------------------------------------------------------------------------------

# Storage written during the measured run per request answered in it, in KiB.
written_per_request() {
    awk -v w="${WRITTEN[$1]}" -v n="$(wrk_field "$TMP/$1.wrk" requests)" 'BEGIN { printf "%.1f", (n > 0 ? w / n / 1024 : 0) }'
}
row() {
    local name=$1 label=$2
    printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" \
        "$(mib "${IDLE[$name]}")" "$(mib "${PEAK[$name]}")" "$(written_per_request "$name")" "${CPU[$name]}" "${WRK_CPU[$name]}"
}
ratio_row() {
    local a=$1 b=$2
    printf '| %s / %s | %s | %s | %s | %s | %s |\n' "$a" "$b" "$(ratio "${RPS[$a]}" "${RPS[$b]}")" \
        "$(ratio "${P50[$a]}" "${P50[$b]}")" "$(ratio "${P99[$a]}" "${P99[$b]}")" \
        "$(ratio "${IDLE[$a]}" "${IDLE[$b]}")" "$(ratio "${PEAK[$a]}" "${PEAK[$b]}")"
}

mkdir -p "$OUT_DIR"
{
    echo "## recordhook benchmark: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up) over loopback;" \
        "$LINES distinct signed form callbacks; commit $(commit)."
    machine
    echo
    echo "| target | requests/s | p50 (ms) | p99 (ms) | idle RSS (MiB) | peak RSS (MiB) | written per request (KiB) | CPU per request (µs) | wrk's CPU per request (µs) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    row bare "bare axum (form → struct)"
    row ceiling "recordhook request path, store acks at once, keeps nothing"
    row recordhook "recordhook (signed, SQLite fsync, log handler)"
    row recordhook_ingest "recordhook, ingest only (as above; the log handler takes no event)"
    row webhook "webhook $(webhook -version | awk '{ print $NF }') (/bin/true)"
    if [[ $PG == 1 ]]; then row recordhook_pg "recordhook (signed, PostgreSQL, log handler, 1 replica)"; fi
    echo
    echo "| ratio | requests/s | p50 | p99 | idle RSS | peak RSS |"
    echo "|---|---:|---:|---:|---:|---:|"
    ratio_row recordhook bare
    ratio_row ceiling bare
    ratio_row recordhook ceiling
    ratio_row recordhook webhook
    ratio_row recordhook recordhook_ingest
    if [[ $PG == 1 ]]; then ratio_row recordhook_pg recordhook; fi
    echo
    printf '%s\n' "${CHECKS[@]}"
} | tee "$OUT_DIR/results.md"
log "written to target/bench/results.md"

exit "$FAILED"
