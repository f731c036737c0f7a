#!/usr/bin/env bash
# A run whose memory estimate exceeds [resources] rank_memory trains data-parallel on a gang of two
# ranks (MPI_Comm_create_group + the trainer's all-reduce) and ends at the loss one rank reaches.
source "$(dirname "$0")/lib.sh"
prepare_brown
write_sweep() {  # $1 = extra [resources] lines
  torch_sweep gang "[4]" "[16384]" 8192 $'[resources]\n'"$1" $'warmup_tokens = 1024\neval_tokens = 4096'
}
# About 1.6 MB of replicated state and 9 MB of activations: two ranks fit in 7 MB each, one does not.
write_sweep 'rank_memory = "7MB"' > gang.toml
write_sweep '' > single.toml
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run gang.toml --db gang.db --workdir gang-runs
"$MOESWEEP" run single.toml --db single.db --workdir single-runs
expect_eq "gang size" "$(q gang.db "select ranks from attempts")" 2
expect_eq "state" "$(q gang.db "select state from runs")" done
gang_loss=$(q gang.db "select final_loss from runs")
single_loss=$(q single.db "select final_loss from runs")
python3 -c "import sys; g, s = $gang_loss, $single_loss; sys.exit(0 if abs(g - s) <= 1e-3 * s else 1)" ||
  fail "two-rank loss $gang_loss differs from one-rank loss $single_loss"
echo "ok: two ranks $gang_loss, one rank $single_loss"
