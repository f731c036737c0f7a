#!/bin/sh
# dense_fit_roundtrip.sh MOESWEEP RUNS_CSV: the dense-only path end to end. The E = 1 rows of RUNS_CSV
# are fitted (the Chinchilla form, said so on stdout, in report.md and in fit.toml), and the --out
# folder then serves as --coefficients for predict (E has no effect) and plan (E = 1 only).
moesweep=$1
runs=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "experts") col = i; print; next } $col == 1' "$runs" \
  >"$work/dense.csv"
[ "$(wc -l <"$work/dense.csv")" -gt 20 ] || fail "no dense rows in $runs"

"$moesweep" fit --csv "$work/dense.csv" --out "$work/fit" --starts 243 --bootstrap 20 >"$work/fit.txt" ||
  fail "fit exited $?"
cat "$work/fit.txt"
grep -q '^Dense-only (Chinchilla form' "$work/fit.txt" || fail "the summary does not say dense-only"
grep -q '^form = "dense"' "$work/fit/fit.toml" || fail "fit.toml is not marked dense"
grep -q 'Chinchilla form' "$work/fit/report.md" || fail "report.md does not say Chinchilla form"

one=$("$moesweep" predict --coefficients "$work/fit" --n-act 1e9 --tokens 2e10 --experts 1 --json) ||
  fail "predict exited $?"
eight=$("$moesweep" predict --coefficients "$work/fit" --n-act 1e9 --tokens 2e10 --experts 8 --json) ||
  fail "predict exited $?"
echo "predict E=1: $one; E=8: $eight"
[ "$one" = "$eight" ] || fail "a dense law must predict the same loss for every E"

"$moesweep" plan --coefficients "$work/fit/fit.toml" --flops 1e22 --json >"$work/plan.json" ||
  fail "plan exited $?"
cat "$work/plan.json"
[ "$(grep -c '"experts"' "$work/plan.json")" -eq 1 ] || fail "plan ranks E > 1 from a dense law"
grep -q '"experts": 1,' "$work/plan.json" || fail "plan has no E = 1 optimum"
echo "ok: dense fit, predict and plan"
