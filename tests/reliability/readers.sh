#!/usr/bin/env bash
# Readers during writes, in the journal mode MOESWEEP_JOURNAL names (wal or rollback; ctest runs both):
# four processes poll in a tight loop while a sweep runs, three `moesweep status --json` and one
# `sqlite3` with the README's monitoring command, `sqlite3 -readonly -cmd '.timeout 10000' sweep.db
# 'select * from status'`. Each kind of reader must take at least MIN_READS (300) snapshots while the
# sweep runs. No reader ever fails or sees "database is locked", no snapshot shows a half-written run
# (every snapshot is one committed state: all runs registered, a done run has its final loss, a running run
# its attempt), and the sweep's throughput with readers is within 10% of its throughput without (both
# printed).
# Why the sqlite3 command carries `-readonly` and a busy timeout: a shell opened read-write without one
# fails with "database is locked" whenever it meets any lock it cannot wait for. In WAL mode a closing
# shell tries to become the last connection and checkpoint (it takes the database file's PENDING lock for
# an instant, which a process opening then cannot pass), and the first connection after the writer exits
# rebuilds the shared-memory index while holding the recovery lock; in rollback mode every commit holds
# the EXCLUSIVE lock. With a busy timeout each of these is a wait of milliseconds, not an error.
# The sweep uses the simulate backend: its runs take their nominal time whatever the CPU load, so the
# comparison measures what readers do to the sweep through the database, not the CPU the readers' own
# processes take from training on a 2-core machine.
source "$(dirname "$0")/lib.sh"
simulate_sweep readers "[1, 2, 4, 8]" "[51200, 71680, 92160, 112640]" 10240 > sweep.toml
RUNS=16
MIN_READS=${MOESWEEP_READERS_MIN_READS:-300}
JOURNAL=${MOESWEEP_JOURNAL:?readers.sh needs MOESWEEP_JOURNAL=wal or rollback}
case $JOURNAL in wal) MODE=wal ;; rollback) MODE=delete ;; *) fail "MOESWEEP_JOURNAL=$JOURNAL" ;; esac
PART=readers_$JOURNAL  # one result per journal mode for summary.sh
# About 13 s a sweep: long enough for 300 reads of each kind while it runs.
job() {
  JOB=("${MPIRUN[@]}" -np 5 "$MOESWEEP" run sweep.toml --db "$SCRATCH/$1.db" --workdir "$SCRATCH/$1-runs"
       --backend simulate --time-scale 60000 --heartbeat 0.05)
}
# Tokens per second of the sweep, from its first attempt's start to its last attempt's end.
throughput() {
  q "$1" "select printf('%.0f %.1f', (select sum(tokens) from runs) / s, s) from
          (select (julianday(max(ended_at)) - julianday(min(started_at))) * 86400.0 as s from attempts)"
}

job quiet
"${JOB[@]}" > quiet.log 2>&1 || { cat quiet.log; fail "the sweep without readers failed"; }
check_store quiet.db $RUNS
expect_eq "quiet.db: journal mode" "$(q quiet.db 'pragma journal_mode')" "$MODE"
SWEEPS=$((SWEEPS + 1))
read -r quiet_rate quiet_seconds <<< "$(throughput quiet.db)"

reader() {  # reader N moesweep|sqlite3: polls until the file `stop` appears, logging every snapshot
  local n=$1 kind=$2 status
  while [ ! -e stop ]; do
    status=0
    if [ "$kind" = moesweep ]; then
      "$MOESWEEP" status --db busy.db --json > "reader$n.out.tmp" 2>> "reader$n.err" || status=$?
    else
      sqlite3 -readonly -cmd '.timeout 10000' -header busy.db 'select * from status' \
        > "reader$n.out.tmp" 2>> "reader$n.err" || status=$?
    fi
    { echo "=== $kind $status"; cat "reader$n.out.tmp"; } >> "reader$n.log"
  done
}
job busy
setsid "${JOB[@]}" > busy.log 2>&1 &
pid=$!
BACKGROUND+=("$pid")
for _ in $(seq 300); do
  [ "$(q busy.db "select count(*) from runs" 2>/dev/null || echo 0)" -eq $RUNS ] && break
  sleep 0.05
done
reader 1 moesweep &
BACKGROUND+=("$!")
reader 2 moesweep &
BACKGROUND+=("$!")
reader 3 moesweep &
BACKGROUND+=("$!")
reader 4 sqlite3 &
BACKGROUND+=("$!")
status=0
wait "$pid" || status=$?
# The reads the sweep saw: counted now, before the readers notice `stop`.
during_sweep=$(grep -c '^=== ' reader*.log | awk -F: '{ n[$1 ~ /reader4/ ? "sqlite3" : "moesweep"] += $2 }
                                                  END { printf "%d %d", n["moesweep"], n["sqlite3"] }')
touch stop
wait
[ "$status" -eq 0 ] || { cat busy.log; fail "the sweep with readers failed"; }
check_store busy.db $RUNS
expect_eq "busy.db: journal mode" "$(q busy.db 'pragma journal_mode')" "$MODE"
SWEEPS=$((SWEEPS + 1))
read -r busy_rate busy_seconds <<< "$(throughput busy.db)"

cat reader*.err > readers.err
grep -i "locked\|busy" readers.err && fail "a reader saw the database locked"
[ ! -s readers.err ] || { cat readers.err; fail "a reader failed"; }
python3 "$HERE/check_snapshots.py" $RUNS 1 reader*.log || fail "a reader saw a half-written state"
read -r moesweep_reads sqlite3_reads <<< "$during_sweep"
echo "reads while the sweep ran ($JOURNAL): $moesweep_reads moesweep status, $sqlite3_reads sqlite3"
[ "$moesweep_reads" -ge "$MIN_READS" ] && [ "$sqlite3_reads" -ge "$MIN_READS" ] ||
  fail "fewer than $MIN_READS reads of a kind while the sweep ran: the sweep was too short to show much"
echo "throughput without readers: $quiet_rate tokens/s ($quiet_seconds s); with 4 readers: $busy_rate tokens/s ($busy_seconds s)"
NOTE="$JOURNAL: tokens/s $quiet_rate alone, $busy_rate with 4 readers ($moesweep_reads + $sqlite3_reads reads)"
# "Not measurably lower": within the run-to-run noise of the scheduler (10%).
[ $((busy_rate * 100)) -ge $((quiet_rate * 90)) ] || fail "the readers slowed the sweep down"
