#!/usr/bin/env bash
# The main job: a whole scaling-law study on this machine, from the embedded default to a fitted law.
#
#   ./study.sh                      # sweeps/tiny.toml on the byte-level Brown corpus
#   ./study.sh sweeps/mine.toml     # any sweep whose shards exist
#
# 1. prepares the Brown corpus shards (byte tokenizer) if the sweep uses them and they are missing;
# 2. runs the sweep under mpirun: rank 0 coordinates (almost no CPU), one worker per core;
# 3. fits the joint law on the finished runs, the lowest-loss ones held out, and writes the report;
# 4. prints where everything is, the fit quality, and the planner's answer from the fitted law.
#
# Everything lands in runs/<sweep name>/ under the current directory, and the sweep's relative data
# paths resolve there too, as for `moesweep run`. Re-running continues: finished runs are never trained
# again, interrupted ones resume from their checkpoints.
#
# Environment: MOESWEEP (the binary, default build/moesweep beside this script), MOESWEEP_RANKS
# (default: cores + 1), MOESWEEP_HELDOUT (default lowest-loss:8), MOESWEEP_BOOTSTRAP (default 100),
# PLAN_FLOPS / PLAN_MEMORY (the planner's budget, default 1e12 FLOPs / 1MB).
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)

sweep=${1:-$root/sweeps/tiny.toml}
moesweep=${MOESWEEP:-$root/build/moesweep}
if [[ ! -x $moesweep ]]; then
  echo "study.sh: $moesweep is missing; run ./setup.sh first" >&2
  exit 1
fi
if [[ ! -f $sweep ]]; then
  echo "study.sh: no sweep file '$sweep'" >&2
  exit 2
fi
# The sweep's name decides where its files go; expand also validates the file (exit 2, one line).
name=$("$moesweep" expand "$sweep" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["sweep"])')
out=runs/$name
db=$out/sweep.db
report=$out/report
mkdir -p "$out"

step() { printf '\n== %s\n' "$*"; }
started=$SECONDS

step "1/4 data"
if grep -q 'data/brown-byte/' "$sweep" && [[ ! -f data/brown-byte/train.bin || ! -f data/brown-byte/val.bin ]]; then
  "$moesweep" prepare-data --tokenizer byte --out data/brown-byte
else
  echo "shards ready"
fi

step "2/4 sweep '$name' (progress: one line per finished run; in another shell: $moesweep status --db $db --watch 5)"
ranks=${MOESWEEP_RANKS:-$(($(nproc) + 1))}
mpi_flags=(--oversubscribe)
[[ $EUID -eq 0 ]] && mpi_flags+=(--allow-run-as-root)
status=0
mpirun "${mpi_flags[@]}" -np "$ranks" "$moesweep" run "$sweep" --db "$db" --workdir "$out/work" || status=$?
case $status in
  0) ;;
  1) echo "study.sh: some runs failed or diverged (listed by $moesweep status --db $db); fitting the done ones" ;;
  75) echo "study.sh: the sweep was stopped; run the same command again to continue it" >&2; exit 75 ;;
  *) echo "study.sh: the sweep ended with status $status; run the same command again to continue it" >&2
     exit "$status" ;;
esac
"$moesweep" status --db "$db" | sed -n 1,3p

step "3/4 fit (held out: ${MOESWEEP_HELDOUT:-lowest-loss:8})"
"$moesweep" fit --db "$db" --sweep "$name" --out "$report" --heldout "${MOESWEEP_HELDOUT:-lowest-loss:8}" \
  --bootstrap "${MOESWEEP_BOOTSTRAP:-100}" --headline-flops "${PLAN_FLOPS:-1e12}" --json >"$out/fit.json"
python3 - "$out/fit.json" <<'EOF'
import json, sys
fit = json.load(open(sys.argv[1]))
c = fit["coefficients"]
# A dense fit (only E = 1 runs) has no e_start or e_max.
print("fitted law: " + ", ".join(f"{k} {c[k]:.4g}" for k in
      ("a", "alpha", "gamma", "delta", "b", "beta", "zeta", "omega", "c", "e_start", "e_max") if k in c))
for part in ("train", "heldout"):
    q = fit[part]
    print(f"{part:>8}: {q['n']:3d} runs, RMSE(log L) {q['rmse_log']:.4f}, max |L - L^| {q['max_abs_error']:.4f}")
EOF
# The question the paper answers, asked of this study's own runs: at equal active parameters and tokens,
# does a mixture of E experts reach a lower loss than the dense model?
python3 - "$db" "$name" <<'EOF'
import sqlite3, sys
from collections import defaultdict
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = db.execute("""select r.n_act, r.tokens, r.experts, r.final_loss from runs r
                     join sweep_runs s on s.run_id = r.id join sweeps w on w.id = s.sweep_id
                     where w.name = ? and r.state = 'done' and r.kind != 'trunk'""",
                  (sys.argv[2],)).fetchall()
loss = defaultdict(dict)
for n, d, e, l in rows:
    loss[(n, d)][e] = l
largest = max((d for _, d in loss), default=None)
print("MoE against dense at equal N_act and D (measured; cooldown trunks left out):")
for e in sorted({e for by_e in loss.values() for e in by_e} - {1}):
    for label, keep in (("all budgets", lambda d: True), (f"D = {largest:,}", lambda d: d == largest)):
        pairs = [(by_e[e], by_e[1]) for (n, d), by_e in loss.items() if keep(d) and e in by_e and 1 in by_e]
        if not pairs:
            continue
        wins = sum(m < d for m, d in pairs)
        mean = sum(m - d for m, d in pairs) / len(pairs)
        print(f"  E={e}, {label}: lower loss in {wins}/{len(pairs)} (N_act, D) points, "
              f"mean difference {mean:+.4f} nats")
EOF

step "4/4 plan from the fitted law (${PLAN_FLOPS:-1e12} FLOPs, ${PLAN_MEMORY:-1MB})"
vocab=$("$moesweep" expand "$sweep" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["vocab_size"])')
# The planner extrapolates the fitted law; a law with no optimum in its search range is an answer too,
# not a failure of the study.
"$moesweep" plan --coefficients "$report/fit.toml" --flops "${PLAN_FLOPS:-1e12}" --memory "${PLAN_MEMORY:-1MB}" \
  --vocab "$vocab" ||
  echo "study.sh: the planner has no answer from this fitted law (its line above says why); the sweep and the fit stand"

step "done in $((SECONDS - started)) s"
echo "database: $db   (sqlite3 $db 'select * from sweep_summary')"
echo "report:   $report/report.md and $report/*.png"
