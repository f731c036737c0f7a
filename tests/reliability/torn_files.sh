#!/usr/bin/env bash
# Torn files: a truncated or corrupt checkpoint, token shard, database WAL or database file is detected.
# moesweep falls back (to the previous checkpoint, to the last intact commit of the WAL) or refuses with
# one clear line; it never trains on garbage: a run that resumes after a fallback ends with the eval
# loss of an uninterrupted run, and a run over a corrupt shard fails before its first step.
source "$(dirname "$0")/lib.sh"
prepare_brown

flip_byte() { printf '\x5a' | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }  # FILE OFFSET
eval_loss() { python3 -c 'import json,sys; print(repr(json.loads(sys.stdin.read().splitlines()[-1])["eval_loss"]))'; }
resumed_from() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["resumed_from_step"])'; }
# expect_refusal WHAT FRAGMENT COMMAND...: exit status 2 and a one-line error containing FRAGMENT.
expect_refusal() {
  local what=$1 fragment=$2 status=0
  shift 2
  "$@" > refusal.out 2> refusal.err || status=$?
  FAULTS=$((FAULTS + 1))
  [ "$status" -eq 2 ] || { cat refusal.err; fail "$what: exit status $status, expected 2"; }
  grep -qF -- "$fragment" refusal.err || { cat refusal.err; fail "$what: the error does not say '$fragment'"; }
  [ "$(grep -v '^moesweep: warning:' refusal.err | grep -c '^moesweep:')" -eq 1 ] &&
    tail -n 1 refusal.err | grep -q '^moesweep:' || { cat refusal.err; fail "$what: not one error line"; }
  echo "ok: $what: $(tail -n 1 refusal.err)"
}

# --- 1. Checkpoints ------------------------------------------------------------------------------------
# 16 steps, a checkpoint every 4; the newest two are kept (steps 12 and 16).
cat > run.toml <<'TOML'
[data]
train = "data/brown-byte/train.bin"
val = "data/brown-byte/val.bin"
[model]
d_model = 32
n_layers = 2
n_heads = 2
experts = 4
seq_len = 64
[train]
tokens = 16384
batch_tokens = 1024
lr = 0.003
warmup_tokens = 2048
eval_tokens = 8192
checkpoint_every_tokens = 4096
TOML
TRAIN=("$MOESWEEP" train run.toml --threads 1 --json)
"${TRAIN[@]}" --checkpoint-dir reference > reference.json 2> reference.err || { cat reference.err; fail "training failed"; }
reference_loss=$(eval_loss < reference.json)
newest=ckpt-000000000016.pt
[ -f "reference/$newest" ] && [ -f reference/ckpt-000000000012.pt ] || fail "expected checkpoints at steps 12 and 16"
echo "reference run: eval loss $reference_loss; checkpoints: $(ls reference)"

# expect_fallback CASE: resuming from CASE's checkpoints warns about the torn newest one, resumes from step
# 12 and ends with the reference loss.
expect_fallback() {
  "${TRAIN[@]}" --checkpoint-dir "$1" --resume > "$1.json" 2> "$1.err" || { cat "$1.err"; fail "$1: resume failed"; }
  FAULTS=$((FAULTS + 1))
  grep -q "is torn or corrupt; falling back to an older one" "$1.err" || { cat "$1.err"; fail "$1: no warning"; }
  expect_eq "$1: resumed from step" "$(resumed_from < "$1.json")" 12
  expect_eq "$1: eval loss" "$(eval_loss < "$1.json")" "$reference_loss"
}
cp -r reference truncated && truncate -s $(( $(stat -c %s "reference/$newest") / 2 )) "truncated/$newest"
expect_fallback truncated
cp -r reference flipped && flip_byte "flipped/$newest" $(( $(stat -c %s "reference/$newest") - 4000 ))
expect_fallback flipped
cp -r reference empty && : > "empty/$newest"
expect_fallback empty
# A write torn before its rename leaves only a .tmp file: never read.
cp -r reference torn_write && head -c 5000 /dev/urandom > "torn_write/ckpt-000000000020.pt.tmp"
"${TRAIN[@]}" --checkpoint-dir torn_write --resume > torn_write.json 2> torn_write.err || fail "torn_write: resume failed"
FAULTS=$((FAULTS + 1))
expect_eq "torn_write: resumed from step" "$(resumed_from < torn_write.json)" 16
expect_eq "torn_write: eval loss" "$(eval_loss < torn_write.json)" "$reference_loss"
cp -r reference all_torn && flip_byte "all_torn/$newest" 100 && truncate -s 1000 all_torn/ckpt-000000000012.pt
expect_refusal "every checkpoint torn" "every checkpoint is torn or corrupt" "${TRAIN[@]}" --checkpoint-dir all_torn --resume
sed 's/^experts = 4/experts = 1/' run.toml > dense.toml
"$MOESWEEP" train dense.toml --threads 1 --checkpoint-dir other_run > /dev/null 2>&1 || fail "training the dense run failed"
expect_refusal "checkpoint of another run" "checkpoint of another run config" \
  "${TRAIN[@]}" --checkpoint-dir other_run --resume

# --- 2. Token shards -------------------------------------------------------------------------------------
shard_case() {  # shard_case NAME: a copy of the prepared shards in shards/NAME
  mkdir -p shards && cp -r data/brown-byte "shards/$1"
  sed "s#data/brown-byte#shards/$1#" run.toml > "shards/$1.toml"
}
size=$(stat -c %s data/brown-byte/train.bin)
shard_case truncated && truncate -s $((size - 1000)) shards/truncated/train.bin
expect_refusal "truncated train shard" "truncated shard" "$MOESWEEP" train shards/truncated.toml --checkpoint-dir ck1
shard_case flipped && flip_byte shards/flipped/train.bin $((size / 2))
expect_refusal "corrupt train shard" "checksum mismatch (the shard is corrupt)" "$MOESWEEP" train shards/flipped.toml --checkpoint-dir ck2
shard_case header && printf 'GARBAGE!' | dd of=shards/header/train.bin bs=1 seek=0 conv=notrunc status=none
expect_refusal "shard with a torn header" "not a moesweep token shard" "$MOESWEEP" train shards/header.toml --checkpoint-dir ck3
shard_case stub && truncate -s 10 shards/stub/train.bin
expect_refusal "shard cut inside its header" "shorter than its 64-byte header" "$MOESWEEP" train shards/stub.toml --checkpoint-dir ck4
shard_case grown && head -c 999 /dev/urandom >> shards/grown/train.bin
expect_refusal "shard with bytes appended" "oversized shard" "$MOESWEEP" train shards/grown.toml --checkpoint-dir ck5
shard_case val && flip_byte shards/val/val.bin $(( $(stat -c %s data/brown-byte/val.bin) / 2 ))
expect_refusal "corrupt validation shard" "checksum mismatch" "$MOESWEEP" train shards/val.toml --checkpoint-dir ck6
for ck in ck1 ck2 ck3 ck4 ck5 ck6; do [ -z "$(ls -A "$ck" 2>/dev/null)" ] || fail "$ck: a refused run wrote a checkpoint"; done
# The same corrupt shard in a sweep: the run fails with the reason, having trained not one step.
torch_sweep corrupt "[4]" "[16384]" 4096 $'[resources]\nmax_attempts = 1' | sed 's#data/brown-byte#shards/flipped#' > corrupt.toml
status=0
"${MPIRUN[@]}" -np 2 "$MOESWEEP" run corrupt.toml --db corrupt.db --workdir corrupt-runs > corrupt.log 2>&1 || status=$?
FAULTS=$((FAULTS + 1))
expect_eq "sweep over a corrupt shard: exit status" "$status" 1
expect_eq "sweep over a corrupt shard: run state" "$(q corrupt.db "select state from runs")" failed
q corrupt.db "select error from runs" | grep -q "shards/flipped/train.bin: checksum mismatch" ||
  fail "the run's error does not name the corrupt shard: $(q corrupt.db "select error from runs")"
expect_eq "sweep over a corrupt shard: metric rows" "$(q corrupt.db "select count(*) from metrics")" 0
[ -z "$(find corrupt-runs -name 'ckpt-*' 2>/dev/null)" ] || fail "a checkpoint was written from a corrupt shard"
echo "ok: the sweep recorded: $(q corrupt.db "select error from runs")"

# --- 3. The database's WAL --------------------------------------------------------------------------------
# A simulated sweep killed with kill -9 leaves committed transactions in sweep.db-wal. A WAL torn at its
# end, corrupt in the middle, with a garbage header, or lost, falls back to its last intact commit (SQLite
# checks every frame's checksum when it recovers the WAL); the same command then completes the sweep.
simulate_sweep wal "[1, 2, 4]" "[102400, 143360]" 10240 > wal.toml
WAL_RUN=("${MPIRUN[@]}" -np 3 "$MOESWEEP" run wal.toml --backend simulate --time-scale 40000 --heartbeat 0.05)
setsid "${WAL_RUN[@]}" --db "$SCRATCH/wal.db" --workdir wal-runs > wal.log 2>&1 &
pid=$!
BACKGROUND+=("$pid")
for _ in $(seq 300); do
  sleep 0.1
  [ "$(q wal.db "select count(*) from runs where state = 'done'" 2>/dev/null || echo 0)" -ge 2 ] && break
done
kill -9 -- "-$pid"
wait "$pid" 2>/dev/null || true
wait_gone "$SCRATCH/wal.db"
wal_size=$(stat -c %s wal.db-wal 2>/dev/null || echo 0)
[ "$wal_size" -gt 10000 ] || fail "the killed sweep left no WAL to tear (size $wal_size)"
echo "killed a simulated sweep: WAL of $wal_size bytes"
wal_case() {  # wal_case NAME: a copy of the killed sweep's database, WAL and checkpoints in wal_NAME/
  mkdir "wal_$1" && cp wal.db "wal_$1/sweep.db" && cp wal.db-wal "wal_$1/sweep.db-wal" && cp -r wal-runs "wal_$1/runs"
}
wal_case intact
intact_metrics=$(q wal_intact/sweep.db "select count(*) from metrics")
wal_case torn && truncate -s $((wal_size - 3000)) wal_torn/sweep.db-wal
wal_case flipped && for offset in $((wal_size / 2)) $((wal_size / 2 + 1)) $((wal_size / 2 + 2)); do
  flip_byte wal_flipped/sweep.db-wal $offset; done
wal_case header && printf 'not a WAL header, not at all' | dd of=wal_header/sweep.db-wal bs=1 seek=0 conv=notrunc status=none
wal_case lost && rm wal_lost/sweep.db-wal
for c in torn flipped header lost; do
  FAULTS=$((FAULTS + 1))
  # A damaged WAL header or a lost WAL leaves the database file as the job's start left it: the schema
  # (checkpointed when the job opened the store), without this job's runs.
  "$MOESWEEP" status --db "wal_$c/sweep.db" > "wal_$c/status.txt" 2>&1 || { cat "wal_$c/status.txt"; fail "wal $c: status failed"; }
  expect_eq "wal $c: integrity_check" "$(q "wal_$c/sweep.db" 'pragma integrity_check')" ok
  registered=$(q "wal_$c/sweep.db" "select count(*) from runs")
  metrics=$(q "wal_$c/sweep.db" "select count(*) from metrics")
  "${WAL_RUN[@]}" --db "$SCRATCH/wal_$c/sweep.db" --workdir "wal_$c/runs" > "wal_$c/restart.log" 2>&1 ||
    { cat "wal_$c/restart.log"; fail "wal $c: the restarted sweep failed"; }
  check_store "wal_$c/sweep.db" 6
  echo "ok: wal $c: the store fell back to a commit with $registered runs registered and $metrics of the" \
    "$intact_metrics metric rows; the restart completed the sweep"
  SWEEPS=$((SWEEPS + 1))
done

# --- 4. The database file itself ---------------------------------------------------------------------------
cp wal_torn/sweep.db broken.db && q broken.db 'pragma wal_checkpoint(truncate)' > /dev/null
printf 'SQLite format 2\0' | dd of=broken.db bs=1 seek=0 conv=notrunc status=none
before=$(sha256sum < broken.db)
expect_refusal "database with a torn header: status" "broken.db: not a moesweep database" "$MOESWEEP" status --db broken.db
expect_refusal "database with a torn header: run" "broken.db: not a moesweep database" \
  "$MOESWEEP" run wal.toml --db broken.db --backend simulate
expect_eq "the refused database is byte-identical" "$(sha256sum < broken.db)" "$before"
