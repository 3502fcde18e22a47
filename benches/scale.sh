#!/usr/bin/env bash
# Scale and end-to-end benchmarks, the companions of benches/run.sh (same wrk load: 32
# connections, distinct correctly signed form callbacks, recordhook's release binary with
# signatures required and fsync on every commit). Four runs, one after the other:
#
#   empty     a log handler, empty store: the baseline for the next two
#   stored    a log handler, a store pre-filled with $EVENTS events (all delivered):
#             ack throughput must stay ≥ 0.8× empty's
#   backlog   the same store, plus an `http` handler whose $EVENTS deliveries are all still
#             queued (waiting out a retry backoff after a downstream outage; its URL
#             refuses connections, so new ones join the queue): RSS idle and under load
#             must stay ≤ 100 MiB
#   e2e       one `http` handler (concurrency $E2E_CONCURRENCY) into a local receiver
#             (examples/count_receiver.rs), empty store: events/s from the first callback
#             sent to the last event delivered
#
# The store is pre-filled by examples/prefill_store.rs through recordhook's own store code
# (group commit, fsync): $EVENTS events with one delivery each for `log` (marked delivered)
# and `forward` (pending, due in a day). Writes a markdown report to target/bench/scale.md.
#
# Knobs (environment): DURATION (15s), CONNECTIONS (32), THREADS (2), WARMUP (2s),
# EVENTS (1000000), E2E_CONCURRENCY (32), MAX_RATE (60000: request-file lines per second of
# DURATION; recordhook alone is far below that), KEEP_TMP=1.
set -euo pipefail

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
EVENTS=${EVENTS:-1000000}
E2E_CONCURRENCY=${E2E_CONCURRENCY:-32}
MAX_RATE=${MAX_RATE:-60000}
KEY=PSK_bench_signing_key
PATH_CALLBACK=/recording-status

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LUA="$ROOT/benches/wrk/callbacks.lua"
OUT_DIR="$ROOT/target/bench"

unset RUST_LOG
while read -r name; do unset "$name"; done < <(compgen -e | grep '^RECORDHOOK_' || true)

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

log "building (release)"
cargo build --release --quiet --bin recordhook --example gen_callbacks --example prefill_store --example count_receiver
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

RH_PORT=$(free_port 18082)
RECEIVER_PORT=$(free_port 18090)
REFUSING_PORT=$(free_port 0) # bound and released: nothing listens there
RH_URL="http://127.0.0.1:$RH_PORT$PATH_CALLBACK"
RUN_SECS=$(seconds "$DURATION")
LINES=$((RUN_SECS * MAX_RATE))
WARM_LINES=$(($(seconds "$WARMUP") * MAX_RATE))

# Request files: one pair per store, so no run sends a callback its store already has.
log "signing request files for $RH_URL"
gen() { "$BIN/examples/gen_callbacks" --url "$RH_URL" --key "$KEY" --count "$1" --seed "$2" --out "$3"; }
gen "$LINES" 11 "$TMP/fresh.run.tsv"
gen "$WARM_LINES" 12 "$TMP/fresh.warm.tsv"
gen "$LINES" 13 "$TMP/stored.run.tsv"
gen "$WARM_LINES" 14 "$TMP/stored.warm.tsv"
gen "$LINES" 15 "$TMP/backlog.run.tsv"
gen "$WARM_LINES" 16 "$TMP/backlog.warm.tsv"

# config FILE STORE HANDLERS...
config() {
    local file=$1 store=$2
    shift 2
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\npath = "%s"\n\n' "$RH_PORT" "$PATH_CALLBACK"
        printf '[signature]\nsigning_keys = ["%s"]\n\n[store]\npath = "%s"\n' "$KEY" "$store"
        local h
        for h in "$@"; do
            case $h in
                log) printf '\n[handlers.log]\ntype = "log"\n' ;;
                forward)
                    printf '\n[handlers.forward]\ntype = "http"\nurl = "http://127.0.0.1:%s/hook"\n' "$REFUSING_PORT"
                    printf 'retry = { max_attempts = 100, initial_backoff = "10m", max_backoff = "1h" }\n'
                    ;;
                e2e)
                    printf '\n[handlers.e2e]\ntype = "http"\nurl = "http://127.0.0.1:%s/hook"\nconcurrency = %s\n' \
                        "$RECEIVER_PORT" "$E2E_CONCURRENCY"
                    ;;
            esac
        done
    } >"$file"
}

count_rows() {
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$1" "$2"
}

now() { date +%s.%N; }

# --- empty ---------------------------------------------------------------------------------
config "$TMP/empty.toml" "$TMP/empty.db" log
RUN_FILE="$TMP/fresh.run.tsv" WARM_FILE="$TMP/fresh.warm.tsv" \
    bench empty "$RH_URL" "http://127.0.0.1:$RH_PORT/healthz" -- "$BIN/recordhook" serve --config "$TMP/empty.toml"

# --- stored --------------------------------------------------------------------------------
log "pre-filling a store with $EVENTS events"
prefill_start=$(now)
"$BIN/examples/prefill_store" --db "$TMP/big.db" --events "$EVENTS" --handler log --handler forward \
    --delivered log --due-in-secs 86400 2>"$TMP/prefill.log"
PREFILL_SECS=$(awk -v a="$prefill_start" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
DB_MIB=$(awk -v b="$(stat -c %s "$TMP/big.db")" 'BEGIN { printf "%.0f", b / 1048576 }')
config "$TMP/stored.toml" "$TMP/big.db" log
RUN_FILE="$TMP/stored.run.tsv" WARM_FILE="$TMP/stored.warm.tsv" \
    bench stored "$RH_URL" "http://127.0.0.1:$RH_PORT/healthz" -- "$BIN/recordhook" serve --config "$TMP/stored.toml"

# --- backlog -------------------------------------------------------------------------------
config "$TMP/backlog.toml" "$TMP/big.db" log forward
QUEUED=$(count_rows "$TMP/big.db" "SELECT count(*) FROM deliveries WHERE handler = 'forward' AND state = 'pending'")
RUN_FILE="$TMP/backlog.run.tsv" WARM_FILE="$TMP/backlog.warm.tsv" \
    bench backlog "$RH_URL" "http://127.0.0.1:$RH_PORT/healthz" -- "$BIN/recordhook" serve --config "$TMP/backlog.toml"
QUEUED_AFTER=$(count_rows "$TMP/big.db" "SELECT count(*) FROM deliveries WHERE handler = 'forward' AND state = 'pending'")

# --- e2e -----------------------------------------------------------------------------------
log "e2e: starting the receiver"
"$BIN/examples/count_receiver" "127.0.0.1:$RECEIVER_PORT" 2>"$TMP/receiver.stderr" &
RECEIVER_PID=$!
PIDS+=("$RECEIVER_PID")
wait_ready "http://127.0.0.1:$RECEIVER_PORT/count" "$RECEIVER_PID" receiver
received() { curl -s "http://127.0.0.1:$RECEIVER_PORT/count"; }
config "$TMP/e2e.toml" "$TMP/e2e.db" e2e
"$BIN/recordhook" serve --config "$TMP/e2e.toml" >/dev/null 2>"$TMP/e2e.stderr" &
E2E_PID=$!
PIDS+=("$E2E_PID")
wait_ready "http://127.0.0.1:$RH_PORT/healthz" "$E2E_PID" recordhook-e2e

# Waits until the receiver has every stored event (up to 120 s); prints the count.
drain() {
    local stored i
    for ((i = 0; i < 1200; i++)); do
        stored=$(count_rows "$TMP/e2e.db" "SELECT count(*) FROM events")
        if (($(received) >= stored)); then
            echo "$stored"
            return 0
        fi
        sleep 0.1
    done
    die "e2e: deliveries did not catch up within 120 s ($(received) of $stored)"
}

log "e2e: warming up for $WARMUP"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$RH_URL" -- "$TMP/fresh.warm.tsv" "$THREADS" >"$TMP/e2e.warm.wrk" 2>&1
BEFORE=$(drain)
log "e2e: measuring for $DURATION, then until every event is delivered"
t0=$(now)
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$RH_URL" -- "$TMP/fresh.run.tsv" "$THREADS" \
    >"$TMP/e2e.wrk" 2>&1
t_load=$(now)
AFTER=$(drain)
t1=$(now)
E2E_EVENTS=$((AFTER - BEFORE))
E2E_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
E2E_LAG=$(awk -v a="$t_load" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
E2E_RATE=$(awk -v n="$E2E_EVENTS" -v s="$E2E_SECS" 'BEGIN { printf "%.0f", n / s }')
E2E_ACK=$(wrk_field "$TMP/e2e.wrk" rps)
E2E_NON2XX=$(wrk_field "$TMP/e2e.wrk" non2xx)
E2E_REQUESTS=$(wrk_field "$TMP/e2e.wrk" requests)
E2E_DELIVERED_TOTAL=$(received)
stop "$E2E_PID"
stop "$RECEIVER_PID"
log "e2e: $E2E_EVENTS events in ${E2E_SECS}s: $E2E_RATE events/s delivered (acks ${E2E_ACK}/s)"

# --- report ----------------------------------------------------------------------------------
FAILED=0
verdict() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "**MISSED**"; fi; }
for name in empty stored backlog; do
    ((NON2XX[$name] == 0)) || { log "$name answered ${NON2XX[$name]} non-2xx"; FAILED=1; }
done
((E2E_NON2XX == 0)) || { log "e2e answered $E2E_NON2XX non-2xx"; FAILED=1; }
# Every event counted must come from a request of the measured run (plus at most one in
# flight per connection when wrk stopped counting).
if ((E2E_EVENTS > E2E_REQUESTS + CONNECTIONS)); then
    log "e2e: $E2E_EVENTS events stored for $E2E_REQUESTS requests counted by wrk"
    FAILED=1
fi

MIB=1024
mkdir -p "$OUT_DIR"
{
    echo "## recordhook at scale: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up) over loopback; distinct signed form callbacks; commit $(commit)."
    machine
    echo
    echo "Pre-filled store: $EVENTS events through the store's own ingest path in ${PREFILL_SECS} s ($DB_MIB MiB);" \
        "each with a delivered \`log\` delivery and a queued \`forward\` delivery."
    echo
    echo "| run | store | requests/s | p50 (ms) | p99 (ms) | idle RSS (MiB) | peak RSS (MiB) |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    printf '| empty | empty, `log` handler | %.0f | %s | %s | %s | %s |\n' "${RPS[empty]}" "${P50[empty]}" "${P99[empty]}" "$(mib "${IDLE[empty]}")" "$(mib "${PEAK[empty]}")"
    printf '| stored | %s events, `log` handler | %.0f | %s | %s | %s | %s |\n' "$EVENTS" "${RPS[stored]}" "${P50[stored]}" "${P99[stored]}" "$(mib "${IDLE[stored]}")" "$(mib "${PEAK[stored]}")"
    printf '| backlog | %s queued deliveries, `log` + refused `http` handler | %.0f | %s | %s | %s | %s |\n' "$QUEUED" "${RPS[backlog]}" "${P50[backlog]}" "${P99[backlog]}" "$(mib "${IDLE[backlog]}")" "$(mib "${PEAK[backlog]}")"
    echo
    echo "| target | measured | verdict |"
    echo "|---|---:|---|"
    echo "| ack throughput with $EVENTS stored events ≥ 0.8× empty | $(ratio "${RPS[stored]}" "${RPS[empty]}") | $(verdict "${RPS[stored]} >= 0.8 * ${RPS[empty]}") |"
    echo "| idle RSS ≤ 20 MiB (empty store) | $(mib "${IDLE[empty]}") MiB | $(verdict "${IDLE[empty]} <= 20 * $MIB") |"
    echo "| RSS under load ≤ 100 MiB (empty store) | $(mib "${PEAK[empty]}") MiB | $(verdict "${PEAK[empty]} <= 100 * $MIB") |"
    echo "| RSS with $QUEUED queued deliveries ≤ 100 MiB, idle | $(mib "${IDLE[backlog]}") MiB | $(verdict "${IDLE[backlog]} <= 100 * $MIB") |"
    echo "| RSS with $QUEUED queued deliveries ≤ 100 MiB, under load | $(mib "${PEAK[backlog]}") MiB | $(verdict "${PEAK[backlog]} <= 100 * $MIB") |"
    echo
    echo "Queued \`forward\` deliveries: $QUEUED before the backlog run, $QUEUED_AFTER after it (new callbacks join the queue)."
    echo
    echo "### End to end: callback → stored → delivered over \`http\`"
    echo
    echo "| events (wrk requests) | from first callback to last delivery (s) | events/s delivered | acks/s during load | delivery lag after load ended (s) |"
    echo "|---:|---:|---:|---:|---:|"
    printf '| %s (%s) | %s | %s | %.0f | %s |\n' "$E2E_EVENTS" "$E2E_REQUESTS" "$E2E_SECS" "$E2E_RATE" "$E2E_ACK" "$E2E_LAG"
    echo
    echo "One \`http\` handler (concurrency $E2E_CONCURRENCY, defaults otherwise) posting to examples/count_receiver.rs on loopback;" \
        "the receiver counted $E2E_DELIVERED_TOTAL requests in all (warm-up included), and every stored event was delivered."
} | tee "$OUT_DIR/scale.md"
log "written to target/bench/scale.md"
exit "$FAILED"
