#!/usr/bin/env bash
# Disk full: (1) a sweep whose work directory (the checkpoints) sits on a tiny tmpfs that fills up: its
# runs fail with "No space left on device" recorded as their error, the store stays consistent, and after
# space is freed `moesweep run --retry-failed` finishes them with the losses of a sweep that never ran out
# of space. (2) A sweep whose database sits on a full tmpfs: the job ends with one clear error line, the
# store stays consistent, and after space is freed the same command completes the sweep.
# Needs root for mount -t tmpfs; skipped (exit 77) where mounting is not allowed.
source "$(dirname "$0")/lib.sh"
mkdir small_disk db_disk
mount -t tmpfs -o size=32m moesweep-reliability "$SCRATCH/small_disk" 2>/dev/null || {
  echo "SKIP: cannot mount a tmpfs here (needs root)"
  exit 77
}
AT_EXIT+=("umount '$SCRATCH/small_disk'")
mount -t tmpfs -o size=2m moesweep-reliability "$SCRATCH/db_disk"
AT_EXIT+=("umount '$SCRATCH/db_disk'")
prepare_brown
# fill DIR LEAVE_BYTES: a filler file that leaves about LEAVE_BYTES free on DIR's file system.
fill() {
  local free
  free=$(( $(stat -f -c '%a * %S' "$1") ))
  head -c $((free - $2)) /dev/zero > "$1/filler"
  echo "$1: $(( $(stat -f -c '%a * %S' "$1") / 1024 )) KiB left free"
}

# --- 1. The checkpoints' disk fills up ------------------------------------------------------------------
torch_sweep full "[1, 4]" "[16384, 24576]" 4096 $'[resources]\nmax_attempts = 2' > sweep.toml
RUNS=4
RUN=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run sweep.toml --threads 1 --heartbeat 0.2)
"${RUN[@]}" --db reference.db --workdir reference-runs > reference.log 2>&1 || { cat reference.log; fail "the reference sweep failed"; }
check_store reference.db $RUNS
SWEEPS=$((SWEEPS + 1))
checkpoint=$(find reference-runs -name 'ckpt-*.pt' -printf '%s\n' | sort -n | tail -n 1)
echo "a checkpoint takes up to $((checkpoint / 1024)) KiB"
# Room for about one and a half checkpoints: the first fits, the next ones do not.
fill small_disk $((checkpoint * 3 / 2))
status=0
"${RUN[@]}" --db full.db --workdir small_disk/runs > full.log 2>&1 || status=$?
FAULTS=$((FAULTS + 1))
expect_eq "exit status with the disk full" "$status" 1
# Which runs still fit (a run's checkpoint can find the room another's failure gave back) varies.
failed=$(q full.db "select count(*) from runs where state = 'failed'")
[ "$failed" -ge 1 ] || fail "no run failed on the full disk"
expect_eq "runs neither done nor failed for want of space" \
  "$(q full.db "select count(*) from runs where state != 'done' and not (state = 'failed'
                and error like 'cannot write %: No space left on device')")" 0
echo "ok: $failed of $RUNS runs failed on the full disk"
echo "ok: the runs' error: $(q full.db "select error from runs where state = 'failed' limit 1")"
grep -q "failed (2/2): cannot write .*No space left on device" full.log || { cat full.log; fail "the job log does not say why"; }
expect_eq "integrity_check" "$(q full.db 'pragma integrity_check')" ok
expect_eq "attempts left open" "$(q full.db "select count(*) from attempts where ended_at is null")" 0
expect_eq "half-written checkpoints left on the full disk" "$(find small_disk -name '*.tmp' | wc -l)" 0
rm small_disk/filler
"${RUN[@]}" --db full.db --workdir small_disk/runs --retry-failed > retry.log 2>&1 || { cat retry.log; fail "the rerun failed"; }
check_store full.db $RUNS
diff <(losses full.db) <(losses reference.db) || fail "losses after the disk filled differ from the reference"
echo "ok: after freeing space, --retry-failed finished every run with the reference losses"
SWEEPS=$((SWEEPS + 1))

# --- 2. The database's disk fills up ----------------------------------------------------------------------
simulate_sweep dbfull "[1, 2, 4]" "[102400, 143360]" 10240 > dbfull.toml
DB_RUN=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run dbfull.toml --db "$SCRATCH/db_disk/sweep.db" --workdir dbfull-runs
        --backend simulate --time-scale 20000 --heartbeat 0.05)
fill db_disk $((160 * 1024))
status=0
timeout 120 "${DB_RUN[@]}" > dbfull.log 2>&1 || status=$?
FAULTS=$((FAULTS + 1))
[ "$status" -ne 0 ] && [ "$status" -ne 124 ] || fail "exit status $status: expected a clean failure"
grep -q "^moesweep: .*sweep.db: database or disk is full" dbfull.log || { cat dbfull.log; fail "no clear error line about the full disk"; }
echo "ok: the job with its database on a full disk ended with exit status $status and: $(grep '^moesweep: ' dbfull.log)"
expect_eq "integrity_check" "$(q db_disk/sweep.db 'pragma integrity_check')" ok
rm db_disk/filler
"${DB_RUN[@]}" > dbfull-rerun.log 2>&1 || { cat dbfull-rerun.log; fail "the rerun after freeing space failed"; }
check_store db_disk/sweep.db 6
echo "ok: after freeing space the same command completed the sweep"
SWEEPS=$((SWEEPS + 1))

# --- 3. The simulate backend's progress files on a full disk ----------------------------------------------
# The same promise without a GPU: a simulated run that cannot write its progress fails with the reason
# instead of running on without a resume point.
simulate_sweep simfull "[1, 2]" "[102400]" 10240 $'[resources]\nmax_attempts = 1' > simfull.toml
SIM_RUN=("${MPIRUN[@]}" -np 2 "$MOESWEEP" run simfull.toml --db simfull.db --workdir small_disk/simfull
         --backend simulate --time-scale 20000 --heartbeat 0.05)
fill small_disk 0
status=0
"${SIM_RUN[@]}" > simfull.log 2>&1 || status=$?
FAULTS=$((FAULTS + 1))
expect_eq "exit status of the simulated sweep on a full disk" "$status" 1
expect_eq "simulated runs failed for want of space" \
  "$(q simfull.db "select count(*) from runs where state = 'failed' and error like 'cannot %: No space left on device'")" 2
expect_eq "integrity_check" "$(q simfull.db 'pragma integrity_check')" ok
rm small_disk/filler
"${SIM_RUN[@]}" --retry-failed > simfull-retry.log 2>&1 || { cat simfull-retry.log; fail "the simulated rerun failed"; }
check_store simfull.db 2
echo "ok: after freeing space, --retry-failed finished the simulated runs"
SWEEPS=$((SWEEPS + 1))
