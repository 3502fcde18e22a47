#!/usr/bin/env bash
# End-to-end throughput benchmark over loopback, three receivers side by side in one run:
#
#   bare        examples/bare_axum.rs: axum 0.8 parsing the form into a struct, nothing else
#               (the ceiling of our HTTP stack on this machine)
#   recordhook  the release binary, `serve`: signatures required, SQLite with fsync on every
#               commit (the defaults), one `log` handler, stdout to /dev/null, RUST_LOG unset
#   webhook     adnanh/webhook (Debian package) running /bin/true for every POST
#   recordhook_pg  with PG=1: the same release binary and config on the PostgreSQL store,
#               one replica on a fresh database (created on the server at BENCH_POSTGRES_URL,
#               dropped afterwards), so both stores are measured in the same run
#
# Every request is a distinct, correctly signed form callback (one RecordingSid each),
# generated ahead of time by examples/gen_callbacks.rs and sent by wrk through
# benches/wrk/callbacks.lua. For each target: start it, wait until it answers, read its idle
# RSS, warm it up, run wrk while sampling RSS, stop it. Then print a markdown table (also
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
#   BENCH_POSTGRES_URL  admin URL of that server (default postgres://postgres@127.0.0.1:5432/postgres)
#
# Needs: cargo, python3, curl; wrk and webhook are installed with apt-get when missing.
set -euo pipefail

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
MAX_RATE=${MAX_RATE:-120000}
PG=${PG:-0}
BENCH_POSTGRES_URL=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
KEY=PSK_bench_signing_key
PATH_CALLBACK=/recording-status

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LUA="$ROOT/benches/wrk/callbacks.lua"
OUT_DIR="$ROOT/target/bench"

# Our own settings only: nothing from the caller's environment may reconfigure recordhook.
unset RUST_LOG
while read -r name; do unset "$name"; done < <(compgen -e | grep '^RECORDHOOK_' || true)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v webhook >/dev/null || missing+=(webhook)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
tools=(cargo python3 curl wrk webhook)
[[ $PG == 1 ]] && tools+=(psql)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# --- processes and cleanup ---------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/recordhook-bench.XXXXXX")
PIDS=()
PG_DB=""

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $PG_DB ]]; then
        psql -q -d "$BENCH_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Removes a pid from PIDS (it was stopped and reaped already).
forget() {
    local keep=() pid
    for pid in "${PIDS[@]}"; do
        [[ $pid == "$1" ]] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

# Sends SIGTERM and waits (up to 30 s, then SIGKILL) for the process to exit.
stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

# --- helpers -----------------------------------------------------------------------------

# wrk's duration syntax (N, Ns, Nm, Nh) in whole seconds.
seconds() {
    local d=$1
    case $d in
        *h) echo $((${d%h} * 3600)) ;;
        *m) echo $((${d%m} * 60)) ;;
        *s) echo "${d%s}" ;;
        *) echo "$d" ;;
    esac
}

# The preferred port when it is free on 127.0.0.1, else any free port.
free_port() {
    python3 - "$1" <<'EOF'
import socket, sys
for port in (int(sys.argv[1]), 0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(s.getsockname()[1])
    break
EOF
}

# Waits until URL answers anything over HTTP (up to 20 s) while PID is alive.
wait_ready() {
    local url=$1 pid=$2 name=$3 i code
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up (logs in $TMP)"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code != 000 ]] && return 0
        sleep 0.1
    done
    die "$name did not answer $url within 20 s"
}

rss_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# Writes the largest VmRSS of PID seen every 50 ms into FILE, until killed.
sample_rss() {
    local pid=$1 file=$2 peak=0 rss
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(rss_kb "$pid" VmRSS)
        if [[ -n $rss ]] && ((rss > peak)); then
            peak=$rss
            echo "$peak" >"$file"
        fi
        sleep 0.05
    done
}

# wrk latency (e.g. 431.00us, 3.05ms, 1.20s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.0f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.0f", v * 1000 }
        else { printf "?" }
    }'
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Field of a wrk output file: rps, p50, p99, requests, non2xx, errors, duplicates.
wrk_field() {
    local file=$1 field=$2
    case $field in
        rps) awk '/^Requests\/sec:/ { print $2 }' "$file" ;;
        p50) to_ms "$(awk '$1 == "50%" { print $2 }' "$file")" ;;
        p99) to_ms "$(awk '$1 == "99%" { print $2 }' "$file")" ;;
        requests) awk '/ requests in / { print $1 }' "$file" ;;
        non2xx) awk '/Non-2xx or 3xx responses:/ { n = $NF } END { print n + 0 }' "$file" ;;
        errors) awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); e = $0 } END { print (e == "" ? "none" : e) }' "$file" ;;
        duplicates) awk '/^callbacks: / { d = $5 } END { print d + 0 }' "$file" ;;
    esac
}

# --- build and request files ---------------------------------------------------------------

log "building (release)"
cargo build --release --quiet --bin recordhook --example bare_axum --example gen_callbacks
# Private copies: a shared target directory (CARGO_TARGET_DIR) may have its binaries
# replaced by another checkout's build while this runs.
mkdir -p "$TMP/bin/examples"
built="${CARGO_TARGET_DIR:-$ROOT/target}/release"
cp "$built/recordhook" "$TMP/bin/"
cp "$built/examples/bare_axum" "$built/examples/gen_callbacks" "$TMP/bin/examples/"
BIN="$TMP/bin"

BARE_PORT=$(free_port 18081)
# Any free port (not a fixed one another run on this machine may also pick): recordhook
# and recordhook_pg reuse it, since the request files are signed for it.
RH_PORT=$(free_port 0)
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

if [[ $PG == 1 ]]; then
    PG_DB="rh_bench_$$"
    psql -q -d "$BENCH_POSTGRES_URL" -c "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create a database at BENCH_POSTGRES_URL"
    PG_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' \
        "$BENCH_POSTGRES_URL" "$PG_DB")
    # The same listener, signature and handler as the SQLite run: only the store differs.
    sed -e '/^\[store\]/,$d' "$TMP/recordhook.toml" >"$TMP/recordhook_pg.toml"
    cat >>"$TMP/recordhook_pg.toml" <<EOF
[store]
type = "postgres"
url = "$PG_URL"

[handlers.log]
type = "log"
EOF
fi

if [[ $PG == 1 ]]; then
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

# --- one target ------------------------------------------------------------------------------

declare -A RPS P50 P99 IDLE PEAK NON2XX ERRORS DUPS

# bench NAME URL READY_URL -- COMMAND...
bench() {
    local name=$1 url=$2 ready=$3
    shift 4
    log "$name: starting"
    "$@" >/dev/null 2>"$TMP/$name.stderr" &
    local pid=$!
    PIDS+=("$pid")
    wait_ready "$ready" "$pid" "$name"
    sleep 0.5
    # Something else answering on the port while ours died (port taken) is not a result.
    kill -0 "$pid" 2>/dev/null || die "$name exited after start-up: $(tail -n 3 "$TMP/$name.stderr")"
    IDLE[$name]=$(rss_kb "$pid" VmRSS)

    log "$name: warming up for $WARMUP"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$url" -- "$TMP/warm.tsv" "$THREADS" \
        >"$TMP/$name.warm.wrk" 2>&1

    log "$name: measuring for $DURATION"
    echo 0 >"$TMP/$name.peak"
    # Resets VmHWM, so that the peak read below is the measured run's, not the warm-up's.
    echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
    sample_rss "$pid" "$TMP/$name.peak" &
    local sampler=$!
    PIDS+=("$sampler")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$url" -- "$TMP/run.tsv" "$THREADS" \
        >"$TMP/$name.wrk" 2>&1
    local hwm
    hwm=$(rss_kb "$pid" VmHWM)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    forget "$sampler"
    # VmHWM is the kernel's exact peak; the samples are the fallback if it is missing.
    PEAK[$name]=$(( $(cat "$TMP/$name.peak") > ${hwm:-0} ? $(cat "$TMP/$name.peak") : ${hwm:-0} ))

    RPS[$name]=$(wrk_field "$TMP/$name.wrk" rps)
    P50[$name]=$(wrk_field "$TMP/$name.wrk" p50)
    P99[$name]=$(wrk_field "$TMP/$name.wrk" p99)
    NON2XX[$name]=$(( $(wrk_field "$TMP/$name.wrk" non2xx) + $(wrk_field "$TMP/$name.warm.wrk" non2xx) ))
    ERRORS[$name]=$(wrk_field "$TMP/$name.wrk" errors)
    DUPS[$name]=$(( $(wrk_field "$TMP/$name.wrk" duplicates) + $(wrk_field "$TMP/$name.warm.wrk" duplicates) ))
    grep -h WARNING "$TMP/$name.warm.wrk" "$TMP/$name.wrk" >&2 || true
    log "$name: ${RPS[$name]} requests/s, p50 ${P50[$name]} ms, p99 ${P99[$name]} ms"

    stop "$pid"
}

bench bare "http://127.0.0.1:$BARE_PORT$PATH_CALLBACK" "http://127.0.0.1:$BARE_PORT$PATH_CALLBACK" -- \
    "$BIN/examples/bare_axum" "127.0.0.1:$BARE_PORT"

bench recordhook "$RH_URL" "http://127.0.0.1:$RH_PORT/healthz" -- \
    "$BIN/recordhook" serve --config "$TMP/recordhook.toml"

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

# recordhook must have stored one event per 2xx answer. Requests still in flight when wrk
# stops (at most one per connection, per wrk run) may be stored without wrk counting them.
STORED=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM events").fetchone()[0])' \
    "$TMP/recordhook.db")
ok_2xx=$(( $(wrk_field "$TMP/recordhook.wrk" requests) + $(wrk_field "$TMP/recordhook.warm.wrk" requests) - NON2XX[recordhook] ))
in_flight=$((STORED - ok_2xx))
if ((in_flight >= 0 && in_flight <= 2 * CONNECTIONS)); then
    CHECKS+=("- ok: recordhook stored $STORED events for $ok_2xx 2xx answers (warm-up + run; $in_flight answered after wrk stopped counting, at most $((2 * CONNECTIONS)) can be)")
else
    CHECKS+=("- FAIL: recordhook stored $STORED events for $ok_2xx 2xx answers (warm-up + run)")
    FAILED=1
fi
if [[ $PG == 1 ]]; then
    STORED=$(psql -At -d "$PG_URL" -c "SELECT count(*) FROM events")
    ok_2xx=$(( $(wrk_field "$TMP/recordhook_pg.wrk" requests) + $(wrk_field "$TMP/recordhook_pg.warm.wrk" requests) - NON2XX[recordhook_pg] ))
    in_flight=$((STORED - ok_2xx))
    if ((in_flight >= 0 && in_flight <= 2 * CONNECTIONS)); then
        CHECKS+=("- ok: recordhook_pg stored $STORED events for $ok_2xx 2xx answers (warm-up + run)")
    else
        CHECKS+=("- FAIL: recordhook_pg stored $STORED events for $ok_2xx 2xx answers (warm-up + run)")
        FAILED=1
    fi
fi
NAMES=(bare recordhook webhook)
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

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else printf "n/a" }'; }
row() {
    local name=$1 label=$2
    printf '| %s | %.0f | %s | %s | %s | %s |\n' "$label" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" \
        "$(mib "${IDLE[$name]}")" "$(mib "${PEAK[$name]}")"
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
        "$LINES distinct signed form callbacks; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+changes')."
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)."
    echo
    echo "| target | requests/s | p50 (ms) | p99 (ms) | idle RSS (MiB) | peak RSS (MiB) |"
    echo "|---|---:|---:|---:|---:|---:|"
    row bare "bare axum (form → struct)"
    row recordhook "recordhook (signed, SQLite fsync, log handler)"
    [[ $PG == 1 ]] && row recordhook_pg "recordhook (signed, PostgreSQL, log handler, 1 replica)"
    row webhook "webhook $(webhook -version | awk '{ print $NF }') (/bin/true)"
    echo
    echo "| ratio | requests/s | p50 | p99 | idle RSS | peak RSS |"
    echo "|---|---:|---:|---:|---:|---:|"
    ratio_row recordhook bare
    ratio_row recordhook webhook
    [[ $PG == 1 ]] && ratio_row recordhook_pg recordhook
    echo
    printf '%s\n' "${CHECKS[@]}"
} | tee "$OUT_DIR/results.md"
log "written to target/bench/results.md"

exit "$FAILED"
