#!/usr/bin/env bash
# Kill one worker rank, not the whole job: kill -9 of the rank training a run. What users get, with
# OpenMPI: mpirun notices the dead rank and ends the whole job (the other ranks are terminated, mpirun
# exits non-zero and says which rank died); the store keeps what the coordinator had committed. Running
# the same command again requeues the interrupted runs, resumes them from their checkpoints and completes
# the sweep: every run done once, with the losses of an uninterrupted sweep.
source "$(dirname "$0")/lib.sh"
prepare_brown
# 160 steps for the longer budget: with the BLAS pool at one thread a step of this model takes about
# 10 ms, and a 40-step run could finish between two of the store's heartbeat flushes, before the kill.
torch_sweep worker "[1, 4]" "[16384, 163840]" 8192 > sweep.toml
RUNS=4
job() {
  JOB=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --db "$SCRATCH/$1/sweep.db" --workdir "$SCRATCH/$1/runs"
       --heartbeat 0.2 --threads 1)
}

mkdir reference killed
job reference
"${JOB[@]}" > reference/job.log 2>&1 || { cat reference/job.log; fail "the reference sweep failed"; }
check_store reference/sweep.db $RUNS
SWEEPS=$((SWEEPS + 1))

job killed
setsid "${JOB[@]}" > killed/job.log 2>&1 &
pid=$!
BACKGROUND+=("$pid")
wait_for_running killed/sweep.db 1 6 || fail "no run got past step 6"
rank=$(q killed/sweep.db "select a.rank from attempts a join runs r on r.id = a.run_id
                          where r.state = 'running' and a.ended_at is null order by r.step desc limit 1")
victim=$(pid_of_rank "$SCRATCH/killed/sweep.db" "$rank") || fail "could not find rank $rank"
kill -9 "$victim"
FAULTS=$((FAULTS + 1))
status=0
wait "$pid" || status=$?
wait_gone "$SCRATCH/killed/sweep.db"
echo "killed worker rank $rank (pid $victim); what the user gets: mpirun exit status $status and"
grep -v '^step\|^checkpoint' killed/job.log | tail -n 12 | sed 's/^/    | /'
echo "store after the kill: $(q killed/sweep.db "select group_concat(state || ' ' || n, ', ') from
                                              (select state, count(*) as n from runs group by state)")"
[ "$status" -ne 0 ] || fail "mpirun exited 0 although a rank was killed"
[ "$(q killed/sweep.db "select count(*) from runs where state = 'done'")" -lt $RUNS ] ||
  fail "the sweep finished although a worker was killed early"
expect_eq "integrity_check after the kill" "$(q killed/sweep.db 'pragma integrity_check')" ok

"${JOB[@]}" > killed/restart.log 2>&1 || { cat killed/restart.log; fail "the restart failed"; }
check_store killed/sweep.db $RUNS
diff <(losses killed/sweep.db) <(losses reference/sweep.db) || fail "losses differ from the uninterrupted sweep"
echo "ok: the restart completed the sweep; runs resumed from steps:" \
  "$(q killed/sweep.db "select group_concat(resumed_from_step, ' ') from attempts where resumed_from_step > 0")"
SWEEPS=$((SWEEPS + 1))
NOTE="mpirun exit $status after rank $rank was killed"
