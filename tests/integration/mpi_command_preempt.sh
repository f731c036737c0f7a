#!/usr/bin/env bash
# The command backend: SIGUSR1 to mpirun reaches every child (the worker forwards it to the child's
# process group), which checkpoints, announces it and exits 4; the runs become preempted and the job
# exits 75. The same command then resumes them with {resume_from}: the script says it resumed, and its
# tokens continue from the checkpoint instead of restarting at 0.
source "$(dirname "$0")/lib.sh"
source "$MOESWEEP_SOURCE_DIR/tests/integration/command_lib.sh"
example_sweep 's/checkpoint_every_tokens = 32768/checkpoint_every_tokens = 65536/' \
  "$(with_args '"--sleep-per-step", "0.04"')" > sweep.toml
RUN=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db sweep.db --workdir runs --heartbeat 0.2)
"${RUN[@]}" > first.log 2>&1 &
job=$!
wait_for_running sweep.db 2 20 || { kill -- -"$job" 2>/dev/null; cat first.log; fail "the sweep never got going"; }
kill -USR1 "$job"
status=0
wait "$job" || status=$?
expect_eq "exit status after SIGUSR1" "$status" 75
expect_eq "preempted runs" "$(q sweep.db "select count(*) from runs where state = 'preempted'")" 2
expect_eq "open attempts" "$(q sweep.db "select count(*) from attempts where ended_at is null")" 0
for key in $(q sweep.db "select run_key from runs where state = 'preempted'"); do
  grep -q "^stopped by signal 10 at step" runs/$key/attempt-*.log || fail "run ${key:0:12}'s child saw no SIGUSR1"
  # A stop between the periodic checkpoints (every 64 batches): the child wrote one for the stop.
  [ -s runs/$key/checkpoints.json ] || fail "run ${key:0:12} announced no checkpoint before stopping"
done
pgrep -f -- "--out $PWD/runs/" && fail "a child outlived the job"
echo "ok: both children stopped on SIGUSR1 after a checkpoint: $(grep -ho "^stopped by signal .*" runs/*/attempt-*.log | tr '\n' ';')"

"${RUN[@]}" > second.log 2>&1 || { cat second.log; fail "the second job failed"; }
expect_eq "runs done" "$(q sweep.db "select count(*) from runs where state = 'done'")" 4
expect_eq "completed attempts" "$(q sweep.db "select count(*) from attempts where exit_reason = 'completed'")" 4
for attempt in $(q sweep.db "select nxt.id || ':' || r.run_key from attempts s join attempts nxt on nxt.run_id = s.run_id and nxt.id > s.id join runs r on r.id = s.run_id where s.exit_reason = 'stopped'"); do
  id=${attempt%%:*} key=${attempt#*:}
  stopped_at=$(grep -ho "^stopped by signal 10 at step [0-9]*" runs/$key/attempt-*.log | grep -o "[0-9]*$")
  grep -q "^resumed from $PWD/runs/$key/ckpt-.* at step $stopped_at," runs/$key/attempt-$id.log ||
    { cat runs/$key/attempt-$id.log; fail "run ${key:0:12} did not resume from its stop checkpoint (step $stopped_at)"; }
  first_step=$(q sweep.db "select min(step) from metrics where attempt_id = $id")
  expect_eq "run ${key:0:12}: first step of the resumed attempt" "$first_step" $((stopped_at + 1))
  expect_eq "run ${key:0:12}: the resumed attempt's recorded resume point" \
    "$(q sweep.db "select resumed_from_step from attempts where id = $id")" "$stopped_at"
done
expect_eq "final losses equal to what the script reported" "$(losses_agree sweep.db runs)" 4
