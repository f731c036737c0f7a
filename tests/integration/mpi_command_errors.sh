#!/usr/bin/env bash
# The command backend: a child that breaks the protocol fails its attempt with one clear line, in the
# store and in `moesweep status`, and is retried up to max_attempts like any failed run:
#   E = 1: a line that starts with '{' but is not JSON (the child is stopped there, though it goes on);
#   E = 2: exits 0 without a result line;
#   E = 4: an event nobody knows;
#   E = 8: speaks the protocol: done.
# A second sweep in the same database: E = 16 prints two result lines, E = 32 exits 4 ("stopped") when no
# stop was asked of it, which must fail (retried, never handed out again and again).
source "$(dirname "$0")/lib.sh"
source "$MOESWEEP_SOURCE_DIR/tests/integration/command_lib.sh"
cat > child.py <<'PY'
import json, sys, time
experts = int(sys.argv[1])
print("starting", flush=True)
print(json.dumps({"event": "progress", "step": 1, "tokens": 1024, "loss": 5.0}), flush=True)
if experts == 1:
    print('{"event": "progress", "step": 2, "tokens": 2048,', flush=True)
    time.sleep(30)  # the worker must not wait for this
elif experts == 2:
    sys.exit(0)
elif experts == 4:
    print('{"event": "finished", "eval_loss": 3.0}', flush=True)
print(json.dumps({"event": "result", "eval_loss": 3.25, "n_act": 1, "n_total": 1}), flush=True)
PY
cat > sweep.toml <<EOF2
[sweep]
name = "protocol-errors"
backend = "command"
[backend]
command = ["$PYTHON", "$PWD/child.py", "{experts}"]
[resources]
max_attempts = 2
[model]
seq_len = 64
[train]
batch_tokens = 1024
lr = 0.003
warmup_tokens = 8192
tokens = 65536
[[grid]]
shape = [{d_model = 32, n_layers = 1, n_heads = 2}]
experts = [1, 2, 4, 8]
EOF2
start=$(date +%s)
status=0
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db sweep.db --workdir runs --heartbeat 0.2 > run.log 2>&1 || status=$?
expect_eq "exit status with failed runs" "$status" 1
[ $(($(date +%s) - start)) -lt 25 ] || fail "the sweep waited for the child that broke the protocol"
expect_eq "states by E" "$(q sweep.db "select group_concat(experts || ':' || state || ':' || attempts, ' ') from (select * from runs order by experts)")" \
  "1:failed:2 2:failed:2 4:failed:2 8:done:1"
expect_eq "the done run's loss" "$(q sweep.db "select final_loss from runs where experts = 8")" 3.25
error_of() { q sweep.db "select error from runs where experts = $1"; }
expect_eq "E=1: error" "$(error_of 1)" \
  "protocol error on line 3 of the command's stdout: not valid JSON: {\"event\": \"progress\", \"step\": 2, \"tokens\": 2048,"
expect_eq "E=2: error" "$(error_of 2 | sed 's#see .*/attempt-#see RUN_DIR/attempt-#')" \
  "the command exited 0 without a result line ({\"event\": \"result\", ...}); see RUN_DIR/attempt-$(q sweep.db "select max(a.id) from attempts a join runs r on r.id = a.run_id where r.experts = 2").log"
expect_eq "E=4: error" "$(error_of 4)" \
  "protocol error on line 3 of the command's stdout: unknown event 'finished' (known: progress, checkpoint, result): {\"event\": \"finished\", \"eval_loss\": 3.0}"
expect_eq "errors of one line" "$(q sweep.db "select count(*) from runs where error like '%' || char(10) || '%'")" 0
"$MOESWEEP" status --db sweep.db > status.txt
for fragment in "not valid JSON" "exited 0 without a result line" "unknown event 'finished'"; do
  grep -q "$fragment" status.txt || { cat status.txt; fail "moesweep status does not show '$fragment'"; }
done
echo "ok: moesweep status shows the three errors"
grep -q "failed (1/2): protocol error on line 3" run.log || fail "the coordinator's log lacks the first failure"
pgrep -f -- "$PWD/child.py" && fail "a child that broke the protocol outlived the job"
key=$(q sweep.db "select run_key from runs where experts = 1")
grep -q "^moesweep: protocol error on line 3" runs/$key/attempt-*.log || fail "the run's log does not say what went wrong"
echo "ok: the run's log: $(grep -h "^moesweep: protocol" runs/$key/attempt-*.log | head -1)"

# The second sweep: a second result line, and an unasked "stopped".
cat > child2.py <<'PY'
import json, sys
experts = int(sys.argv[1])
print(json.dumps({"event": "progress", "step": 1, "tokens": 1024, "loss": 5.0}), flush=True)
if experts == 32:
    sys.exit(4)
print(json.dumps({"event": "result", "eval_loss": 3.5, "n_act": 1, "n_total": 1}), flush=True)
print(json.dumps({"event": "result", "eval_loss": 1.0, "n_act": 1, "n_total": 1}), flush=True)
PY
sed -e 's/"protocol-errors"/"protocol-errors-2"/' -e "s#child.py#child2.py#" -e 's/experts = \[1, 2, 4, 8\]/experts = [16, 32]/' \
  sweep.toml > sweep2.toml
status=0
timeout 120 "${MPIRUN[@]}" -np 2 "$MOESWEEP" run sweep2.toml --db sweep.db --workdir runs --heartbeat 0.2 > run2.log 2>&1 ||
  status=$?
expect_eq "second sweep: exit status with failed runs" "$status" 1
expect_eq "second sweep: states by E" \
  "$(q sweep.db "select group_concat(experts || ':' || state || ':' || attempts, ' ') from (select * from runs where experts > 8 order by experts)")" \
  "16:failed:2 32:failed:2"
expect_eq "E=16: error" "$(error_of 16)" \
  "protocol error on line 3 of the command's stdout: a second result line: {\"event\": \"result\", \"eval_loss\": 1.0, \"n_act\": 1, \"n_total\": 1}"
error_of 32 | grep -q "^the command exited 4 (stopped after a checkpoint) but no stop was asked of it" ||
  fail "E=32: error is '$(error_of 32)'"
echo "ok: a second result line and an unasked exit 4 fail their attempts"

