#!/usr/bin/env bash
# --deadline: once the coordinator has measured throughput, a run that cannot reach its next
# checkpoint before the allocation ends is not started; the job ends with status 75 and the runs
# left pending, and the next job (no deadline) trains them.
source "$(dirname "$0")/lib.sh"
# One checkpoint, at the end: each run is ~3 s with no earlier one.
simulate_sweep deadline "[1, 2, 4]" "[102400]" 102400 > sweep.toml
RUN=("${MPIRUN[@]}" -np 2 "$MOESWEEP" run sweep.toml --db sweep.db --backend simulate --time-scale 45000 --heartbeat 0.2)
status=0
"${RUN[@]}" --deadline +5s >first.log 2>&1 || status=$?
expect_eq "exit status at the deadline" "$status" 75
expect_eq "runs done before the deadline" "$(q sweep.db "select count(*) from runs where state='done'")" 1
expect_eq "runs left pending, never started" "$(q sweep.db "select count(*) from runs where state='pending' and attempts=0")" 2
"${RUN[@]}" >second.log 2>&1 || { cat second.log; fail "the job without a deadline failed"; }
expect_eq "runs done" "$(q sweep.db "select count(*) from runs where state='done'")" 3
