#!/usr/bin/env bash
# SIGUSR1 (Slurm's warning before the time limit or preemption) to mpirun: every rank checkpoints and
# stops, the running runs become preempted, and the job exits 75 ("run me again"); the same command
# then finishes the sweep, the preempted runs resuming where they stopped.
source "$(dirname "$0")/lib.sh"
simulate_sweep preempt "[1, 2, 4]" "[102400, 112640]" 10240 > sweep.toml
RUN=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db sweep.db --backend simulate --time-scale 50000 --heartbeat 0.2)
"${RUN[@]}" >first.log 2>&1 &
job=$!
wait_for_running sweep.db 2 15 || fail "the sweep never got going"
kill -USR1 "$job"
status=0
wait "$job" || status=$?
expect_eq "exit status after SIGUSR1" "$status" 75
expect_eq "preempted runs" "$(q sweep.db "select count(*) from runs where state='preempted'")" 2
expect_eq "runs left running" "$(q sweep.db "select count(*) from runs where state='running'")" 0
expect_eq "open attempts" "$(q sweep.db "select count(*) from attempts where ended_at is null")" 0

"${RUN[@]}" >second.log 2>&1 || { cat second.log; fail "the second job failed"; }
expect_eq "runs done" "$(q sweep.db "select count(*) from runs where state='done'")" 6
expect_eq "completed attempts" "$(q sweep.db "select count(*) from attempts where exit_reason='completed'")" 6
restarts=$(q sweep.db "select min(m.step) from attempts s join attempts nxt on nxt.run_id = s.run_id and nxt.id > s.id join metrics m on m.attempt_id = nxt.id where s.exit_reason = 'stopped' group by nxt.id")
for first_step in $restarts; do
  [ "$first_step" -gt 15 ] || fail "a preempted run restarted at step $first_step"
done
echo "ok: preempted runs resumed at steps: $(echo $restarts)"
# The attempts table records where each resumed attempt started.
expect_eq "completed attempts that record a resume point" \
  "$(q sweep.db "select count(*) from attempts nxt join attempts s on s.run_id = nxt.run_id and s.id < nxt.id where s.exit_reason = 'stopped' and nxt.exit_reason = 'completed' and nxt.resumed_from_step > 15")" 2
