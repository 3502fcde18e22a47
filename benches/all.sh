#!/usr/bin/env bash
# Every published figure in one run: `benches/all.sh`. Writes target/bench/report.md, the
# complete "Results" section of docs/benchmarks.md, ready to paste in.
#
#   1. benches/run.sh     bare axum vs recordhook (SQLite, and PostgreSQL unless PG=0) vs
#                         adnanh/webhook (requests/s, latency, RSS)
#   2. benches/scale.sh   1M stored events, 1M queued deliveries, end-to-end delivery rate
#      benches/disk.py    what writing N pages and an fsync costs on this disk
#   3. tests/crash.rs     SIGKILL under load: acknowledged / lost / redelivered
#   4. tests/faults.rs    downstream outage, disk full, read-only store (pass/fail)
#
# Knobs are passed through to the scripts (DURATION, CONNECTIONS, EVENTS, …); see each
# script's header. Run it on an otherwise idle machine: every figure is relative to what
# the same machine does in the same run, but a busy neighbour still skews them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench
mkdir -p "$OUT"
status=0

PG=${PG:-1} benches/run.sh || status=1
benches/scale.sh || status=1
echo "==> disk commit cost" >&2
python3 benches/disk.py "$OUT" >"$OUT/disk.md" || status=1

echo "==> crash and fault tests (release build)" >&2
cargo test --release --test crash --test faults -- --show-output --test-threads=1 >"$OUT/proof-tests.log" 2>&1 || status=1
CRASH_LINE=$(grep -h '^crash: ' "$OUT/proof-tests.log" | tail -1 || true)
FAULTS=$(grep -E '^test .* \.\.\. ' "$OUT/proof-tests.log" | sed -E 's/^test (.*) \.\.\. (.*)$/- `\1`: \2/' || true)
SKIPS=$(grep -h '^SKIPPED' "$OUT/proof-tests.log" || true)

field() { sed -nE "s/.* $1=([^ ]+).*/\1/p" <<<"$CRASH_LINE"; }

{
    echo "## Results"
    echo
    echo "Produced by \`benches/all.sh\` at $(date -u '+%Y-%m-%d %H:%M UTC') on commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')."
    echo
    echo "Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo);" \
        "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM;" \
        "$(uname -sr); store on $(df -T target | awk 'NR == 2 { print $2 }') ($(findmnt -no SOURCE --target target 2>/dev/null || echo unknown device))."
    echo
    sed 's/^## /### /' "$OUT/results.md"
    echo
    sed 's/^## /### /; s/^### End/#### End/' "$OUT/scale.md"
    echo
    echo "### What a durable commit costs on this disk (\`benches/disk.py\`)"
    echo
    cat "$OUT/disk.md"
    echo
    echo "### Crash test (\`tests/crash.rs\`, release build)"
    echo
    if [[ -n $CRASH_LINE ]]; then
        echo "| cycles | acknowledged | lost | redelivered | stored but unacknowledged, delivered | requests cut by the kill |"
        echo "|---:|---:|---:|---:|---:|---:|"
        echo "| $(field cycles) | $(field acknowledged) | $(field lost) | $(field redelivered) | $(field unacknowledged_but_delivered) | $(field interrupted_requests) |"
        echo
        echo "Seed $(field seed); \`CRASH_SEED\`/\`CRASH_CYCLES\` replay or lengthen it."
    else
        echo "The crash test did not report (see target/bench/proof-tests.log)."
    fi
    echo
    echo "### Fault tests (\`tests/faults.rs\`, \`tests/crash.rs\`)"
    echo
    echo "$FAULTS"
    [[ -z $SKIPS ]] || { echo; echo "$SKIPS"; }
} >"$OUT/report.md"
cat "$OUT/report.md"
echo "==> written to $OUT/report.md (paste it over the Results section of docs/benchmarks.md)" >&2
exit "$status"
