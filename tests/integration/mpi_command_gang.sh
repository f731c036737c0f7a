#!/usr/bin/env bash
# The command backend on a gang: a run whose memory estimate needs two ranks starts one child per rank,
# each with its {rank}, the gang's {ranks} and the leader's {master_addr}:{master_port}; rank 0's result
# is the run's. When one rank's child fails, the other's is killed (never left waiting in a collective)
# and the attempt fails naming that rank's log.
source "$(dirname "$0")/lib.sh"
source "$MOESWEEP_SOURCE_DIR/tests/integration/command_lib.sh"
cat > child.py <<'PY'
import json, os, sys, time
rank, ranks, addr, port, fail_rank = sys.argv[1:6]
print(f"rank {rank} of {ranks}, master {addr}:{port}, RANK={os.environ['RANK']} WORLD_SIZE={os.environ['WORLD_SIZE']}", flush=True)
if rank == fail_rank:
    sys.exit("rank failed on purpose")
for step in range(1, 6):
    if rank == "0":
        print(json.dumps({"event": "progress", "step": step, "tokens": step * 1024, "loss": 4.0 - step / 10}), flush=True)
    time.sleep(0.1 if fail_rank == "-1" else 5)
if rank == "0":
    print(json.dumps({"event": "result", "eval_loss": 3.5, "n_act": 1, "n_total": 1}), flush=True)
PY
write_sweep() {  # FAIL_RANK: the rank whose child fails (-1: none)
  cat <<EOF2
[sweep]
name = "gang"
backend = "command"
[backend]
command = ["$PYTHON", "$PWD/child.py", "{rank}", "{ranks}", "{master_addr}", "{master_port}", "$1"]
env = { RANK = "{rank}", WORLD_SIZE = "{ranks}" }
[resources]
rank_memory = "7MB"
max_attempts = 1
[model]
seq_len = 64
d_model = 32
n_layers = 2
n_heads = 2
routing_group = 8
[train]
batch_tokens = 1024
lr = 0.003
warmup_tokens = 1024
tokens = 16384
eval_tokens = 4096
[[grid]]
experts = [4]
EOF2
}
write_sweep -1 > gang.toml
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run gang.toml --db gang.db --workdir runs 2> run.log || { cat run.log; fail "the gang run failed"; }
expect_eq "gang size" "$(q gang.db "select ranks from attempts")" 2
expect_eq "state and loss" "$(q gang.db "select state || ' ' || final_loss from runs")" "done 3.5"
key=$(q gang.db "select run_key from runs")
id=$(q gang.db "select id from attempts")
rank0=$(grep -o "^rank 0 of 2, master .*" runs/$key/attempt-$id.log) || fail "rank 0's child did not run"
rank1=$(grep -o "^rank 1 of 2, master .*" runs/$key/attempt-$id.rank-1.log) || fail "rank 1's child did not run"
master() { grep -o "master [^,]*" <<< "$1"; }
expect_eq "rank 1's master address and port (rank 0's)" "$(master "$rank1")" "$(master "$rank0")"
[[ "$rank0" =~ master\ [^:]+:[0-9]+,\ RANK=0\ WORLD_SIZE=2$ ]] || fail "rank 0's line: $rank0"
echo "ok: $rank0; $rank1"

write_sweep 1 > failing.toml
start=$(date +%s)
status=0
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run failing.toml --db failing.db --workdir failing-runs 2> failing.log || status=$?
expect_eq "exit status when a gang member's child fails" "$status" 1
[ $(($(date +%s) - start)) -lt 20 ] || fail "rank 0 waited for its child after rank 1's failed"
expect_eq "error" "$(q failing.db "select error from runs" | sed 's#see .*/attempt-#see attempt-#')" \
  "the command on gang rank 1 ended in failure; see attempt-$(q failing.db "select id from attempts").rank-1.log"
pgrep -f -- "$PWD/child.py" && fail "a gang child outlived the job"
echo "ok: rank 1's child failed, rank 0's was killed"
