#!/bin/sh
# Runs every check test binary given on the command line, prints each one's
# own summary, and closes with one "N passed, N failed" line over them all.
# Integration tests find the daemon, the CLI and the plugins through
# VFIO_USERD_BUILD_DIR.
set -u
build_dir=$1
shift
VFIO_USERD_BUILD_DIR=$(cd "$build_dir" && pwd)
export VFIO_USERD_BUILD_DIR
passed=0
failed=0
failed_binaries=""
for binary in "$@"; do
    log="$binary.log"
    if "$binary" >"$log" 2>&1; then status=0; else status=$?; fi
    summary=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -n 1)
    echo "$(basename "$binary"): ${summary:-no summary (exit $status)}"
    checks=$(echo "$summary" | sed -n 's/.*Checks: \([0-9]*\).*/\1/p')
    failures=$(echo "$summary" | sed -n 's/.*Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2/p')
    bad=0
    if [ -n "$failures" ]; then bad=$(( ${failures% *} + ${failures#* } )); fi
    if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    if [ "$bad" -ne 0 ]; then
        failed_binaries="$failed_binaries $binary"
        # check's failure lines first (FILE:LINE:F|E:case:test:...), then the end of the log.
        grep -E '^[^ ]+:[0-9]+:[FE]:' "$log"
        echo "--- last lines of $log:"
        grep -vE '^(Running suite|[0-9]+%: Checks)' "$log" | tail -n 30
    fi
    passed=$(( passed + ${checks:-0} - (bad < ${checks:-0} ? bad : ${checks:-0}) ))
    failed=$(( failed + bad ))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] || { echo "failing:$failed_binaries"; exit 1; }
