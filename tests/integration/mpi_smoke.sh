#!/usr/bin/env bash
# mpirun -np 3 on sweeps/smoke.toml with the real trainer: every run done once, metrics recorded, the
# status and sweep_summary views agree, and running the same command again trains nothing.
source "$(dirname "$0")/lib.sh"
prepare_brown
SWEEP="$MOESWEEP_SOURCE_DIR/sweeps/smoke.toml"
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run "$SWEEP" --db sweep.db --heartbeat 0.2

runs=$("$MOESWEEP" expand --json "$SWEEP" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')
expect_eq "runs done" "$(q sweep.db "select count(*) from runs where state='done'")" "$runs"
expect_eq "attempts" "$(q sweep.db "select count(*) from attempts")" "$runs"
expect_eq "runs without metrics" "$(q sweep.db "select count(*) from runs r where not exists (select 1 from metrics m where m.run_id = r.id)")" 0
expect_eq "metrics of another run's attempt" "$(q sweep.db "select count(*) from metrics m join attempts a on a.id = m.attempt_id where a.run_id != m.run_id")" 0
expect_eq "final losses" "$(q sweep.db "select count(*) from runs where final_loss > 0 and final_loss < 6")" "$runs"
expect_eq "status progress" "$(q sweep.db "select min(progress) from status")" "1.0"
expect_eq "summary: done compute equals total" \
  "$(q sweep.db "select flops_done = flops_total and flops_total = (select sum(flops) from runs) from sweep_summary where state='done'")" 1
json=$("$MOESWEEP" status --db sweep.db --json)
expect_eq "status --json done" "$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["done"])')" "$runs"

# The same command again: nothing is trained twice.
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run "$SWEEP" --db sweep.db
expect_eq "attempts after a second run" "$(q sweep.db "select count(*) from attempts")" "$runs"
