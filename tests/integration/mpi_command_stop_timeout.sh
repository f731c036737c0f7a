#!/usr/bin/env bash
# The command backend: a child that ignores the forwarded SIGUSR1 (a trainer hung in a collective, or one
# that never installed a handler) must not hold the job's stop. After [backend] stop_timeout_s its
# process group is SIGKILLed, the run is preempted (not failed: no retry is used up) and the job exits 75
# in seconds, not when the child would have finished.
source "$(dirname "$0")/lib.sh"
cat > child.sh <<'SH'
#!/bin/bash
trap '' USR1 TERM
for step in $(seq 1 600); do
  echo "{\"event\": \"progress\", \"step\": $step, \"tokens\": $((step * 1024)), \"loss\": 4.0}"
  sleep 0.2
done
echo '{"event": "result", "eval_loss": 3.0, "n_act": 1, "n_total": 1}'
SH
chmod +x child.sh
cat > sweep.toml <<EOF2
[sweep]
name = "stop-timeout"
backend = "command"
[backend]
command = ["$PWD/child.sh"]
stop_timeout_s = 2
[model]
seq_len = 64
[train]
batch_tokens = 1024
lr = 0.003
warmup_tokens = 8192
tokens = 65536
[[grid]]
shape = [{d_model = 32, n_layers = 1, n_heads = 2}]
experts = [1]
EOF2
"${MPIRUN[@]}" -np 2 "$MOESWEEP" run sweep.toml --db sweep.db --workdir runs --heartbeat 0.2 > run.log 2>&1 &
job=$!
wait_for_running sweep.db 1 2 || { kill -- -"$job" 2>/dev/null; cat run.log; fail "the sweep never got going"; }
start=$(date +%s)
kill -USR1 "$job"
status=0
wait "$job" || status=$?
elapsed=$(($(date +%s) - start))
expect_eq "exit status after SIGUSR1" "$status" 75
[ "$elapsed" -lt 15 ] || fail "the stop took ${elapsed} s with stop_timeout_s = 2"
echo "ok: the job stopped ${elapsed} s after SIGUSR1"
expect_eq "run state" "$(q sweep.db "select state from runs")" preempted
expect_eq "attempt's exit reason" "$(q sweep.db "select exit_reason from attempts")" stopped
key=$(q sweep.db "select run_key from runs")
grep -q "^moesweep: the command did not stop within 2 s of the signal (backend.stop_timeout_s): killed" \
  runs/$key/attempt-*.log || { cat runs/$key/attempt-*.log | tail -5; fail "the run's log does not say it was killed"; }
pgrep -f -- "$PWD/child.sh" && fail "the child outlived the job"
echo "ok: the child was killed after stop_timeout_s and the run is preempted"
