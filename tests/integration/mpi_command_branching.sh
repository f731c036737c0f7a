#!/usr/bin/env bash
# The command backend with cooldown branches: the trunk's child (one, started once) announces its
# checkpoints; the one at each branch point becomes the branch point, and each branch's child starts
# from it through {branch_from}, while the trunk still trains. Every run is trained once.
source "$(dirname "$0")/lib.sh"
source "$MOESWEEP_SOURCE_DIR/tests/integration/command_lib.sh"
example_sweep 's/^experts = \[1, 4\]/experts = [1]/' 's/^tokens = \[65536, 131072\]/tokens = [32768, 65536, 131072]\nbranching = "cooldown"/' \
  "$(with_args '"--sleep-per-step", "0.03"')" > sweep.toml
expect_eq "runs the branched sweep expands to (kind:tokens trained)" \
  "$("$MOESWEEP" expand sweep.toml --json | "$PYTHON" -c 'import json,sys; print(" ".join(sorted(r["kind"] + ":" + str(r["trained_tokens"]) for r in json.load(sys.stdin)["runs"])))')" \
  "branch:13312 branch:26624 branch:7168 trunk:104448"
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db sweep.db --workdir runs --heartbeat 0.2 2> run.log ||
  { cat run.log; fail "the branched sweep failed"; }
expect_eq "runs done (kind:state)" \
  "$(q sweep.db "select group_concat(kind || ':' || state, ' ') from (select * from runs order by kind desc, tokens)")" \
  "trunk:done branch:done branch:done branch:done"
expect_eq "attempts per run" "$(q sweep.db "select group_concat(attempts) from runs")" "1,1,1,1"
trunk=$(q sweep.db "select run_key from runs where kind = 'trunk'")
expect_eq "children the trunk started" "$(cat runs/$trunk/attempt-*.log | grep -c "^model: d_model")" 1
expect_eq "what the trunk trained (once, to the largest branch point)" \
  "$(grep -ho "^done: .* steps" runs/$trunk/attempt-*.log)" "done: 104448 tokens in 102 steps"
for row in $(q sweep.db "select run_key || ':' || branch_step || ':' || branch_tokens from runs where kind = 'branch'"); do
  IFS=: read -r key step tokens <<< "$row"
  point=$(printf "%s/runs/%s/branch-points/ckpt-%012d.pt" "$PWD" "$trunk" "$step")
  grep -q "^resumed from $point at step $step, $tokens tokens" runs/$key/attempt-*.log ||
    { cat runs/$key/attempt-*.log; fail "branch ${key:0:12} did not start from $point"; }
  expect_eq "branch ${key:0:12}: its first heartbeat's tokens (branch point + one batch)" \
    "$(q sweep.db "select min(m.tokens) from metrics m join attempts a on a.id = m.attempt_id join runs r on r.id = a.run_id where r.run_key = '$key'")" \
    $((tokens + 1024))
done
echo "ok: each branch started from its trunk's branch point ({branch_from})"
expect_eq "a branch started before its trunk finished" \
  "$(q sweep.db "select (select min(a.started_at) from attempts a join runs r on r.id = a.run_id where r.kind = 'branch') < (select a.ended_at from attempts a join runs r on r.id = a.run_id where r.kind = 'trunk')")" 1
[ -e "runs/$trunk/branch-points" ] && fail "the branch points outlived their family"
expect_eq "final losses equal to what the script reported" "$(losses_agree sweep.db runs)" 4
