# Shared by the benchmark scripts (benches/run.sh, benches/scale.sh): tool checks, process
# start/stop with cleanup on exit, RSS sampling, wrk output parsing, and `bench`, which
# measures one target. Sourced, not run; expects ROOT, DURATION, CONNECTIONS, THREADS and
# WARMUP to be set, and sets TMP (a temp dir removed on exit unless KEEP_TMP=1).
# shellcheck shell=bash

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v webhook >/dev/null || missing+=(webhook)
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in cargo python3 curl wrk webhook; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# --- processes and cleanup ---------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/recordhook-bench.XXXXXX")
PIDS=()
# Commands a script adds to run at exit, after its processes are stopped (e.g. dropping a
# benchmark database).
EXTRA_CLEANUP=()

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    local cmd
    for cmd in "${EXTRA_CLEANUP[@]}"; do
        eval "$cmd" || true
    done
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

# Bytes the process has caused to be written to storage so far (its own writes, including
# the SQLite writer's WAL and checkpoints; not its children's).
io_written() { awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io" 2>/dev/null || echo 0; }

# CPU time PID has used so far, in clock ticks: user + system, its own and that of the
# children it has reaped (webhook's /bin/true runs count as webhook's).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }' || echo 0; }
CLK_TCK=$(getconf CLK_TCK)

# Microseconds of CPU per request: TICKS clock ticks spent on REQUESTS requests.
cpu_us_per_request() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }'; }

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

# --- one target ------------------------------------------------------------------------------

declare -A RPS P50 P99 IDLE PEAK NON2XX ERRORS DUPS WRITTEN CPU WRK_CPU

# bench NAME URL READY_URL -- COMMAND...
# Requests come from $RUN_FILE and $WARM_FILE (default $TMP/run.tsv and $TMP/warm.tsv).
bench() {
    local name=$1 url=$2 ready=$3
    shift 4
    log "$name: starting"
    "$@" >/dev/null 2>"$TMP/$name.stderr" &
    local pid=$!
    PIDS+=("$pid")
    wait_ready "$ready" "$pid" "$name"
    sleep 0.5
    IDLE[$name]=$(rss_kb "$pid" VmRSS)

    log "$name: warming up for $WARMUP"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$url" -- "${WARM_FILE:-$TMP/warm.tsv}" "$THREADS" \
        >"$TMP/$name.warm.wrk" 2>&1

    log "$name: measuring for $DURATION"
    echo 0 >"$TMP/$name.peak"
    # Resets VmHWM, so that the peak read below is the measured run's, not the warm-up's.
    echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
    sample_rss "$pid" "$TMP/$name.peak" &
    local sampler=$!
    PIDS+=("$sampler")
    local written_before cpu_before
    written_before=$(io_written "$pid")
    cpu_before=$(cpu_ticks "$pid")
    # wrk's own CPU too: it shares the two cores with the target, so what it spends per
    # request is part of the budget every target works within.
    /usr/bin/time -f '%U %S' -o "$TMP/$name.wrk.time" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$url" -- "${RUN_FILE:-$TMP/run.tsv}" "$THREADS" \
        >"$TMP/$name.wrk" 2>&1
    local hwm requests
    hwm=$(rss_kb "$pid" VmHWM)
    WRITTEN[$name]=$(( $(io_written "$pid") - written_before ))
    requests=$(wrk_field "$TMP/$name.wrk" requests)
    CPU[$name]=$(cpu_us_per_request "$(( $(cpu_ticks "$pid") - cpu_before ))" "$requests")
    WRK_CPU[$name]=$(awk -v n="$requests" 'NF == 2 { printf "%.1f", (n > 0 ? ($1 + $2) * 1e6 / n : 0) }' "$TMP/$name.wrk.time")
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

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else printf "n/a" }'; }

# The machine, as one markdown line.
machine() {
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)."
}

# The commit measured, with +changes when the work tree differs from it.
commit() {
    echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+changes')"
}

