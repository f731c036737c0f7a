#!/usr/bin/env bash
# moesweep submit against stand-in Slurm commands (sbatch, sinfo, squeue, scontrol as small scripts):
# bad input exits 2 with nothing registered (a GPU layout with more training ranks on a node than GPUs
# included), a submit registers the sweep and records the job, a second submit while the job is queued
# or running is refused (exit 2) and submits nothing, and the rendered batch script itself, run by bash,
# forwards USR1 to the ranks and requeues the job when `moesweep run` exits 75. (Slurm's silences:
# submit_outcomes.sh.)
source "$MOESWEEP_SOURCE_DIR/tests/integration/lib.sh"

FAKE=$SCRATCH/fake-slurm
mkdir -p "$FAKE/bin" "$SCRATCH/empty"
echo 1000 > "$FAKE/last_id"
cat > "$FAKE/bin/sbatch" <<EOF
#!/usr/bin/env bash
[ -z "\${FAKE_SBATCH_ERROR:-}" ] || { echo "sbatch: error: \$FAKE_SBATCH_ERROR" >&2; exit 1; }
id=\$((\$(cat $FAKE/last_id) + 1)); echo \$id > $FAKE/last_id
cat > $FAKE/job.\$id.sbatch
echo "\$*" > $FAKE/job.\$id.args
echo PENDING > $FAKE/state.\$id
echo "\$id"
EOF
cat > "$FAKE/bin/sinfo" <<'EOF'
#!/usr/bin/env bash
printf 'debug\ngpu\ngpu\n'
EOF
cat > "$FAKE/bin/squeue" <<EOF
#!/usr/bin/env bash
id=\${2#--jobs=}
[ -f $FAKE/state.\$id ] || { echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; }
cat $FAKE/state.\$id
EOF
# Records what changes the job (requeue); queries (show config, show hostnames) answer nothing.
cat > "$FAKE/bin/scontrol" <<EOF
#!/usr/bin/env bash
[ "\$1" = show ] || echo "\$*" >> $FAKE/scontrol.calls
EOF
chmod +x "$FAKE"/bin/*
export PATH="$FAKE/bin:$PATH"

simulate_sweep cli "[1, 2, 4]" "[102400, 112640]" 10240 > sweep.toml
SIM=(--run-arg=--backend --run-arg=simulate --run-arg=--time-scale --run-arg=50000 --run-arg=--heartbeat --run-arg=0.2)

expect_status() {  # what expected_status command...
  local what=$1 expected=$2 status=0
  shift 2
  "$@" >out.txt 2>err.txt || status=$?
  [ "$status" == "$expected" ] || { cat out.txt err.txt; fail "$what: exit status $status, expected $expected"; }
  echo "ok: $what exits $expected: $(head -c 300 err.txt)"
}
nothing_registered() {
  [ ! -e sweep.db ] || fail "$1: the database was created"
  [ "$(cat "$FAKE/last_id")" == 1000 ] || fail "$1: something was submitted"
}

# --- bad input: exit 2, one line, no database, no job ---------------------------------------------
sed 's/^lr = 0.003/lr = 0.003\ntokns = 5/' sweep.toml > bad.toml
expect_status "a bad sweep" 2 "$MOESWEEP" submit bad.toml --db sweep.db
grep -q "tokns" err.txt || fail "the error does not name the key"
nothing_registered "a bad sweep"
expect_status "no sbatch on the PATH" 2 env PATH="$SCRATCH/empty" "$MOESWEEP" submit sweep.toml --db sweep.db
grep -q "sbatch is not on the PATH" err.txt || fail "the error does not say sbatch is missing"
nothing_registered "no sbatch"
expect_status "a partition Slurm lacks" 2 "$MOESWEEP" submit sweep.toml --db sweep.db --partition nosuch
grep -q "no partition 'nosuch' (it has: debug, gpu)" err.txt || fail "the error does not list the partitions"
nothing_registered "a partition Slurm lacks"
expect_status "a time within the signal margin" 2 "$MOESWEEP" submit sweep.toml --db sweep.db --time 00:04:00
grep -q "signal margin" err.txt || fail "the error does not mention the margin"
nothing_registered "a short time"
expect_status "a malformed time" 2 "$MOESWEEP" submit sweep.toml --db sweep.db --time 1h
nothing_registered "a malformed time"
expect_status "an account sbatch refuses" 2 \
  env FAKE_SBATCH_ERROR="Invalid account or account/partition combination specified" "$MOESWEEP" submit sweep.toml --db sweep.db --account nope
grep -q "sbatch refused the job: sbatch: error: Invalid account" err.txt || fail "sbatch's reason is lost"
[ ! -e sweep.db ] || fail "an account sbatch refuses: the database was created"

# --- --dry-run prints the script and touches nothing ------------------------------------------------
expect_status "--dry-run" 0 "$MOESWEEP" submit sweep.toml --db sweep.db --dry-run --time 01:00:00 --partition nosuch
grep -q '^#SBATCH --requeue$' out.txt || fail "--dry-run printed no script"
grep -q '^#SBATCH --signal=B:USR1@300$' out.txt || fail "no signal line"
bash -n out.txt || fail "the rendered script is not valid bash"
nothing_registered "--dry-run"

# --- GPU layouts: rank 0 coordinates on the first node; every other rank needs a GPU of its own --------
expect_status "the README's layout on 2 nodes" 2 "$MOESWEEP" submit sweep.toml --db sweep.db --dry-run \
  --nodes 2 --ranks-per-node 9 --gpus-per-node 8
[ "$(wc -l < err.txt)" == 1 ] || fail "the refusal is not one line"
grep -q "every node but the first would have 9 training ranks for 8 GPUs" err.txt || fail "the refusal does not say why"
[ ! -s out.txt ] || fail "a refused layout printed a script"
expect_status "the default GPU layout on 2 nodes" 0 "$MOESWEEP" submit sweep.toml --db sweep.db --dry-run \
  --nodes 2 --gpus-per-node 8
expect_eq "its task lines" "$(grep -E '^#SBATCH --(nodes|ntasks|ntasks-per-node|gpus-per-node)=' out.txt | paste -sd' ' -)" \
  "#SBATCH --nodes=2 #SBATCH --ntasks=17 #SBATCH --ntasks-per-node=9 #SBATCH --gpus-per-node=8"
grep -q -- "--device cuda --gpus-per-node 8" out.txt || fail "the runs are not told their GPUs"
expect_status "1 node, 9 ranks, 8 GPUs" 0 "$MOESWEEP" submit sweep.toml --db sweep.db --dry-run \
  --nodes 1 --ranks-per-node 9 --gpus-per-node 8
expect_eq "its task lines" "$(grep -E '^#SBATCH --(nodes|ntasks|ntasks-per-node|gpus-per-node)=' out.txt | paste -sd' ' -)" \
  "#SBATCH --nodes=1 #SBATCH --ntasks-per-node=9 #SBATCH --gpus-per-node=8"
nothing_registered "GPU layouts"

# --- a submit registers the sweep and records the job ----------------------------------------------
expect_status "submit" 0 "$MOESWEEP" submit sweep.toml --db sweep.db --ranks-per-node 3 --time 00:30:00 \
  --partition debug --launcher mpirun "${SIM[@]}"
expect_eq "printed job id" "$(cat out.txt)" 1001
expect_eq "sbatch arguments" "$(cat "$FAKE/job.1001.args")" "--parsable"
expect_eq "recorded job" "$(q sweep.db "select slurm_job_id from sweeps where name='cli'")" 1001
expect_eq "registered runs" "$(q sweep.db "select count(*) from runs where state='pending'")" 6
grep -q '^#SBATCH --ntasks-per-node=3$' "$FAKE/job.1001.sbatch" || fail "layout missing"
grep -q '^#SBATCH --partition=debug$' "$FAKE/job.1001.sbatch" || fail "partition missing"

# --- one job per sweep: refused while queued or running; --force overrides; a finished job does not count
expect_status "a second submit while pending" 2 "$MOESWEEP" submit sweep.toml --db sweep.db
grep -q "sweep 'cli' is already submitted as Slurm job 1001 (PENDING); not submitting it again" err.txt ||
  fail "no 'already submitted' message"
[ "$(wc -l < err.txt)" == 1 ] || fail "the refusal is not one line"
[ ! -s out.txt ] || fail "a refused submit printed a job id"
echo RUNNING > "$FAKE/state.1001"
expect_status "a second submit while running" 2 "$MOESWEEP" submit sweep.toml --db sweep.db
expect_eq "jobs submitted" "$(cat "$FAKE/last_id")" 1001
expect_status "status" 0 "$MOESWEEP" status --db sweep.db
grep -q "(Slurm job 1001: RUNNING)" out.txt || { cat out.txt; fail "status does not show the job's state"; }
expect_status "status without Slurm" 0 env PATH="$SCRATCH/empty" "$MOESWEEP" status --db sweep.db
grep -q "(Slurm job 1001)" out.txt || { cat out.txt; fail "status without squeue"; }
expect_status "--force" 0 "$MOESWEEP" submit sweep.toml --db sweep.db --force
expect_eq "forced job id" "$(cat out.txt)" 1002
rm "$FAKE/state.1002"  # gone from the queue (and no sacct here)
expect_status "a submit after the job ended" 0 "$MOESWEEP" submit sweep.toml --db sweep.db --launcher mpirun "${SIM[@]}"
expect_eq "new job id" "$(cat out.txt)" 1003
expect_eq "runs after three submits" "$(q sweep.db "select count(*) from runs")" 6

# --- the batch script: USR1 reaches the ranks, exit 75 requeues the job ----------------------------
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SLURM_JOB_ID=1003 MOESWEEP_LAUNCH_ARGS="-np 3 --oversubscribe --bind-to none" \
  bash "$FAKE/job.1003.sbatch" >job.log 2>&1 &
job=$!
wait_for_running sweep.db 2 15 || { cat job.log; fail "the batch script's sweep never got going"; }
kill -USR1 "$job"
status=0
wait "$job" || status=$?
expect_eq "batch script's exit status after USR1 and a requeue" "$status" 0
grep -q "USR1 forwarded" job.log || { cat job.log; fail "USR1 was not forwarded"; }
expect_eq "scontrol calls" "$(cat "$FAKE/scontrol.calls")" "requeue 1003"
expect_eq "preempted runs" "$(q sweep.db "select count(*) from runs where state='preempted'")" 2
expect_eq "open attempts" "$(q sweep.db "select count(*) from attempts where ended_at is null")" 0
