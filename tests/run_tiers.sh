#!/usr/bin/env bash
# `make test`: both tiers at once. The fast tier (no Ray, no MLflow server) runs in the background, its output kept
# in a file and shown at the end; the slow tier runs in the foreground, its tests one after another (one Ray session
# or cluster at a time). The slow tier leaves about a third of two cores idle while Ray starts processes and trials
# wait; the fast tier fills it, only when a core is idle (SCHED_IDLE through `chrt --idle`; nice 19 where chrt is
# missing), so that the slow tier -- the longer one, with the timing-sensitive fault tests -- is slowed by it as
# little as may be (BENCHMARKS.md, "The whole suite"). The heavy tier (a BiT R152x4 trial, about 12 GB of memory) is
# not part of it: make test-heavy.
# Usage: tests/run_tiers.sh PYTHON [PYTEST_ARGS...]. With PYTEST_ARGS, a tier left without tests (pytest's exit 5)
# is fine; in a full run an empty tier is an error (the marks were lost).
set -u
py=$1
shift
log=$(mktemp -t benchxfer-fast-tier.XXXXXX)

low=(nice -n 19)
if command -v chrt >/dev/null 2>&1 && chrt --idle 0 true 2>/dev/null; then
    low=(chrt --idle 0)
fi
# one compute thread (torch's intra-op pool): the fast tier then never holds both cores, and the slow tier's
# bursts find one free (BENCHMARKS.md, "The whole suite"); a test that needs more sets it (tests/test_microbatch.py)
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "${low[@]}" "$py" -m pytest -m fast "$@" >"$log" 2>&1 &
fast=$!
trap 'kill "$fast" 2>/dev/null; rm -f "$log"; exit 130' INT TERM
echo "The fast tier runs in the background (pid $fast); its output follows the slow tier's."
"$py" -m pytest -m "not fast and not heavy" "$@"
slow_rc=$?
if kill -0 "$fast" 2>/dev/null; then
    echo "Waiting for the fast tier (pid $fast) to finish..."
fi
wait "$fast"
fast_rc=$?
echo "=== the fast tier (pytest -m fast) ==="
cat "$log"
rm -f "$log"

ok() {  # a tier's exit status is fine: 0, or 5 (no tests) when the run was narrowed
    [ "$1" -eq 0 ] || { [ "$1" -eq 5 ] && [ $# -gt 1 ]; }
}
status=0
ok "$fast_rc" "$@" || { echo "The fast tier failed (exit $fast_rc)."; status=1; }
ok "$slow_rc" "$@" || { echo "The slow tier failed (exit $slow_rc)."; status=1; }
exit $status
