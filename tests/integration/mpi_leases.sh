#!/usr/bin/env bash
# One owner per sweep (issue 15, case 1), with the simulate backend so the timing is the coordinator's:
#   1. sweep A runs under mpirun; a different sweep B, sharing one grid point with A, runs serially on the
#      same database meanwhile: B leaves A's running run alone, waits for A to finish the shared run,
#      and every run is trained by one attempt (nothing "lost", A exits 0);
#   2. a second coordinator on A while A runs exits 2 with one line naming the owner and --take-over;
#   3. A's whole job killed with kill -9: the next `run` on this host sees the owner's process gone and
#      takes the sweep over at once, resuming the interrupted run from its checkpoint;
#   4. A's coordinator frozen (SIGSTOP) so its lease lapses: `run --take-over` waits for the lapse and
#      finishes the sweep; the frozen coordinator, thawed, finds its lease taken, stops and exits 1, and
#      nothing it does afterwards is recorded.
source "$(dirname "$0")/lib.sh"
SCALE=60000  # about 0.1 s a step for these runs
JOBS=()
trap 'for j in "${JOBS[@]}"; do pkill -9 -s "$j" 2>/dev/null || true; done; cleanup' EXIT

simulate_sweep shared "[1, 2]" "[204800]" 20480 > a.toml
sed 's/name = "shared"/name = "A"/' a.toml > A.toml
# B: the same model and recipe, so its E = 2 run is A's E = 2 run (the same run key), plus one of its own.
sed -e 's/name = "shared"/name = "B"/' -e 's/experts = \[1, 2\]/experts = [2, 4]/' a.toml > B.toml
shared_key=$("$MOESWEEP" expand --json A.toml | python3 -c '
import json, sys; print(next(r["run_key"] for r in json.load(sys.stdin)["runs"] if r["experts"] == 2))')
"$MOESWEEP" expand --json B.toml | grep -q "$shared_key" || fail "B does not share A's E = 2 run"

run_a() { "${MPIRUN[@]}" -np 3 "$MOESWEEP" run A.toml --db a.db --backend simulate --time-scale $SCALE \
            --heartbeat 0.2 "$@"; }

# --- 1. two sweeps, one database, one shared run --------------------------------------------------------
setsid bash -c "$(declare -f run_a); MPIRUN=(${MPIRUN[*]}); MOESWEEP=$MOESWEEP; SCALE=$SCALE; run_a" > a1.log 2>&1 &
job=$!
JOBS+=("$job")
wait_for_running a.db 2 3 || { cat a1.log; fail "A's runs did not start"; }
status=0
"$MOESWEEP" run B.toml --db a.db --backend simulate --time-scale $SCALE --heartbeat 0.2 > b1.log 2>&1 || status=$?
expect_eq "sweep B's exit status" "$status" 0
status=0
wait "$job" || status=$?
[ "$status" -eq 0 ] || { cat a1.log; fail "sweep A exited $status"; }
echo "ok: sweep A exited 0"
expect_eq "runs done" "$(q a.db "select count(*) from runs where state = 'done'")" 3
expect_eq "attempts per run" "$(q a.db "select group_concat(attempts) from (select distinct attempts from runs)")" 1
expect_eq "attempts lost" "$(q a.db "select count(*) from attempts where exit_reason like 'lost%'")" 0
grep -q "being trained by another coordinator" b1.log || fail "B did not say it waited for A's run"
expect_eq "the shared run's attempts" "$(q a.db "select attempts from runs where run_key = '$shared_key'")" 1

# --- 2. a second coordinator on an owned sweep ------------------------------------------------------------
rm -f a.db; rm -rf runs
setsid bash -c "$(declare -f run_a); MPIRUN=(${MPIRUN[*]}); MOESWEEP=$MOESWEEP; SCALE=$SCALE; run_a" > a2.log 2>&1 &
job=$!
JOBS+=("$job")
wait_for_running a.db 1 2 || { cat a2.log; fail "A did not start"; }
status=0
"$MOESWEEP" run A.toml --db a.db --backend simulate --time-scale $SCALE > second.log 2>&1 || status=$?
expect_eq "second coordinator's exit status" "$status" 2
expect_eq "its lines" "$(wc -l < second.log)" 1
grep -q "is owned by the coordinator on host $(hostname) (pid [0-9]*)" second.log || fail "owner not named: $(cat second.log)"
grep -q -- "--take-over" second.log || fail "no way to take over given: $(cat second.log)"
echo "ok: $(cat second.log)"
"$MOESWEEP" status --db a.db | head -1 | grep -q "sweep 'A' owned by $(hostname) pid [0-9]" ||
  fail "status does not name the owner: $("$MOESWEEP" status --db a.db | head -1)"

# --- 3. the owner killed with kill -9: taken over at once from this host ---------------------------------
pkill -9 -s "$job" 2>/dev/null || true
wait "$job" 2>/dev/null || true
# mpirun gives each rank a process group of its own; a rank outlives a killed mpirun by a moment.
for _ in $(seq 100); do pgrep -f "moesweep run A.toml --db a.db" > /dev/null || break; sleep 0.1; done
status=0
run_a > a3.log 2>&1 || status=$?
[ "$status" -eq 0 ] || { cat a3.log; fail "the restart exited $status"; }
grep -q "took sweep 'A' over: .* is gone from this host" a3.log || { cat a3.log; fail "no take-over line"; }
expect_eq "runs done after the restart" "$(q a.db "select count(*) from runs where state = 'done'")" 2
[ "$(q a.db "select max(resumed_from_step) from attempts")" -gt 0 ] || fail "nothing resumed from a checkpoint"
echo "ok: taken over at once; resumed from step $(q a.db "select max(resumed_from_step) from attempts")"

# --- 4. a frozen owner: its lease lapses; --take-over waits for that --------------------------------------
rm -f a.db; rm -rf runs
setsid bash -c "$(declare -f run_a); MPIRUN=(${MPIRUN[*]}); MOESWEEP=$MOESWEEP; SCALE=$SCALE; run_a --lease 2" > a4.log 2>&1 &
job=$!
JOBS+=("$job")
wait_for_running a.db 2 3 || { cat a4.log; fail "A did not start"; }
coordinator=""
for pid in $(pgrep -f "moesweep run A.toml --db a.db"); do
  if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=0"; then coordinator=$pid; fi
done
[ -n "$coordinator" ] || fail "could not find A's coordinator"
kill -STOP "$coordinator"
started=$(date +%s.%N)
status=0
"$MOESWEEP" run A.toml --db a.db --backend simulate --time-scale $SCALE --heartbeat 0.2 --take-over > taker.log 2>&1 ||
  status=$?
kill -CONT "$coordinator"
[ "$status" -eq 0 ] || { cat taker.log; fail "the take-over exited $status"; }
grep -q "waiting [0-9]* s for its lease to lapse" taker.log || { cat taker.log; fail "--take-over did not wait"; }
status=0
wait "$job" || status=$?
expect_eq "the frozen owner's exit status" "$status" 1
grep -q "lost the lease on sweep 'A'" a4.log || { cat a4.log; fail "the old owner did not say it lost its lease"; }
expect_eq "runs done by the new owner" "$(q a.db "select count(*) from runs where state = 'done'")" 2
expect_eq "open attempts" "$(q a.db "select count(*) from attempts where ended_at is null")" 0
expect_eq "results recorded per run" "$(q a.db "select group_concat(n) from (select count(*) as n from attempts
                                                where exit_reason = 'completed' group by run_id)")" "1,1"
expect_eq "the old owner's attempts, closed as lost" \
  "$(q a.db "select count(*) from attempts a join leases l on l.id = a.lease_id where l.pid = $coordinator and
             a.exit_reason like 'lost%'")" 2
echo "ok: frozen owner fenced after $(python3 -c "import time; print(round(time.time() - $started, 1))") s"
