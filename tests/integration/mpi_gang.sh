#!/usr/bin/env bash
# A run whose memory estimate exceeds [resources] rank_memory trains data-parallel on a gang of two
# ranks (MPI_Comm_create_group + the trainer's all-reduce) and ends at the loss one rank reaches. Ranks
# take whole routing groups: a batch of 16 sequences in groups of 8 splits over two; in one group of 16
# (the default routing_group, 64, is more than the batch) it cannot, and the run fails as unschedulable.
source "$(dirname "$0")/lib.sh"
prepare_brown
write_sweep() {  # $1 = extra [resources] lines, $2 = the routing group
  torch_sweep gang "[4]" "[16384]" 8192 $'[resources]\n'"$1" $'warmup_tokens = 1024\neval_tokens = 4096\nrouting_group = '"$2"
}
# About 1.6 MB of replicated state and 9 MB of activations: two ranks fit in 7 MB each, one does not.
write_sweep 'rank_memory = "7MB"' 8 > gang.toml
write_sweep '' 8 > single.toml
write_sweep 'rank_memory = "7MB"' 64 > one_group.toml
status=0
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run one_group.toml --db one_group.db --workdir one-group-runs 2>one_group.err || status=$?
expect_eq "exit status with a gang larger than the routing groups" "$status" 1
expect_eq "its run" "$(q one_group.db "select state from runs")" failed
grep -q "rank_memory needs a gang of 2 ranks, but the smallest batch, 16 sequences, makes 1 routing group(s) of 16.*set model.routing_group to at most 8" \
  one_group.err || fail "no clear line on the gang and the routing groups: $(cat one_group.err)"
expect_eq "attempts that trained" "$(q one_group.db "select count(*) from attempts where ranks > 0")" 0
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run gang.toml --db gang.db --workdir gang-runs
"$MOESWEEP" run single.toml --db single.db --workdir single-runs
expect_eq "gang size" "$(q gang.db "select ranks from attempts")" 2
expect_eq "state" "$(q gang.db "select state from runs")" done
gang_loss=$(q gang.db "select final_loss from runs")
single_loss=$(q single.db "select final_loss from runs")
python3 -c "import sys; g, s = $gang_loss, $single_loss; sys.exit(0 if abs(g - s) <= 1e-3 * s else 1)" ||
  fail "two-rank loss $gang_loss differs from one-rank loss $single_loss"
echo "ok: two ranks $gang_loss, one rank $single_loss"
