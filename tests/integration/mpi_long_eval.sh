#!/usr/bin/env bash
# A worker is alive while it evaluates (issue 15, case 2): a final eval that takes longer than the
# heartbeat timeout (131,072 eval tokens on a d_model-256, 4-layer model, one thread) must not get the
# worker declared dead; its liveness comes from its own thread, not from training steps. And a timeout
# shorter than three heartbeat intervals is refused before anything starts.
source "$(dirname "$0")/lib.sh"
prepare_brown
torch_sweep long_eval "[2]" "[16384]" 8192 $'[resources]\nheartbeat_timeout_s = 5' \
  $'shape = [{d_model = 256, n_layers = 4, n_heads = 4}]\nbatch_tokens = 2048\neval_tokens = 131072' > sweep.toml

status=0
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db sweep.db --heartbeat 0.5 --threads 1 > job.log 2>&1 || status=$?
[ "$status" -eq 0 ] || { cat job.log; fail "the sweep exited $status"; }
expect_eq "state and attempts" "$(q sweep.db "select state || ' ' || attempts from runs")" "done 1"
expect_eq "heartbeat timeouts" "$(q sweep.db "select count(*) from attempts where exit_reason like 'heartbeat%'")" 0
# The eval really outlasted the timeout: from the last training heartbeat to the attempt's end.
eval_s=$(q sweep.db "select round((julianday(a.ended_at) - julianday(max(m.recorded_at))) * 86400, 1)
                     from attempts a join metrics m on m.attempt_id = a.id")
python3 -c "import sys; sys.exit(0 if $eval_s > 5 else 1)" ||
  echo "note: the final eval took only $eval_s s here, under the 5 s timeout"
echo "ok: final eval of $eval_s s with a 5 s heartbeat timeout; the worker was never declared dead"

# A timeout within three heartbeat intervals: exit 2, one line, before anything is registered.
sed 's/heartbeat_timeout_s = 5/heartbeat_timeout_s = 1/' sweep.toml > short.toml
status=0
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run short.toml --db short.db --heartbeat 0.5 > short.log 2>&1 || status=$?
expect_eq "exit status of a too-short timeout" "$status" 2
grep -c 'moesweep: ' short.log | grep -qx 1 || { cat short.log; fail "not one line"; }
grep -q "heartbeat_timeout_s = 1.* shorter than three heartbeat intervals" short.log || { cat short.log; fail "wrong line"; }
[ ! -e short.db ] || fail "the store was created although the sweep was refused"
echo "ok: $(grep 'moesweep: ' short.log)"
