#!/usr/bin/env bash
# kill -9 of the whole job (the mpirun process group) in the middle of a sweep, then the same command:
# every run ends done exactly once, runs finished before the kill keep their single attempt, and the
# interrupted runs resume from their checkpoints (their step counter does not restart at 0).
source "$(dirname "$0")/lib.sh"
simulate_sweep kill "[1, 2, 4]" "[102400, 112640]" 10240 > sweep.toml
RUN=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db sweep.db --backend simulate --time-scale 50000 --heartbeat 0.2)

setsid "${RUN[@]}" >first.log 2>&1 &
job=$!
for _ in $(seq 300); do
  sleep 0.1
  [ -f sweep.db ] || continue
  done_runs=$(q sweep.db "select count(*) from runs where state='done'" 2>/dev/null || echo 0)
  mid_run=$(q sweep.db "select count(*) from runs where state='running' and step >= 20" 2>/dev/null || echo 0)
  [ "$done_runs" -ge 1 ] && [ "$mid_run" -ge 1 ] && break
done
[ "${mid_run:-0}" -ge 1 ] || fail "the sweep never reached the middle"
kill -9 -- "-$job"
wait "$job" 2>/dev/null || true
done_before=$(q sweep.db "select run_key from runs where state='done' order by run_key")
interrupted=$(q sweep.db "select count(*) from runs where state='running'")
echo "killed with $(echo "$done_before" | wc -l) runs done and $interrupted running"

"${RUN[@]}" >second.log 2>&1 || { cat second.log; fail "the restarted sweep failed"; }
expect_eq "runs done" "$(q sweep.db "select count(*) from runs where state='done'")" 6
expect_eq "runs with two completed attempts" \
  "$(q sweep.db "select count(*) from (select run_id from attempts where exit_reason='completed' group by run_id having count(*) > 1)")" 0
for key in $done_before; do
  expect_eq "attempts of $key (done before the kill)" "$(q sweep.db "select attempts from runs where run_key='$key'")" 1
done
expect_eq "interrupted runs requeued as lost" \
  "$(q sweep.db "select count(*) from attempts where exit_reason like 'lost:%'")" "$interrupted"
# Each interrupted run's next attempt starts where a checkpoint left it, not at step 0.
restarts=$(q sweep.db "select min(m.step) from attempts lost join attempts nxt on nxt.run_id = lost.run_id and nxt.id > lost.id join metrics m on m.attempt_id = nxt.id where lost.exit_reason like 'lost:%' group by nxt.id")
for first_step in $restarts; do
  [ "$first_step" -gt 10 ] || fail "a resumed attempt reported step $first_step first"
done
echo "ok: resumed attempts started at steps: $(echo $restarts)"
