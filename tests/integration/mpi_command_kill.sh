#!/usr/bin/env bash
# The command backend: a child killed with kill -9 in the middle of its run is a failed attempt; the
# run is retried (resuming from the checkpoint the child announced, {resume_from}) and the sweep
# completes with every run done exactly once.
source "$(dirname "$0")/lib.sh"
source "$MOESWEEP_SOURCE_DIR/tests/integration/command_lib.sh"
example_sweep 's/checkpoint_every_tokens = 32768/checkpoint_every_tokens = 16384/' \
  "$(with_args '"--sleep-per-step", "0.04"')" > sweep.toml
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db sweep.db --workdir runs --heartbeat 0.2 > run.log 2>&1 &
job=$!
# A run past its first announced checkpoint, and its child's pid.
victim="" pid=""
for _ in $(seq 600); do
  sleep 0.1
  for key in $(q sweep.db "select run_key from runs where state = 'running' and step >= 20" 2>/dev/null); do
    [ -s "runs/$key/checkpoints.json" ] || continue
    pid=$(pgrep -f -- "--out $PWD/runs/$key" | head -1) || continue
    victim=$key
    break 2
  done
done
[ -n "$victim" ] || { kill -- -"$job" 2>/dev/null; cat run.log; fail "no run got past its first checkpoint"; }
kill -9 "$pid"
echo "killed the child (pid $pid) of run ${victim:0:12} at step $(q sweep.db "select step from runs where run_key = '$victim'")"
status=0
wait "$job" || status=$?
[ "$status" -eq 0 ] || { cat run.log; fail "the sweep exited $status"; }

expect_eq "runs done" "$(q sweep.db "select count(*) from runs where state = 'done'")" 4
expect_eq "completed attempts per run" \
  "$(q sweep.db "select group_concat(n) from (select count(*) n from attempts where exit_reason = 'completed' group by run_id)")" "1,1,1,1"
expect_eq "attempts of the killed run (the killed one, the retry)" \
  "$(q sweep.db "select attempts from runs where run_key = '$victim'")" 2
expect_eq "attempts of the others" "$(q sweep.db "select group_concat(attempts) from runs where run_key != '$victim'")" "1,1,1"
expect_eq "the killed attempt's exit reason" \
  "$(q sweep.db "select exit_reason from attempts a join runs r on r.id = a.run_id where r.run_key = '$victim' order by a.id limit 1")" failed
grep -q "${victim:0:12} .*failed (1/3): the command was killed by signal 9 (Killed)" run.log ||
  { cat run.log; fail "the coordinator did not report the kill in one line"; }
echo "ok: $(grep -o "failed (1/3): the command was killed.*" run.log)"
retry_log=$(ls runs/$victim/attempt-*.log | sort -V | tail -1)
grep -q "^resumed from $PWD/runs/$victim/ckpt-" "$retry_log" || { cat "$retry_log"; fail "the retry did not resume"; }
echo "ok: the retry $(grep -o "^resumed from .*" "$retry_log")"
first_tokens=$(q sweep.db "select min(m.tokens) from metrics m join attempts a on a.id = m.attempt_id join runs r on r.id = a.run_id where r.run_key = '$victim' and a.exit_reason = 'completed'")
[ "$first_tokens" -gt 16384 ] || fail "the retry's first heartbeat is at $first_tokens tokens: it restarted"
echo "ok: the retry's first heartbeat at $first_tokens tokens"
expect_eq "final losses equal to what the script reported" "$(losses_agree sweep.db runs)" 4
