# Shared helpers for the integration tests: a scratch directory, the prepared Brown shards, assertions.
set -euo pipefail
: "${MOESWEEP:?ctest passes the moesweep binary}"
: "${MOESWEEP_SOURCE_DIR:?ctest passes the source directory}"
SCRATCH=$(mktemp -d /tmp/moesweep-it.XXXXXX)
cleanup() { [ -n "${KEEP_SCRATCH:-}" ] || rm -rf "$SCRATCH"; }
trap cleanup EXIT
cd "$SCRATCH"
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
export OMPI_MCA_rmaps_base_oversubscribe=1

prepare_brown() { "$MOESWEEP" prepare-data --tokenizer byte --out data/brown-byte >/dev/null; }
q() { sqlite3 "$1" "$2"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# Waits up to 30 s until DB has at least RUNS runs running past step STEP: wait_for_running DB RUNS STEP
wait_for_running() {
  local running
  for _ in $(seq 300); do
    sleep 0.1
    running=$(q "$1" "select count(*) from runs where state='running' and step >= $3" 2>/dev/null || echo 0)
    [ "$running" -ge "$2" ] && return 0
  done
  return 1
}
expect_eq() {  # what actual expected
  [ "$2" == "$3" ] || fail "$1: got '$2', expected '$3'"
  echo "ok: $1 = $3"
}

# The sweeps the tests write: one [[grid]] block over E = EXPERTS and D = TOKENS (lists in TOML syntax)
# of a d_model-32, two-layer, two-head model at 64-token sequences in 1024-token batches and lr 0.003.
# EXTRA_SECTIONS follow [sweep]; GRID_EXTRA lines join the [[grid]] block, where, as in any sweep, they
# override the same keys above.
#   simulate_sweep NAME EXPERTS TOKENS CHECKPOINT_EVERY [EXTRA_SECTIONS] [GRID_EXTRA]
# for the simulate backend, whose data paths are never opened;
#   torch_sweep NAME EXPERTS TOKENS CHECKPOINT_EVERY [EXTRA_SECTIONS] [GRID_EXTRA]
# for the torch backend on the Brown shards that prepare_brown writes.
simulate_sweep() { sweep_file unused-by-simulate "warmup_tokens = 1024" "$@"; }
torch_sweep() { sweep_file data/brown-byte $'warmup_tokens = 2048\neval_tokens = 8192' "$@"; }
sweep_file() {  # DATA_DIR SCHEDULE (the backend's [train] lines), then the arguments above
  cat <<TOML
[sweep]
name = "$3"
${7:-}
[data]
train = "$1/train.bin"
val = "$1/val.bin"
[model]
seq_len = 64
d_model = 32
n_layers = 2
n_heads = 2
[train]
batch_tokens = 1024
lr = 0.003
$2
checkpoint_every_tokens = $6
[[grid]]
experts = $4
tokens = $5
${8:-}
TOML
}
