#!/usr/bin/env bash
# Kill at random: MOESWEEP_CHAOS_ROUNDS rounds (default 10) of a small CPU sweep under mpirun -np 3.
# Each round starts the sweep on a fresh database, kill -9s the whole process group at a random moment
# (in one round of three a second time, during the restart), then runs the same command to the end. After
# every round: every run done exactly once, no attempt left open, every metric row in an attempt of its
# run, PRAGMA integrity_check ok, and each run's final eval loss equal to the bit to that of an
# uninterrupted reference sweep (CPU training is deterministic with one thread per rank).
# The moments come from a seeded generator: MOESWEEP_CHAOS_SEED=S replays a failing sequence.
source "$(dirname "$0")/lib.sh"
prepare_brown
ROUNDS=${MOESWEEP_CHAOS_ROUNDS:-10}
SEED=${MOESWEEP_CHAOS_SEED:-$(( $(date +%s%N) % 1000000 ))}
RANDOM=$SEED
echo "kill_random: $ROUNDS rounds, seed $SEED (replay with MOESWEEP_CHAOS_SEED=$SEED)"
NOTE="seed $SEED"

torch_sweep chaos "[1, 4]" "[16384, 32768, 49152]" 4096 > sweep.toml
RUNS=6
job() {  # job DIR: the command that runs the sweep on DIR/sweep.db, checkpoints in DIR/runs, into JOB
  JOB=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db "$SCRATCH/$1/sweep.db" --workdir "$SCRATCH/$1/runs"
       --heartbeat 0.2 --threads 1)
}

mkdir reference
started=$(now_ms)
job reference
"${JOB[@]}" > reference/job.log 2>&1 || { cat reference/job.log; fail "the reference sweep failed"; }
REFERENCE_MS=$(( $(now_ms) - started ))
check_store reference/sweep.db $RUNS
losses reference/sweep.db > reference.losses
SWEEPS=$((SWEEPS + 1))
# When training began: before it the job starts MPI and LibTorch, registers the sweep and hands out runs.
TRAINING_MS=$(( $(q reference/sweep.db "select cast((julianday(min(started_at)) - 2440587.5) * 86400000 as integer)
                                         from attempts") - started ))
echo "reference sweep: $RUNS runs in ${REFERENCE_MS} ms, the first handed out after ${TRAINING_MS} ms"
# Per mille of the sweep's compute done, as the store says (0 before the sweep is registered; the
# database is not touched before the job creates it, sqlite3 would create an empty one).
progress() {
  [ -s "$1" ] || { echo 0; return; }
  q "$1" "select cast(1000 * sum(flops_done) / sum(flops_total) as integer) from sweep_summary" 2>/dev/null |
    grep -x '[0-9][0-9]*' || echo 0
}

# The moment of a kill is drawn from the seeded RANDOM (never in a $(subshell), which would not advance
# it): in one case of four a time during the job's start (MPI, LibTorch, registering the sweep, handing
# out runs), else a share of the sweep's compute, between what is done and 95%, that the kill waits for.
for round in $(seq "$ROUNDS"); do
  dir=round$round
  mkdir "$dir"
  kills=$(( RANDOM % 3 == 0 ? 2 : 1 ))
  for k in $(seq "$kills"); do
    at_start=$(( RANDOM % 4 == 0 ))
    r=$(( RANDOM * 32768 + RANDOM ))
    done_permille=$(progress "$dir/sweep.db")
    job "$dir"
    setsid "${JOB[@]}" > "$dir/job$k.log" 2>&1 &
    pid=$!
    BACKGROUND+=("$pid")
    if [ "$at_start" -eq 1 ]; then
      delay_ms=$(( r % TRAINING_MS ))
      moment="${delay_ms} ms into its start"
      sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    else
      target=$(( done_permille + r % (950 - done_permille + 1) ))
      moment="at $((target / 10)).$((target % 10))% of the sweep's compute"
      for _ in $(seq 1200); do
        [ "$(progress "$dir/sweep.db")" -ge "$target" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
      done
    fi
    if kill -0 "$pid" 2>/dev/null && kill -9 -- "-$pid" 2>/dev/null; then
      FAULTS=$((FAULTS + 1))
      what="killed"
    else
      what="found the job already finished when it was to be killed"
    fi
    wait "$pid" 2>/dev/null || true
    wait_gone "$SCRATCH/$dir/sweep.db"
    state=$(q "$dir/sweep.db" "select group_concat(state || ' ' || n, ', ') from
              (select state, count(*) as n from runs group by state)" 2>/dev/null || true)
    echo "round $round: $what $moment: ${state:-no runs registered yet}"
  done
  job "$dir"
  "${JOB[@]}" > "$dir/final.log" 2>&1 || { cat "$dir/final.log"; fail "round $round: the restarted sweep failed"; }
  check_store "$dir/sweep.db" $RUNS
  if ! diff <(losses "$dir/sweep.db") reference.losses; then
    fail "round $round: final eval losses differ from the uninterrupted reference (seed $SEED)"
  fi
  echo "ok: round $round: $RUNS runs done once, losses equal the reference; resumed from steps:" \
    "$(q "$dir/sweep.db" "select group_concat(resumed_from_step, ' ') from attempts where resumed_from_step > 0")"
  SWEEPS=$((SWEEPS + 1))
  rm -rf "$dir/runs"
done
echo "kill_random: $FAULTS kill -9 of the whole job in $ROUNDS rounds (seed $SEED): nothing lost, nothing twice"
