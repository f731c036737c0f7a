# Helpers of the reliability suite, on top of the integration tests' lib.sh: each part counts what it
# did (faults injected, bad inputs tried, sweeps completed, runs lost, duplicate results) into
# $MOESWEEP_RELIABILITY_RESULTS/<part>.result for summary.sh, and checks the store's invariants.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)  # before integration/lib.sh changes to the scratch dir
source "$HERE/../integration/lib.sh"
PART=$(basename "$0" .sh)
RESULTS=${MOESWEEP_RELIABILITY_RESULTS:-$SCRATCH/results}
mkdir -p "$RESULTS"
rm -f "$RESULTS/$PART.result"
FAULTS=0 BAD_INPUTS=0 SWEEPS=0 LOST=0 DUPLICATES=0 NOTE=""
PART_STARTED=$SECONDS
BACKGROUND=()  # pids (process groups where started with setsid) to end when the part ends
AT_EXIT=()     # commands to run when the part ends, before the scratch directory goes (e.g. umount)

finish_part() {
  local status=$1 outcome=pass pid
  for pid in "${BACKGROUND[@]}"; do kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
  for command in "${AT_EXIT[@]}"; do eval "$command" || true; done
  [ "$status" -eq 0 ] || outcome=fail
  [ "$status" -eq 77 ] && outcome=skip
  printf 'part=%s\nstatus=%s\nfaults=%d\nbad_inputs=%d\nsweeps=%d\nlost=%d\nduplicates=%d\nseconds=%d\nnote=%s\n' \
    "$PART" "$outcome" "$FAULTS" "$BAD_INPUTS" "$SWEEPS" "$LOST" "$DUPLICATES" $((SECONDS - PART_STARTED)) "$NOTE" \
    > "$RESULTS/$PART.result"
  cleanup
}
trap 'finish_part $?' EXIT

# The runs of a database as "run_key final_loss" lines, the loss to the last bit (%.17g).
losses() { q "$1" "select run_key || ' ' || printf('%.17g', final_loss) from runs order by run_key"; }

# check_store DB RUNS: the promise after any fault and a restart. Every one of RUNS runs is done with
# exactly one completed attempt and a final loss, no attempt is left open, every metric row belongs to an
# attempt of its own run, and SQLite finds the file intact. Adds to LOST and DUPLICATES.
check_store() {
  local db=$1 runs=$2 done_runs duplicates
  expect_eq "$db: integrity_check" "$(q "$db" 'pragma integrity_check')" ok
  expect_eq "$db: foreign key violations" "$(q "$db" 'pragma foreign_key_check' | wc -l)" 0
  done_runs=$(q "$db" "select count(*) from runs where state = 'done' and final_loss is not null")
  duplicates=$(q "$db" "select count(*) from (select run_id from attempts where exit_reason = 'completed'
                                              group by run_id having count(*) > 1)")
  LOST=$((LOST + runs - done_runs))
  DUPLICATES=$((DUPLICATES + duplicates))
  expect_eq "$db: runs done with a final loss" "$done_runs" "$runs"
  expect_eq "$db: runs with two completed attempts" "$duplicates" 0
  expect_eq "$db: done runs without exactly one completed attempt" \
    "$(q "$db" "select count(*) from runs r where r.state = 'done' and (select count(*) from attempts a
                where a.run_id = r.id and a.exit_reason = 'completed') != 1")" 0
  expect_eq "$db: attempts left open" "$(q "$db" "select count(*) from attempts where ended_at is null")" 0
  expect_eq "$db: metric rows outside an attempt of their run" \
    "$(q "$db" "select count(*) from metrics m left join attempts a on a.id = m.attempt_id
                where a.id is null or a.run_id != m.run_id")" 0
}

# Processes whose command line mentions TEXT (an absolute path unique to this test): after a kill -9 of
# a job, none may survive to write into the next job's files. Waits up to 10 s for them to go.
wait_gone() {
  for _ in $(seq 100); do
    pgrep -f -- "$1" >/dev/null || return 0
    sleep 0.1
  done
  pgrep -af -- "$1" >&2 || true
  fail "processes of a killed job survived: $1"
}

# The pid of the moesweep process that is MPI rank RANK of the job whose command line mentions TEXT.
pid_of_rank() {
  local pid
  for pid in $(pgrep -f -- "$1"); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}

# Milliseconds since the epoch.
now_ms() { date +%s%3N; }
