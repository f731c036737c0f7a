#!/usr/bin/env bash
# The main job (study.sh) on a 16-run sweep: killed with kill -9 in the middle, then run again, it
# finishes the sweep without training a finished run twice, fits and plans; run a third time, it trains
# nothing and gives the same fit.
source "$(dirname "$0")/lib.sh"
# d_model 16 and 24 at lr 1e-2: models this small want a higher rate (see sweeps/tiny.toml).
torch_sweep mini "[1, 4]" "[8192, 16384, 32768, 65536]" 8192 "" $'d_model = [16, 24]\nlr = 1e-2' > mini.toml
export MOESWEEP_RANKS=3 MOESWEEP_HELDOUT=lowest-loss:3 MOESWEEP_BOOTSTRAP=10 PLAN_FLOPS=1e10 PLAN_MEMORY=1MB
study=$MOESWEEP_SOURCE_DIR/study.sh
db=runs/mini/sweep.db

# The first try prepares the shards itself and is killed, whole process group, once runs are done.
setsid "$study" mini.toml >first.log 2>&1 &
job=$!
for _ in $(seq 600); do
  sleep 0.1
  [ -f "$db" ] || continue
  done_runs=$(q "$db" "select count(*) from runs where state='done'" 2>/dev/null || echo 0)
  [ "$done_runs" -ge 3 ] && break
done
[ "${done_runs:-0}" -ge 3 ] || { cat first.log; fail "the first try never finished 3 runs"; }
kill -9 -- "-$job"
wait "$job" 2>/dev/null || true
[ -f data/brown-byte/train.bin ] || fail "study.sh did not prepare the Brown shards"
done_before=$(q "$db" "select run_key from runs where state='done'")
echo "killed with $(echo "$done_before" | wc -l) runs done"

"$study" mini.toml >second.log 2>&1 || { cat second.log; fail "the second try failed"; }
expect_eq "runs done" "$(q "$db" "select count(*) from runs where state='done'")" 16
for key in $done_before; do
  expect_eq "attempts of $key (done before the kill)" "$(q "$db" "select attempts from runs where run_key='$key'")" 1
done
grep -q "held out" second.log || fail "no held-out figures in the output"
grep -q "^  E=4, all budgets: lower loss in [0-9]*/8 " second.log || fail "no MoE-against-dense comparison in the output"
grep -q "Memory-optimal within 1MB (shapes n_layers = d_model/64, V = 256" second.log ||
  fail "the planner did not plan in the study's byte-level shape family"
[ -s runs/mini/report/report.md ] && [ -s runs/mini/report/predicted_vs_observed.png ] || fail "no report"
heldout=$(python3 -c 'import json; print(json.load(open("runs/mini/fit.json"))["heldout"]["n"])')
expect_eq "held-out runs" "$heldout" 3

attempts=$(q "$db" "select count(*) from attempts")
cp runs/mini/fit.json first-fit.json
"$study" mini.toml >third.log 2>&1 || { cat third.log; fail "the third try failed"; }
expect_eq "attempts after a run with nothing left to train" "$(q "$db" "select count(*) from attempts")" "$attempts"
python3 - <<'PY' || fail "the third fit differs from the second"
import json
a = json.load(open("first-fit.json"))["coefficients"]
b = json.load(open("runs/mini/fit.json"))["coefficients"]
assert a == b, (a, b)
PY
echo "ok: the study resumed after kill -9 and a finished study re-runs without training"
