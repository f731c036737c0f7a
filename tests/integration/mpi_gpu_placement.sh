#!/usr/bin/env bash
# Two workers never share one GPU (issue 15, case 5). A layout with more training ranks on a node than
# the node has GPUs is refused by every rank before anything starts: exit 2, one line on stderr (rank 0's),
# the database untouched, no checkpoint written. On a CPU machine --gpus-per-node 1 stands in for a node
# with one GPU: the layout is refused before CUDA is ever asked for.
source "$(dirname "$0")/lib.sh"
# -q: mpirun's own banner about a rank's non-zero exit would follow our line otherwise.
QUIET_MPIRUN=("${MPIRUN[@]}" -q)

# moesweep run: rank 0 coordinates, ranks 1 and 2 would both train on the node's one GPU. A database
# with runs already in it (one done, the rest pending; --deadline 1 lies in the past) stays as it was.
cp "$MOESWEEP_SOURCE_DIR/sweeps/smoke.toml" .
status=0
"$MOESWEEP" run smoke.toml --db sweep.db --backend simulate --deadline 1 >/dev/null 2>&1 || status=$?
expect_eq "exit status of the job that registers the sweep" "$status" 75
expect_eq "runs left pending" "$(q sweep.db "select count(*) from runs where state='pending'")" 3
sqlite3 sweep.db .dump > before.sql
status=0
"${QUIET_MPIRUN[@]}" -np 3 "$MOESWEEP" run smoke.toml --db sweep.db --device cuda --gpus-per-node 1 \
  >run.out 2>run.err || status=$?
expect_eq "exit status of run with two workers for one GPU" "$status" 2
expect_eq "stderr lines" "$(wc -l < run.err)" 1
grep -qx "moesweep: node .* has 2 training ranks for 1 GPU; give each node at most 1 training rank (the coordinator's node 1 + the coordinator)" \
  run.err || fail "not the placement refusal: $(cat run.err)"
sqlite3 sweep.db .dump > after.sql
cmp -s before.sql after.sql || fail "the refused job changed the database: $(diff before.sql after.sql | head)"
echo "ok: the database is unchanged"
status=0
"${QUIET_MPIRUN[@]}" -np 3 "$MOESWEEP" run smoke.toml --db new.db --device cuda --gpus-per-node 1 2>/dev/null ||
  status=$?
expect_eq "exit status with a new database" "$status" 2
[ ! -e new.db ] || fail "the refused job created its database"
echo "ok: no database created"

# moesweep train: every rank trains, so two ranks on a one-GPU node are one too many.
cat > run.toml <<'TOML'
[data]
train = "data/brown-byte/train.bin"
val = "data/brown-byte/val.bin"
[model]
seq_len = 64
d_model = 32
n_layers = 2
n_heads = 2
experts = 4
[train]
tokens = 16384
batch_tokens = 1024
lr = 0.003
warmup_tokens = 2048
eval_tokens = 8192
checkpoint_every_tokens = 8192
TOML
status=0
"${QUIET_MPIRUN[@]}" -np 2 "$MOESWEEP" train run.toml --checkpoint-dir ckpt --device cuda --gpus-per-node 1 \
  >train.out 2>train.err || status=$?
expect_eq "exit status of train with two ranks for one GPU" "$status" 2
expect_eq "stderr lines" "$(wc -l < train.err)" 1
grep -qx "moesweep: node .* has 2 training ranks for 1 GPU; give each node at most 1 training rank" train.err ||
  fail "not the placement refusal: $(cat train.err)"
[ ! -e ckpt ] || fail "the refused run wrote a checkpoint directory"
echo "ok: nothing trained"
