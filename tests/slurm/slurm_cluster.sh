#!/usr/bin/env bash
# A real one-node Slurm cluster (Debian's slurm-wlm and munge), started from a scratch directory with
# its own ports and munge socket, then:
#   1. moesweep submit sweeps/smoke.toml; every run ends done;
#   2. a longer copy of the smoke sweep with a fresh database, submitted through an sbatch that queues
#      the job and then fails as a busy controller's does ("Socket timed out"): the outcome is recorded
#      as unknown, and the next submit finds the job by its name with the real squeue, records it and
#      refuses; then `scontrol requeue` while a run is in flight; the requeued job finishes the sweep,
#      every run done exactly once, the interrupted run resumed from its checkpoint;
#   3. every daemon it started is stopped by its recorded pid, also when an assertion fails.
# Needs root (the recipe in the project's notes); exits 77 (skipped) without root or the packages.
source "$MOESWEEP_SOURCE_DIR/tests/integration/lib.sh"

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "the one-node Slurm cluster needs root"
export PATH="$PATH:/usr/sbin:/sbin"
for program in munged slurmctld slurmd sbatch sinfo squeue scontrol scancel runuser; do
  command -v "$program" >/dev/null || skip "$program is not installed (setup.sh installs slurm-wlm and munge)"
done
getent passwd munge >/dev/null && [ -r /etc/munge/munge.key ] || skip "munge has no key"

S=$SCRATCH/slurm
chmod 755 "$SCRATCH"
mkdir -p "$S/munge" "$S/state" "$S/spool" "$S/log"
chown munge:munge "$S/munge"
chmod 755 "$S/munge"

PIDFILES=("$S/slurmd.pid" "$S/slurmctld.pid" "$S/munge/munged.pid")
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop_cluster() {
  local status=$?
  if [ -f "$S/slurmctld.pid" ]; then
    scancel --full --quiet --user=root 2>/dev/null || true   # our cluster's jobs only (its own SLURM_CONF)
    for _ in $(seq 50); do [ -z "$(squeue --noheader 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  if [ "$status" -ne 0 ]; then
    echo "--- slurmctld log (tail)"; tail -n 30 "$S/log/ctld.log" 2>/dev/null || true
    echo "--- slurmd log (tail)"; tail -n 30 "$S/log/d.log" 2>/dev/null || true
    for f in "$SCRATCH"/*.out; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
  fi
  local pid
  for f in "${PIDFILES[@]}"; do
    pid=$(cat "$f" 2>/dev/null) || continue
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    ! alive "$pid" || kill -9 "$pid" 2>/dev/null || true
  done
  cleanup
  exit "$status"
}
trap stop_cluster EXIT

# Ports of our own, away from a site's 6817/6818 and from another copy of this test.
base=$((20000 + ($$ % 2000) * 2))
H=$(hostname -s)
cat > "$S/slurm.conf" <<CONF
ClusterName=moesweeptest
SlurmctldHost=$H
SlurmUser=root
SlurmctldPort=$base
SlurmdPort=$((base + 1))
AuthType=auth/munge
CredType=cred/munge
# Our own munged; cred_expire also sets how long a requeued job waits before it may start again.
AuthInfo=socket=$S/munge/munge.socket,cred_expire=10
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/ctld.log
SlurmdLogFile=$S/log/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobRequeue=1
NodeName=$H CPUs=$(nproc) RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$S/slurm.conf

runuser -u munge -- munged --socket="$S/munge/munge.socket" --pid-file="$S/munge/munged.pid" \
  --log-file="$S/munge/munged.log" --seed-file="$S/munge/seed" || fail "munged did not start"
for _ in $(seq 50); do [ -S "$S/munge/munge.socket" ] && break; sleep 0.1; done
slurmctld || fail "slurmctld did not start"
slurmd || fail "slurmd did not start"
for _ in $(seq 150); do
  [ "$(sinfo --noheader --format=%T 2>/dev/null)" == idle ] && break
  sleep 0.2
done
expect_eq "node state" "$(sinfo --noheader --format=%T)" idle

# The job inherits this environment (sbatch --export=ALL): what running as root on a 2-core machine
# needs from Open MPI, set here rather than in what users get.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_hwloc_base_binding_policy=none
RANKS=$(($(nproc) < 2 ? 1 : 2))
prepare_brown

wait_done() {  # db runs seconds
  for _ in $(seq $(($3 * 2))); do
    [ "$(q "$1" "select count(*) from runs where state='done'" 2>/dev/null || echo 0)" == "$2" ] && return 0
    sleep 0.5
  done
  "$MOESWEEP" status --db "$1" || true
  fail "$1: not every run done after $3 s"
}
wait_job_gone() {  # job seconds
  for _ in $(seq $(($2 * 5))); do
    case "$(squeue --noheader --jobs="$1" --format=%T 2>/dev/null)" in "" | COMPLETED) return 0 ;; esac
    sleep 0.2
  done
  fail "job $1 still in the queue after $2 s"
}

# --- 1. the smoke sweep, submitted and finished -----------------------------------------------------
job=$("$MOESWEEP" submit "$MOESWEEP_SOURCE_DIR/sweeps/smoke.toml" --db smoke.db --ranks-per-node "$RANKS" \
  --time 00:10:00 --partition debug) || fail "submit failed"
echo "submitted job $job"
expect_eq "recorded job" "$(q smoke.db "select slurm_job_id from sweeps where name='smoke'")" "$job"
status=0
"$MOESWEEP" submit "$MOESWEEP_SOURCE_DIR/sweeps/smoke.toml" --db smoke.db --ranks-per-node "$RANKS" \
  >again.out 2>again.err || status=$?
expect_eq "a second submit's exit status (refused while the job is queued or running)" "$status" 2
grep -q "already submitted as Slurm job $job" again.err || { cat again.err; fail "the second submit did not say so"; }
wait_done smoke.db 4 150
wait_job_gone "$job" 30
expect_eq "smoke: completed attempts" "$(q smoke.db "select count(*) from attempts where exit_reason='completed'")" 4
"$MOESWEEP" status --db smoke.db | head -3
status_line=$("$MOESWEEP" status --db smoke.db | head -1)
[[ "$status_line" == *"(Slurm job $job: COMPLETED)"* ]] ||
  fail "status does not show the job: $status_line"

# --- 2. requeue while runs are in flight ------------------------------------------------------------
sed -e 's/^name = "smoke"/name = "smoke-long"/' -e 's/^tokens = .*/tokens = [163_840, 196_608]/' \
  "$MOESWEEP_SOURCE_DIR/sweeps/smoke.toml" > long.toml
grep -q '^tokens = \[163_840' long.toml || fail "could not make the longer sweep"
mkdir -p timeout-bin  # the real sbatch, then the error a busy controller's timeout gives
printf '#!/usr/bin/env bash\n%q "$@" >/dev/null || exit\n%s\nexit 1\n' "$(command -v sbatch)" \
  'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2' \
  > timeout-bin/sbatch
chmod +x timeout-bin/sbatch
status=0
PATH="$SCRATCH/timeout-bin:$PATH" "$MOESWEEP" submit long.toml --db long.db --ranks-per-node "$RANKS" \
  --time 00:10:00 --run-arg=--heartbeat --run-arg=0.2 >submit.out 2>submit.err || status=$?
expect_eq "submit through a timing-out sbatch: exit status" "$status" 1
grep -q "the job may or may not be queued" submit.err || { cat submit.err; fail "the unknown outcome is not said"; }
expect_eq "recorded outcome" "$(q long.db "select outcome || ':' || job_id from submissions")" "unknown:"
status=0
"$MOESWEEP" submit long.toml --db long.db --ranks-per-node "$RANKS" >again.out 2>again.err || status=$?
expect_eq "the next submit's exit status (the job is found by its name)" "$status" 2
grep -q "found by its name after an unknown sbatch outcome" again.err || { cat again.err; fail "the job was not found by name"; }
job=$(q long.db "select slurm_job_id from sweeps where name='smoke-long'")
expect_eq "recorded outcomes" "$(q long.db "select outcome || ':' || job_id from submissions" | paste -sd' ' -)" \
  "unknown: queued:$job"
expect_eq "jobs of the sweep in the queue" "$(squeue --noheader --name=moesweep-smoke-long --format=%i)" "$job"
echo "submitted job $job (found by its name)"
for _ in $(seq 600); do  # a run past its first checkpoint (every 8 steps)
  mid=$(q long.db "select count(*) from runs where state='running' and step >= 20" 2>/dev/null || echo 0)
  [ "$mid" -ge 1 ] && break
  sleep 0.1
done
[ "${mid:-0}" -ge 1 ] || fail "no run got going"
scontrol requeue "$job" || fail "scontrol requeue failed"
echo "requeued job $job with a run in flight"
wait_done long.db 4 150
wait_job_gone "$job" 30
expect_eq "job restarts" "$(scontrol show job "$job" | grep -o 'Restarts=[0-9]*')" "Restarts=1"
expect_eq "completed attempts" "$(q long.db "select count(*) from attempts where exit_reason='completed'")" 4
expect_eq "runs with two completed attempts" \
  "$(q long.db "select count(*) from (select run_id from attempts where exit_reason='completed' group by run_id having count(*) > 1)")" 0
interrupted=$(q long.db "select count(*) from attempts where exit_reason <> 'completed'")
[ "$interrupted" -ge 1 ] || fail "no attempt was interrupted by the requeue"
# Each interrupted attempt's successor starts where the checkpoint left it, not at step 1.
resumed=$(q long.db "select (select min(m.step) from metrics m where m.attempt_id = nxt.id) from attempts a join attempts nxt on nxt.id = (select min(id) from attempts n where n.run_id = a.run_id and n.id > a.id) where a.exit_reason <> 'completed'")
expect_eq "successors of interrupted attempts" "$(echo "$resumed" | grep -c .)" "$interrupted"
for first_step in $resumed; do
  [ "$first_step" -gt 8 ] || fail "an interrupted run restarted at step $first_step"
done
echo "ok: interrupted runs resumed at steps: $(echo $resumed)"
grep -q "restart 1" moesweep-smoke-long-"$job".out || fail "the log does not show the restarted job"
