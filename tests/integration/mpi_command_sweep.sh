#!/usr/bin/env bash
# The command backend (issue 19) on the example trainer (examples/command-backend/train.py), under
# mpirun -np 3: every run ends done once, with the eval loss the script reported in the store, its
# heartbeats in the metrics and its log under the run's directory; a misspelt placeholder is refused
# at load with exit 2 and one line naming it.
source "$(dirname "$0")/lib.sh"
source "$MOESWEEP_SOURCE_DIR/tests/integration/command_lib.sh"
example_sweep > sweep.toml
expect_eq "runs the example sweep expands to" "$("$MOESWEEP" expand sweep.toml --json | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')" 4

start=$(date +%s.%N)
"${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db sweep.db --workdir runs --heartbeat 0.2 2> run.log ||
  { cat run.log; fail "the example sweep failed"; }
echo "example sweep: $("$PYTHON" -c "print(f'{$(date +%s.%N) - $start:.1f}')") s"
expect_eq "runs done" "$(q sweep.db "select count(*) from runs where state = 'done'")" 4
expect_eq "attempts (one per run)" "$(q sweep.db "select count(*) from attempts")" 4
expect_eq "final losses equal to what the script reported" "$(losses_agree sweep.db runs)" 4
expect_eq "runs with heartbeats in the metrics" "$(q sweep.db "select count(distinct a.run_id) from metrics m join attempts a on a.id = m.attempt_id")" 4
expect_eq "losses in a plausible range (ln 256 = 5.55 untrained)" \
  "$(q sweep.db "select count(*) from runs where final_loss > 2 and final_loss < 5")" 4
for dir in runs/*/; do
  log=$(ls "$dir"attempt-*.log)
  grep -q "^moesweep: attempt .*train.py --d-model 32" "$log" || fail "$log has no header naming the command"
  grep -q "^model: d_model 32" "$log" || fail "$log lacks the script's own log lines"
  grep -q '"event"' "$log" && fail "$log holds protocol events"
  [ -s "$dir/checkpoints.json" ] || fail "$dir has no announced checkpoints"
done
echo "ok: each run's log (header, the script's lines, no events) and its announced checkpoints"
"$MOESWEEP" status --db sweep.db | head -3

# --- a placeholder nobody knows: exit 2, one line naming the file, the line and the placeholder -------
example_sweep 's#{n_layers}#{layers}#' > typo.toml
for cmd in "expand typo.toml" "run typo.toml --db typo.db"; do
  status=0
  $MOESWEEP $cmd > out.txt 2> err.txt || status=$?
  expect_eq "exit status of moesweep $cmd" "$status" 2
  expect_eq "stderr lines of moesweep $cmd" "$(wc -l < err.txt)" 1
  grep -q "typo.toml:13: backend.command: unknown placeholder '{layers}'; did you mean '{n_layers}'?" err.txt ||
    fail "moesweep $cmd said: $(cat err.txt)"
done
[ -e typo.db ] && fail "a refused sweep left a database"
echo "ok: $(cat err.txt)"
