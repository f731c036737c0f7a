#!/bin/sh
# fit_fails_cleanly.sh STATUS PATTERN COMMAND...: runs `COMMAND --out DIR` (a `moesweep fit`) and passes
# when it exits with STATUS, prints exactly one "moesweep:" line on stderr and that line matches PATTERN,
# prints nothing on stdout, and leaves no fit.toml or report.md behind: a failed fit never writes a
# report that looks valid.
expected=$1
pattern=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$@" --out "$work/fit" >"$work/stdout" 2>"$work/stderr"
status=$?
cat "$work/stderr" >&2
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
[ "$status" -eq "$expected" ] || fail "exit status $status, expected $expected"
lines=$(grep -c '^moesweep:' "$work/stderr")
[ "$lines" -eq 1 ] || fail "$lines lines start with 'moesweep:', expected one"
grep -q "^moesweep: .*$pattern" "$work/stderr" || fail "the moesweep: line does not match '$pattern'"
[ ! -s "$work/stdout" ] || fail "stdout is not empty: $(cat "$work/stdout")"
for file in fit.toml report.md; do
  [ ! -e "$work/fit/$file" ] || fail "$file was written"
done
echo "ok: exit $status, one line, nothing written"
