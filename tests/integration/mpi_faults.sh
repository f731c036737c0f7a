#!/usr/bin/env bash
# A run that raises is retried up to max_attempts and left failed with its error; a run that diverges
# is recorded once and not retried; a worker that hangs has its run requeued to another worker.
source "$(dirname "$0")/lib.sh"
prepare_brown
common='[data]
train = "data/brown-byte/train.bin"
val = "data/brown-byte/val.bin"
[model]
seq_len = 64
[train]
batch_tokens = 1024
warmup_tokens = 1024
eval_tokens = 4096
checkpoint_every_tokens = 8192
'

# 1. Raises: the validation shard is missing, so every attempt throws.
printf '[sweep]\nname = "raises"\n[resources]\nmax_attempts = 2\n%s[[grid]]\nshape = [{d_model = 32, n_layers = 1, n_heads = 2}]\ntokens = [8192]\nlr = [0.003]\n' \
  "${common/val.bin/missing.bin}" > raises.toml
status=0
"${MPIRUN[@]}" -np 2 "$MOESWEEP" run raises.toml --db faults.db >raises.log 2>&1 || status=$?
expect_eq "exit status with a failed run" "$status" 1
expect_eq "state" "$(q faults.db "select state from runs")" failed
expect_eq "attempts" "$(q faults.db "select attempts from runs")" 2
q faults.db "select error from runs" | grep -q "missing.bin" || fail "the error does not name the missing shard"
echo "ok: error recorded: $(q faults.db "select error from runs")"
# --retry-failed gives the run its whole budget again: two more tries, counted 1/2 and 2/2, not 3/2.
status=0
"${MPIRUN[@]}" -np 2 "$MOESWEEP" run raises.toml --db faults.db --retry-failed >retry.log 2>&1 || status=$?
expect_eq "exit status when the retries fail too" "$status" 1
expect_eq "attempts after --retry-failed" "$(q faults.db "select attempts from runs")" 4
expect_eq "failures counted by the retrying job" "$(grep -o 'failed ([0-9]*/[0-9]*)' retry.log | tr '\n' ' ')" \
  "failed (1/2) failed (2/2) "

# 2. Diverges: lr = 1e4 turns the loss to NaN/inf; recorded as diverged, no retry; the other run is done.
printf '[sweep]\nname = "diverges"\n%s[[grid]]\nshape = [{d_model = 32, n_layers = 1, n_heads = 2}]\ntokens = [16384]\nlr = [0.003, 1e4]\n' \
  "$common" > diverges.toml
status=0
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run diverges.toml --db faults.db >diverges.log 2>&1 || status=$?
expect_eq "exit status with a diverged run" "$status" 1
expect_eq "diverged" "$(q faults.db "select state || ' ' || attempts from runs where lr > 1000")" "diverged 1"
expect_eq "healthy run" "$(q faults.db "select state from runs where lr < 1 and tokens = 16384")" done

# 3. Hangs: SIGSTOP the worker that holds a run; the coordinator requeues it after the heartbeat timeout
#    and the other worker finishes it.
simulate_sweep hangs "[1, 2]" "[102400]" 10240 $'[resources]\nheartbeat_timeout_s = 3' > hangs.toml
setsid "${MPIRUN[@]}" -np 3 "$MOESWEEP" run hangs.toml --db "$SCRATCH/hangs.db" --backend simulate --time-scale 30000 \
  --heartbeat 0.2 >hangs.log 2>&1 &
job=$!
for _ in $(seq 200); do
  sleep 0.1
  rank=$(q hangs.db "select a.rank from attempts a join runs r on r.id = a.run_id where r.state='running' and r.step > 5 limit 1" 2>/dev/null || true)
  [ -n "$rank" ] && break
done
[ -n "$rank" ] || fail "no run got going"
# Our ranks are the moesweep processes under this mpirun; OpenMPI exports OMPI_COMM_WORLD_RANK to each.
victim=""
for pid in $(pgrep -f "moesweep run hangs.toml --db $SCRATCH/hangs.db"); do
  if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$rank"; then victim=$pid; fi
done
[ -n "$victim" ] || fail "could not find rank $rank"
kill -STOP "$victim"
status=0
wait "$job" || status=$?
kill -KILL "$victim" 2>/dev/null || true
expect_eq "runs done" "$(q hangs.db "select count(*) from runs where state='done'")" 2
expect_eq "requeued after the heartbeat timeout" "$(q hangs.db "select count(*) from attempts where exit_reason like 'heartbeat timeout%'")" 1
grep -q "stopped responding" hangs.log || fail "the coordinator did not report the hung rank"
echo "ok: hung rank $rank; job exit status $status"
