#!/usr/bin/env bash
# Bad input corpus: every malformed file and command line under tests/data/bad/ must end in exit
# status 2 with one clear "moesweep: ..." line on stderr that contains the expected fragment, print
# nothing on stdout, and leave every database it was given byte-identical (and create none).
#   tests/data/bad/*.toml      sweep files; line 1 "# expect: FRAGMENT"; run through run and submit
#                              --dry-run (a line 2 "# commands: ..." may choose others; expand of each
#                              is tests/orchestrator's BadInput.TheCommandLineExitsTwoWithOneLine)
#   tests/data/bad/run/*.toml  run files, the same first line; run through train
#   tests/data/bad/commands.txt  bad command lines (and the malformed CSV files of csv/, through fit):
#                              "STATUS | FRAGMENT | ARGUMENTS"
# Cases run two at a time (MOESWEEP_RELIABILITY_JOBS), each with its own copy of the databases.
source "$(dirname "$0")/lib.sh"
prepare_brown
BAD="$MOESWEEP_SOURCE_DIR/tests/data/bad"

# Fixtures, copied for every case: a finished sweep's database, another program's SQLite file, a moesweep
# database from a newer schema, a text file, and a valid sweep.
mkdir fixtures
simulate_sweep guard "[1, 4]" "[20480]" 10240 > fixtures/sweep.toml
"$MOESWEEP" run fixtures/sweep.toml --db fixtures/db.db --backend simulate --time-scale 100 --workdir guard-runs \
  > guard.log 2>&1 || { cat guard.log; fail "the fixture sweep failed"; }
expect_eq "fixture runs done" "$(q fixtures/db.db "select count(*) from runs where state = 'done'")" 2
q fixtures/otherdb.db "create table notes(id integer primary key, text); insert into notes(text) values ('mine')"
cp fixtures/db.db fixtures/newerdb.db && q fixtures/newerdb.db 'pragma user_version = 99'
echo "just some text" > fixtures/notdb.db
rm -f fixtures/*-wal fixtures/*-shm

# The case list: LABEL <tab> STATUS <tab> FRAGMENT <tab> ARGUMENTS
cases=$SCRATCH/cases.tsv
: > "$cases"
add_file_cases() {  # add_file_cases FILE DEFAULT_COMMANDS
  local file=$1 fragment commands name
  name=${file#"$BAD"/}
  fragment=$(head -n 1 "$file")
  [[ "$fragment" == "# expect: "* ]] && fragment=${fragment#"# expect: "} || fragment="empty file"
  commands=$(sed -n '2s/^# commands: //p' "$file")
  for command in ${commands:-$2}; do
    case $command in
      expand) printf '%s\t2\t%s\texpand %s\n' "$name: expand" "$fragment" "$file" ;;
      run) printf '%s\t2\t%s\trun %s --db {db}\n' "$name: run" "$fragment" "$file" ;;
      submit) printf '%s\t2\t%s\tsubmit %s --db {db} --dry-run\n' "$name: submit --dry-run" "$fragment" "$file" ;;
      train) printf '%s\t2\t%s\ttrain %s --checkpoint-dir {newdb}\n' "$name: train" "$fragment" "$file" ;;
      *) fail "$file: unknown command '$command' on its # commands: line" ;;
    esac >> "$cases"
  done
}
for file in "$BAD"/*.toml; do add_file_cases "$file" "run submit"; done
for file in "$BAD"/run/*.toml; do add_file_cases "$file" "train"; done
line_number=0
while IFS= read -r line; do
  line_number=$((line_number + 1))
  [[ -z "${line// }" || "$line" == "#"* ]] && continue
  IFS='|' read -r status fragment arguments <<< "$line"
  status=$(echo $status) fragment=$(echo "$fragment" | sed 's/^ *//; s/ *$//') arguments=$(echo $arguments)
  [ -n "$status" ] && [ -n "$fragment" ] && [ -n "$arguments" ] || fail "commands.txt:$line_number: expected STATUS | FRAGMENT | ARGUMENTS"
  printf '%s\t%s\t%s\t%s\n' "commands.txt:$line_number: moesweep ${arguments//\{bad\}\//}" "$status" "$fragment" "$arguments" >> "$cases"
done < "$BAD/commands.txt"

# one_case N: runs case N in case-N/ and writes its verdict there.
one_case() {
  local n=$1 label status fragment arguments dir="$SCRATCH/case-$1" actual=0 problems="" f errors
  IFS=$'\t' read -r label status fragment arguments < <(sed -n "${n}p" "$cases")
  cp -r "$SCRATCH/fixtures" "$dir"
  arguments=${arguments//\{bad\}/$BAD}
  for f in db otherdb newerdb notdb newdb; do arguments=${arguments//\{$f\}/$dir/$f.db}; done
  arguments=${arguments//\{sweep\}/$dir/sweep.toml}
  local args
  read -ra args <<< "$arguments"
  "$MOESWEEP" "${args[@]}" > "$dir/out" 2> "$dir/err" || actual=$?
  [ "$actual" -eq "$status" ] || problems+="exit status $actual, expected $status; "
  errors=$(grep -c '^moesweep:' "$dir/err" || true)
  [ "$errors" -eq 1 ] || problems+="$errors error lines, expected one; "
  tail -n 1 "$dir/err" | grep -qF -- "$fragment" || problems+="the last stderr line does not contain '$fragment'; "
  [ "$(grep -vc '^moesweep:' "$dir/err" || true)" -eq 0 ] || problems+="stray lines on stderr; "
  [ -s "$dir/out" ] && problems+="output on stdout; "
  for f in db otherdb newerdb notdb; do
    cmp -s "$SCRATCH/fixtures/$f.db" "$dir/$f.db" || problems+="$f.db changed; "
    [ -s "$dir/$f.db-wal" ] && problems+="$f.db has a WAL now; "
  done
  [ -e "$dir/newdb.db" ] && problems+="it created $dir/newdb.db; "
  if [ -n "$problems" ]; then
    { echo "FAIL: $label: $problems"; sed 's/^/    stderr: /' "$dir/err"; } > "$dir/verdict"
  else
    echo "ok: $label: $(tail -n 1 "$dir/err")" > "$dir/verdict"
  fi
}
export -f one_case
export SCRATCH BAD MOESWEEP cases

total=$(wc -l < "$cases")
seq "$total" | xargs -P "${MOESWEEP_RELIABILITY_JOBS:-2}" -I{} bash -c 'one_case {}'
failures=0
for n in $(seq "$total"); do
  cat "$SCRATCH/case-$n/verdict"
  grep -q '^FAIL' "$SCRATCH/case-$n/verdict" && failures=$((failures + 1))
done
BAD_INPUTS=$total
files=$(ls "$BAD"/*.toml "$BAD"/run/*.toml "$BAD"/csv/* | wc -l)
lines=$(grep -c '|' "$BAD/commands.txt")
NOTE="$files malformed files, $lines bad command lines"
echo "bad_inputs: $total invocations ($NOTE): $failures failed"
[ "$failures" -eq 0 ] || fail "$failures bad inputs were not refused as promised"
