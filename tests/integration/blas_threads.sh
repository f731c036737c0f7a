#!/usr/bin/env bash
# The same run gives the bit-identical eval loss whatever OPENBLAS_NUM_THREADS says (unset, 1, 2), at
# --threads 1 and 2: the trainer sets the BLAS pool to its own thread count. Before, 1 and 2 OpenBLAS
# threads gave 4.934100151062012 and 4.934100389480591 for the same run at --threads 1 on one machine.
# On an "AMD EPYC" here OpenBLAS's split gave the same bits either way (checked with the pool setting
# disabled through an LD_PRELOAD no-op), so there this test guards the contract and
# trainer.Training.TheBlasPoolFollowsTheTrainersThreadCount the mechanism.
source "$(dirname "$0")/lib.sh"
prepare_brown
cat > run.toml <<'TOML'
[data]
train = "data/brown-byte/train.bin"
val = "data/brown-byte/val.bin"
tokenizer = "byte"
[model]
d_model = 48
n_layers = 2
n_heads = 2
experts = 8
seq_len = 128
[train]
tokens = 16384
batch_tokens = 2048
lr = 3e-3
warmup_tokens = 4096
eval_tokens = 8192
checkpoint_every_tokens = 1_000_000
TOML
eval_loss() {  # THREADS [OPENBLAS_NUM_THREADS]: the run's eval loss, all 17 digits
  local env=(env -u OPENBLAS_NUM_THREADS)
  [ -n "${2:-}" ] && env=(env OPENBLAS_NUM_THREADS="$2")
  rm -rf ckpt
  "${env[@]}" "$MOESWEEP" train run.toml --threads "$1" --checkpoint-dir ckpt --json | tail -1 |
    python3 -c 'import json, sys; print(repr(json.load(sys.stdin)["eval_loss"]))'
}
for threads in 1 2; do
  unset_loss=$(eval_loss "$threads")
  echo "--threads $threads: OPENBLAS_NUM_THREADS unset: $unset_loss"
  for blas in 1 2; do
    expect_eq "--threads $threads, OPENBLAS_NUM_THREADS=$blas" "$(eval_loss "$threads" "$blas")" "$unset_loss"
  done
done
