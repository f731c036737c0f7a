#!/usr/bin/env bash
# The light commands (expand, status, fit, predict, plan, prepare-data, submit) load neither LibTorch
# nor MPI: the dynamic loader's own log (LD_DEBUG=libs) of each names no libtorch*, libc10* or libmpi*
# (`fit` through moesweep-fit, which moesweep execs; moesweep itself links no BLAS either). `run` and
# `train` still work through `moesweep`, which execs moesweep-train beside it (the loader's log then names
# LibTorch: the check can see it), and without their helper executable beside moesweep, `run` and `fit`
# exit 2 with one line.
source "$(dirname "$0")/lib.sh"
HEAVY='lib(torch|c10|mpi)[^ /]*\.so'

# Runs a command under LD_DEBUG=libs and fails when the loader found LibTorch or MPI for it.
#   light WHAT EXPECTED_STATUS COMMAND...
light() {
  local what=$1 expected=$2 status=0 log
  shift 2
  rm -rf ld && mkdir ld
  LD_DEBUG=libs LD_DEBUG_OUTPUT="$SCRATCH/ld/log" "$@" >out.txt 2>err.txt || status=$?
  [ "$status" == "$expected" ] || { cat out.txt err.txt; fail "$what: exit status $status, expected $expected"; }
  log=$(cat ld/log.*)
  grep -q 'calling init:' <<< "$log" || fail "$what: the loader wrote no log (LD_DEBUG ignored?)"
  if grep -Eq "$HEAVY" <<< "$log"; then
    grep -E "$HEAVY" <<< "$log" | head -3 >&2
    fail "$what: loaded LibTorch or MPI"
  fi
  echo "ok: $what: $(grep -c 'calling init:' <<< "$log") libraries initialised, none of LibTorch or MPI"
}

if ldd "$MOESWEEP" | grep -Eq "$HEAVY"; then fail "moesweep links LibTorch or MPI: $(ldd "$MOESWEEP" | grep -E "$HEAVY")"; fi
if ldd "$MOESWEEP" | grep -Eq 'blas|lapack'; then fail "moesweep links a BLAS: $(ldd "$MOESWEEP" | grep -E 'blas|lapack')"; fi
echo "ok: ldd moesweep: $(ldd "$MOESWEEP" | wc -l) libraries, none of LibTorch, MPI or BLAS"

# A database to read, written by `moesweep run` (moesweep-train, through the exec), one rank.
simulate_sweep light "[1, 4]" "[102400, 204800]" 10240 > sweep.toml
LD_DEBUG=libs LD_DEBUG_OUTPUT="$SCRATCH/run-ld" "$MOESWEEP" run sweep.toml --db sweep.db --backend simulate \
  --time-scale 1e-6 --heartbeat 0.2 2>run.err || { cat run.err; fail "moesweep run"; }
expect_eq "runs done by moesweep run (exec'd into moesweep-train)" \
  "$(q sweep.db "select count(*) from runs where state = 'done'")" 4
grep -Eq 'libtorch[^ /]*\.so' run-ld.* || fail "moesweep run: no LibTorch in the loader's log: the check could not see it"
echo "ok: moesweep run loads LibTorch (the check sees it)"

light "--help" 0 "$MOESWEEP" --help
grep -q '^  run ' out.txt && grep -q '^  train ' out.txt && grep -q '^  fit ' out.txt ||
  fail "--help does not list run, train and fit"
for sweep in "$MOESWEEP_SOURCE_DIR"/sweeps/*.toml; do
  light "expand $(basename "$sweep")" 0 "$MOESWEEP" expand "$sweep"
  light "expand --json $(basename "$sweep")" 0 "$MOESWEEP" expand --json "$sweep"
done
light "status" 0 "$MOESWEEP" status --db sweep.db
grep -q "runs: 4 — 4 done" out.txt || { cat out.txt; fail "status: wrong counts"; }
light "status --json" 0 "$MOESWEEP" status --db sweep.db --json
light "status --sweep" 0 "$MOESWEEP" status --db sweep.db --sweep light
light "status --watch" 124 timeout 1 "$MOESWEEP" status --db sweep.db --watch 0.2
light "status of a missing database" 2 "$MOESWEEP" status --db missing.db
DATA=$MOESWEEP_SOURCE_DIR/tests/analysis/data
light "fit --csv" 0 "$MOESWEEP" fit --csv "$DATA/paper_like_runs.csv" --starts 9 --bootstrap 0 --out fit
light "fit --db (too few runs: exit 2)" 2 "$MOESWEEP" fit --db sweep.db --starts 9 --bootstrap 0
light "predict" 0 "$MOESWEEP" predict --coefficients fit/fit.toml --n-act 1e9 --tokens 2e10 --experts 8
light "plan" 0 "$MOESWEEP" plan --flops 1e22 --json
light "plan --table" 0 "$MOESWEEP" plan --table
light "prepare-data" 0 "$MOESWEEP" prepare-data --tokenizer byte --out data/brown-byte
light "submit --dry-run" 0 "$MOESWEEP" submit sweep.toml --db sweep.db --dry-run
grep -q "^MOESWEEP=.*/moesweep$" out.txt || { grep MOESWEEP= out.txt; fail "the batch script does not run moesweep"; }
mkdir -p bin && printf '#!/bin/sh\ncat >/dev/null\necho 4242\n' > bin/sbatch && chmod +x bin/sbatch
light "submit" 0 env PATH="$SCRATCH/bin:$PATH" "$MOESWEEP" submit sweep.toml --db sweep.db
expect_eq "the job submit recorded" "$(q sweep.db "select slurm_job_id from sweeps where name = 'light'")" 4242

# `run --help`, `train --help` and `fit --help` are the full ones, from the helpers.
"$MOESWEEP" run --help > run-help.txt && grep -q -- '--backend' run-help.txt || fail "moesweep run --help"
"$MOESWEEP" train --help > train-help.txt && grep -q -- '--resume' train-help.txt || fail "moesweep train --help"
"$MOESWEEP" fit --help > fit-help.txt && grep -q -- '--heldout' fit-help.txt || fail "moesweep fit --help"
echo "ok: run --help, train --help and fit --help come from the helpers"

# Without the helper executables beside it: one line, exit 2.
mkdir alone && cp "$MOESWEEP" alone/
for command in "run moesweep-train" "fit moesweep-fit"; do
  set -- $command
  status=0
  alone/moesweep "$1" --help > out.txt 2> err.txt || status=$?
  expect_eq "$1 without $2: exit status" "$status" 2
  expect_eq "$1 without $2: lines on stderr" "$(wc -l < err.txt)" 1
  grep -q "$2" err.txt || fail "the message does not name $2: $(cat err.txt)"
  echo "ok: $(cat err.txt)"
done
