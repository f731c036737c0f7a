#!/usr/bin/env bash
# Cooldown branches (issue 9) with the real trainer on CPU, under mpirun:
#  1. a trunk and three branches: each branch's final eval loss equals, to the bit, the independent
#     run of the same budget; branches start while their trunk is still training; the store keeps the
#     trunk relation and the views count the trunk's work once;
#  2. a branch-point checkpoint that fails its checksum is never started from: the branch waits, the
#     (done) trunk is reopened and writes it again, and the branch ends with the same loss as before;
#  3. kill -9 of a branched (simulated) sweep mid-way: the same command finishes every trunk and branch
#     exactly once.
source "$(dirname "$0")/lib.sh"
prepare_brown

# branch_sweep NAME BRANCHING: one model (E = 4), budgets of 8, 16 and 32 batches; the default
# decay_fraction (0.2) puts the branch points at 0.8·D.
branch_sweep() { torch_sweep "$1" "[4]" "[8192, 16384, 32768]" 8192 "" "branching = \"$2\""; }
branch_sweep branched cooldown > branched.toml
branch_sweep independent none > independent.toml

# --- 1. bit-identical to independent runs ---------------------------------------------------------
start=$(date +%s.%N)
# Part 2 corrupts a branch point of this sweep, so it keeps them (part 3 checks that they go by default).
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run branched.toml --db sweep.db --heartbeat 0.2 --keep-branch-points 2> branched.log ||
  { cat branched.log; fail "the branched sweep failed"; }
middle=$(date +%s.%N)
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run independent.toml --db sweep.db --heartbeat 0.2 2> independent.log ||
  { cat independent.log; fail "the independent sweep failed"; }
end=$(date +%s.%N)
echo "branched sweep: $(python3 -c "print(f'{$middle - $start:.1f}')") s; independent sweep: $(python3 -c "print(f'{$end - $middle:.1f}')") s"

expect_eq "branched sweep rows (1 trunk + 3 branches) done" \
  "$(q sweep.db "select group_concat(kind || ':' || state, ' ') from (select kind, state from runs where kind != 'run' order by kind desc, tokens)")" \
  "trunk:done branch:done branch:done branch:done"
expect_eq "branches bit-identical to their independent runs" \
  "$(q sweep.db "select count(*) from runs b join runs i on i.kind = 'run' and i.tokens = b.tokens and i.experts = b.experts where b.kind = 'branch' and b.final_loss = i.final_loss")" 3
q sweep.db "select 'D = ' || b.tokens || ': branch from step ' || b.branch_step || ', eval loss ' || printf('%.15g', b.final_loss) || ', independent ' || printf('%.15g', i.final_loss) from runs b join runs i on i.kind = 'run' and i.tokens = b.tokens where b.kind = 'branch' order by b.tokens"
expect_eq "branches point at the trunk" \
  "$(q sweep.db "select count(*) from runs b join runs t on t.id = b.trunk_id where b.kind = 'branch' and t.kind = 'trunk'")" 3
expect_eq "branch steps (0.8·D in batches, rounded down)" \
  "$(q sweep.db "select group_concat(branch_step, ' ') from (select branch_step from runs where kind = 'branch' order by tokens)")" "6 12 25"
expect_eq "each branch resumed from its branch point" \
  "$(q sweep.db "select count(*) from attempts a join runs r on r.id = a.run_id where r.kind = 'branch' and a.resumed_from_step = r.branch_step")" 3
expect_eq "a branch started before its trunk finished (from the step-6 checkpoint)" \
  "$(q sweep.db "select (select min(a.started_at) from attempts a join runs r on r.id = a.run_id where r.kind = 'branch') < (select a.ended_at from attempts a join runs r on r.id = a.run_id where r.kind = 'trunk')")" 1
expect_eq "status --json: done rows that are grid points (branches and independent runs, not the trunk)" \
  "$("$MOESWEEP" status --db sweep.db --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(sum(1 for r in s["runs"] if r["kind"] != "trunk" and r["state"] == "done"))')" 6
# sweep_summary counts the trunk's work once: the trunk plus each branch's own cooldown.
expected_flops=$("$MOESWEEP" expand --json branched.toml | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_trained_flops"])')
expect_eq "branched FLOPs total = trunk + cooldowns" \
  "$(q sweep.db "select abs(flops_total - $expected_flops) < 1 and flops_done = flops_total from sweep_summary where sweep = 'branched'")" 1
q sweep.db "select sweep, runs, printf('%.4g', flops_total) from sweep_summary order by sweep"
q sweep.db "select branch_step, tokens, trained_tokens, state, trunk_state from branches order by tokens"

# --- 2. a corrupt branch-point checkpoint is written again by its trunk ----------------------------
trunk=$(q sweep.db "select run_key from runs where kind = 'trunk'")
branch=$(q sweep.db "select run_key from runs where kind = 'branch' and tokens = 16384")
point="runs/$trunk/branch-points/ckpt-000000000012.pt"
[ -f "$point" ] || fail "no branch-point checkpoint at $point"
python3 - "$point" <<'PY'
import os, sys
path = sys.argv[1]
with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0x5A]))
PY
# Train that branch again from its trunk: forget its result and its own checkpoints.
q sweep.db "update runs set state = 'pending', final_loss = NULL where run_key = '$branch'"
rm -rf "runs/$branch"
"${MPIRUN[@]}" -np 2 "$MOESWEEP" run branched.toml --db sweep.db --heartbeat 0.2 --keep-branch-points 2> recovery.log ||
  { cat recovery.log; fail "the recovery run failed"; }
grep -E "not started|reopened" recovery.log || true
expect_eq "the branch refused the corrupt checkpoint once" \
  "$(q sweep.db "select count(*) from attempts a join runs r on r.id = a.run_id where r.run_key = '$branch' and a.exit_reason = 'blocked'")" 1
[ -f "$point.corrupt" ] || fail "the corrupt checkpoint was not moved aside"
[ -f "$point" ] || fail "the trunk did not write the branch point again"
expect_eq "the trunk was reopened once" "$(q sweep.db "select count(*) from events where kind = 'reopen'")" 1
expect_eq "the trunk's second attempt resumed from the branch point before it" \
  "$(q sweep.db "select a.resumed_from_step from attempts a join runs r on r.id = a.run_id where r.run_key = '$trunk' order by a.id desc limit 1")" 6
expect_eq "the branch ends bit-identical again" \
  "$(q sweep.db "select count(*) from runs b join runs i on i.kind = 'run' and i.tokens = b.tokens and i.experts = b.experts where b.run_key = '$branch' and b.state = 'done' and b.final_loss = i.final_loss")" 1
expect_eq "the other branches were not trained again" \
  "$(q sweep.db "select group_concat(attempts, ' ') from (select attempts from runs where kind = 'branch' and run_key != '$branch' order by tokens)")" "1 1"

# --- 3. kill -9 mid-way through a branched sweep, then the same command ----------------------------
simulate_sweep killed "[1, 2, 4]" "[51200, 102400, 112640]" 10240 "" 'branching = "cooldown"' > killed.toml
RUN=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run killed.toml --db killed.db --workdir sim-runs --backend simulate
     --time-scale 50000 --heartbeat 0.2)
setsid "${RUN[@]}" > killed-first.log 2>&1 &
job=$!
for _ in $(seq 300); do
  sleep 0.1
  done_rows=$(q killed.db "select count(*) from runs where state = 'done'" 2>/dev/null || echo 0)
  [ "$done_rows" -ge 2 ] && break
done
kill -9 -- "-$job"
wait "$job" 2>/dev/null || true
echo "killed with $(q killed.db "select count(*) from runs where state = 'done'") of 12 done"
"${RUN[@]}" > killed-second.log 2>&1 || { cat killed-second.log; fail "the restarted branched sweep failed"; }
expect_eq "every trunk and branch done" "$(q killed.db "select count(*) from runs where state = 'done'")" 12
expect_eq "runs completed twice" \
  "$(q killed.db "select count(*) from (select run_id from attempts where exit_reason = 'completed' group by run_id having count(*) > 1)")" 0
expect_eq "branch attempts that found no trunk checkpoint" \
  "$(q killed.db "select count(*) from attempts where exit_reason = 'blocked'")" 0
# Once a trunk and its branches are done its branch points are deleted (at the paper's scale each is a
# whole model and optimizer state), whichever of the two jobs finished the family.
expect_eq "branch-point directories left after the sweep" "$(find sim-runs -name branch-points | wc -l)" 0
expect_eq "families whose branch points were deleted" \
  "$(cat killed-first.log killed-second.log | grep -c 'every branch done: deleted its branch points')" 3
