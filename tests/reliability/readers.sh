#!/usr/bin/env bash
# Readers during writes: four processes poll in a tight loop while a sweep runs, three `moesweep status
# --json` and one `sqlite3 sweep.db 'select * from status'`, the way users type it.
# (Two sqlite3 shells, read-write as they open by default, can block each other for an instant: one that
# closes tries SQLite's checkpoint-on-close, whose lock another opening at that moment meets without a
# busy timeout; give them `-readonly` or `-cmd '.timeout 1000'`. moesweep's own connections never do
# that, so neither the sweep's writer nor `moesweep status` ever blocks a reader.) No reader ever fails or sees "database is locked", no
# snapshot shows a half-written run (every snapshot is one committed state: all runs registered, a done
# run has its final loss, a running run its attempt), and the sweep's throughput is not lower than
# without readers (both printed).
# The sweep uses the simulate backend: its runs take their nominal time whatever the CPU load, so the
# comparison measures what readers do to the sweep through the database (WAL: readers never block the
# writer), not the CPU the readers' own processes take from training on a 2-core machine.
source "$(dirname "$0")/lib.sh"
simulate_sweep readers "[1, 2, 4, 8]" "[51200, 71680, 92160, 112640]" 10240 > sweep.toml
RUNS=16
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
SWEEPS=$((SWEEPS + 1))
read -r quiet_rate quiet_seconds <<< "$(throughput quiet.db)"

reader() {  # reader N moesweep|sqlite3: polls until the file `stop` appears, logging every snapshot
  local n=$1 kind=$2 status
  while [ ! -e stop ]; do
    status=0
    if [ "$kind" = moesweep ]; then
      "$MOESWEEP" status --db busy.db --json > "reader$n.out.tmp" 2>> "reader$n.err" || status=$?
    else
      sqlite3 -header busy.db 'select * from status' > "reader$n.out.tmp" 2>> "reader$n.err" || status=$?
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
touch stop
wait
[ "$status" -eq 0 ] || { cat busy.log; fail "the sweep with readers failed"; }
check_store busy.db $RUNS
SWEEPS=$((SWEEPS + 1))
read -r busy_rate busy_seconds <<< "$(throughput busy.db)"

cat reader*.err > readers.err
grep -i "locked\|busy" readers.err && fail "a reader saw the database locked"
[ ! -s readers.err ] || { cat readers.err; fail "a reader failed"; }
python3 "$HERE/check_snapshots.py" $RUNS reader*.log || fail "a reader saw a half-written state"
echo "throughput without readers: $quiet_rate tokens/s ($quiet_seconds s); with 4 readers: $busy_rate tokens/s ($busy_seconds s)"
NOTE="tokens/s: $quiet_rate alone, $busy_rate with 4 readers"
# "Not measurably lower": within the run-to-run noise of the scheduler (10%).
[ $((busy_rate * 100)) -ge $((quiet_rate * 90)) ] || fail "the readers slowed the sweep down"
