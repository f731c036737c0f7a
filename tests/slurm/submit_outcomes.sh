#!/usr/bin/env bash
# moesweep submit when Slurm does not answer (issue 15, case 4), against stand-in Slurm commands:
#   - an sbatch that queues the job but then fails with "Socket timed out" is an unknown outcome: the
#     sweep is registered, the unknown submission recorded, and the exit status is 1 with one line;
#   - while squeue times out and sacct fails, two more submits of the same sweep are refused (exit 2,
#     one line each) and Slurm still holds one job; --force submits a second one;
#   - once squeue answers, the unknown outcome is resolved by the job's name to the job it queued
#     (recorded as queued) and the submit is still refused while that job is pending; with no job of
#     that name in the queue, the submit goes ahead;
#   - a recorded job whose state Slurm cannot tell (squeue times out, sacct fails) blocks too, and a
#     job squeue no longer lists does not (squeue answered, even without sacct);
#   - a definite refusal ("Invalid account") exits 2 and records nothing.
source "$MOESWEEP_SOURCE_DIR/tests/integration/lib.sh"

FAKE=$SCRATCH/fake-slurm
mkdir -p "$FAKE/bin"
echo 1000 > "$FAKE/last_id"
: > "$FAKE/jobs"  # one line per job Slurm holds: "<id> <job name> <state>"
# sbatch: queues the job, then fails as a busy controller does if $FAKE/timeouts counts down from > 0;
# with $FAKE/lost counting down, fails the same way without queueing; FAKE_SBATCH_ERROR refuses.
cat > "$FAKE/bin/sbatch" <<EOF
#!/usr/bin/env bash
[ -z "\${FAKE_SBATCH_ERROR:-}" ] || { echo "sbatch: error: \$FAKE_SBATCH_ERROR" >&2; exit 1; }
script=\$(cat)
name=\$(sed -n 's/^#SBATCH --job-name=//p' <<< "\$script")
countdown() { local n; n=\$(cat "$FAKE/\$1" 2>/dev/null || echo 0); [ "\$n" -gt 0 ] && echo \$((n - 1)) > "$FAKE/\$1"; }
timeout() { echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2; exit 1; }
countdown lost && timeout
id=\$((\$(cat $FAKE/last_id) + 1)); echo \$id > $FAKE/last_id
echo "\$id \$name PENDING" >> $FAKE/jobs
countdown timeouts && timeout
echo "\$id"
EOF
# squeue: times out while $FAKE/squeue_down exists; else answers --jobs=ID and --name=NAME from the jobs.
cat > "$FAKE/bin/squeue" <<EOF
#!/usr/bin/env bash
echo "\$*" >> $FAKE/squeue.calls
[ ! -e $FAKE/squeue_down ] || { echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1; }
for a in "\$@"; do
  case "\$a" in
    --jobs=*) id=\${a#--jobs=}
      line=\$(awk -v id="\$id" '\$1 == id' $FAKE/jobs)
      [ -n "\$line" ] || { echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; }
      echo "\${line##* }"; exit 0 ;;
    --name=*) awk -v name="\${a#--name=}" '\$2 == name { print \$1, \$3 }' $FAKE/jobs; exit 0 ;;
  esac
done
echo "squeue stand-in: unexpected arguments \$*" >&2; exit 1
EOF
cat > "$FAKE/bin/sacct" <<'EOF'
#!/usr/bin/env bash
echo "sacct: error: Problem talking to the database: Connection refused" >&2
exit 1
EOF
cat > "$FAKE/bin/sinfo" <<'EOF'
#!/usr/bin/env bash
echo debug
EOF
chmod +x "$FAKE"/bin/*
export PATH="$FAKE/bin:$PATH"

SMOKE=$MOESWEEP_SOURCE_DIR/sweeps/smoke.toml
expect_status() {  # what expected_status command...
  local what=$1 expected=$2 status=0
  shift 2
  "$@" >out.txt 2>err.txt || status=$?
  [ "$status" == "$expected" ] || { cat out.txt err.txt; fail "$what: exit status $status, expected $expected"; }
  echo "ok: $what exits $expected: $(head -c 400 err.txt)"
}
one_line() { [ "$(wc -l < err.txt)" == 1 ] || { cat err.txt; fail "$1: stderr is not one line"; }; }
jobs_held() { wc -l < "$FAKE/jobs"; }
submissions() { q "$1" "select b.outcome || ':' || b.job_id from submissions b join sweeps w on w.id = b.sweep_id where w.name = '${2:-smoke}' order by b.id" | paste -sd' ' -; }

# --- the issue's input: sbatch times out once (after queueing), squeue times out, sacct fails ---------
echo 1 > "$FAKE/timeouts"
touch "$FAKE/squeue_down"
expect_status "submit 1 (sbatch times out after queueing)" 1 "$MOESWEEP" submit "$SMOKE" --db smoke.db
one_line "submit 1"
grep -q "sweep 'smoke' (sbatch: error: Batch job submission failed: Socket timed out on send/recv operation): the job may or may not be queued" err.txt ||
  fail "submit 1 does not say the outcome is unknown"
grep -q "squeue --me --name moesweep-smoke" err.txt || fail "submit 1 does not say how to check"
[ ! -s out.txt ] || fail "submit 1 printed a job id: $(cat out.txt)"
expect_eq "jobs Slurm holds after submit 1" "$(jobs_held)" 1
expect_eq "submissions after submit 1" "$(submissions smoke.db)" "unknown:"
expect_eq "unknown submission's detail" "$(q smoke.db "select detail from submissions")" \
  "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
expect_eq "recorded job id" "$(q smoke.db "select slurm_job_id from sweeps where name='smoke'")" ""
expect_eq "registered runs" "$(q smoke.db "select count(*) from runs")" 4
for n in 2 3; do
  expect_status "submit $n (squeue times out, sacct fails)" 2 "$MOESWEEP" submit "$SMOKE" --db smoke.db
  one_line "submit $n"
  grep -q "sweep 'smoke' may already be queued: an unknown sbatch outcome at 20[0-9-]*T[0-9:.]*Z" err.txt ||
    fail "submit $n does not name the unknown outcome"
  grep -q "squeue cannot say (squeue: slurm_load_jobs error: Socket timed out" err.txt || fail "submit $n: no reason"
  grep -q -- "--force submits anyway" err.txt || fail "submit $n does not mention --force"
done
expect_eq "jobs Slurm holds after three submits" "$(jobs_held)" 1
expect_eq "submissions after three submits" "$(submissions smoke.db)" "unknown:"
cp smoke.db forced.db  # for --force, below, in the state three submits left

# --- squeue answers again: the unknown outcome resolves by name to the job it queued ------------------
rm "$FAKE/squeue_down"
: > "$FAKE/squeue.calls"
expect_status "submit once squeue answers" 2 "$MOESWEEP" submit "$SMOKE" --db smoke.db
one_line "resolved by name"
grep -q "sweep 'smoke' is already submitted as Slurm job 1001 (PENDING), found by its name after an unknown sbatch outcome at" err.txt ||
  fail "the unknown outcome is not resolved to job 1001"
grep -q -- "--name=moesweep-smoke" "$FAKE/squeue.calls" || fail "squeue was not asked by name"
grep -q -- "--user=$(id -un)" "$FAKE/squeue.calls" || fail "squeue was not asked for this user's jobs"
expect_eq "submissions after the lookup" "$(submissions smoke.db)" "unknown: queued:1001"
expect_eq "recorded job id after the lookup" "$(q smoke.db "select slurm_job_id from sweeps where name='smoke'")" 1001
expect_status "submit again (job 1001 pending)" 2 "$MOESWEEP" submit "$SMOKE" --db smoke.db
one_line "known job"
grep -q "sweep 'smoke' is already submitted as Slurm job 1001 (PENDING); not submitting it again (check with \`squeue --jobs 1001\`; --force submits anyway)" err.txt ||
  fail "a pending job does not block"
expect_eq "jobs Slurm holds" "$(jobs_held)" 1

# --- --force submits anyway (the lease in `moesweep run` keeps the two jobs from running it at once) --
touch "$FAKE/squeue_down"
expect_status "submit --force (squeue times out, sacct fails)" 0 "$MOESWEEP" submit "$SMOKE" --db forced.db --force
grep -q "moesweep: --force: submitting although sweep 'smoke' may already be queued" err.txt || fail "--force is silent"
expect_eq "forced job id" "$(cat out.txt)" 1002
expect_eq "jobs Slurm holds after --force" "$(jobs_held)" 2
expect_eq "submissions after --force" "$(submissions forced.db)" "unknown: queued:1002"
expect_eq "recorded job id after --force" "$(q forced.db "select slurm_job_id from sweeps where name='smoke'")" 1002

# --- a recorded job whose state Slurm cannot tell blocks as well --------------------------------------
expect_status "submit while job 1002's state is unknown" 2 "$MOESWEEP" submit "$SMOKE" --db forced.db
one_line "unknown job state"
grep -q "sweep 'smoke' may still have Slurm job 1002 queued or running: Slurm cannot say (squeue: .*Socket timed out.*; sacct: .*Connection refused)" err.txt ||
  fail "an unknown job state is not said to be unknown"
rm "$FAKE/squeue_down"

# --- an unknown outcome that queued nothing: no job of that name, so the submit goes ahead ------------
sed -e 's/^name = "smoke"/name = "smoke-lost"/' "$SMOKE" > lost.toml
grep -q '^name = "smoke-lost"' lost.toml || fail "could not rename the sweep"
echo 1 > "$FAKE/lost"
expect_status "submit (sbatch times out, nothing queued)" 1 "$MOESWEEP" submit lost.toml --db lost.db
expect_eq "jobs Slurm holds" "$(jobs_held)" 2
expect_status "submit once squeue lists no job of that name" 0 "$MOESWEEP" submit lost.toml --db lost.db
expect_eq "job id" "$(cat out.txt)" 1003
expect_eq "submissions of smoke-lost" "$(submissions lost.db smoke-lost)" "unknown: queued:1003"

# --- jobs that have left the queue do not block (squeue answered "Invalid job id", sacct fails) -------
sed -i '/^1003 /d' "$FAKE/jobs"
echo 1 > "$FAKE/lost"
expect_status "submit after job 1003 left the queue (sbatch times out again)" 1 "$MOESWEEP" submit lost.toml --db lost.db
echo 1 > "$FAKE/timeouts"  # queued this time, then timed out
sed -i '/^1003 /d' "$FAKE/jobs"
expect_status "submit (unknown, no job of that name)" 1 "$MOESWEEP" submit lost.toml --db lost.db
expect_eq "jobs Slurm holds" "$(jobs_held)" 3
sed -i 's/^1004 \(.*\) PENDING$/1004 \1 COMPLETED/' "$FAKE/jobs"
expect_status "submit after the unknown job completed" 0 "$MOESWEEP" submit lost.toml --db lost.db
grep -q "queued sweep 'smoke-lost' as Slurm job 1004 (found by its name), which has ended (COMPLETED); recorded" err.txt ||
  fail "the ended job is not recorded"
expect_eq "job id" "$(cat out.txt)" 1005
expect_eq "submissions of smoke-lost" "$(submissions lost.db smoke-lost)" \
  "unknown: queued:1003 unknown: unknown: queued:1004 queued:1005"
sed -i '/^1005 /d' "$FAKE/jobs"
expect_status "submit after job 1005 left the queue (sacct fails)" 0 "$MOESWEEP" submit lost.toml --db lost.db
expect_eq "job id" "$(cat out.txt)" 1006

# --- a definite refusal records nothing ---------------------------------------------------------------
sed -i 's/^\(100[12] .*\) PENDING$/\1 COMPLETED/' "$FAKE/jobs"
before=$(q smoke.db "select count(*) from submissions")
expect_status "an account sbatch refuses" 2 env FAKE_SBATCH_ERROR="Batch job submission failed: Invalid account or account/partition combination specified" \
  "$MOESWEEP" submit "$SMOKE" --db smoke.db --account nope
one_line "refusal"
grep -q "sbatch refused the job: sbatch: error: Batch job submission failed: Invalid account" err.txt || fail "sbatch's reason is lost"
expect_eq "submissions after a refusal" "$(q smoke.db "select count(*) from submissions")" "$before"
expect_eq "recorded job id after a refusal" "$(q smoke.db "select slurm_job_id from sweeps where name='smoke'")" 1001
expect_status "a refusal without a database" 2 env FAKE_SBATCH_ERROR="Batch job submission failed: Invalid qos specification" \
  "$MOESWEEP" submit "$SMOKE" --db fresh.db
[ ! -e fresh.db ] || fail "a refusal created the database"
expect_eq "jobs Slurm holds at the end" "$(jobs_held)" 4
