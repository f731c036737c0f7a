# Helpers for the command backend's integration tests (sourced after lib.sh).
PYTHON=/usr/bin/python3  # Debian's python3-torch; a pyenv or venv python3 first on the PATH may lack torch
EXAMPLE="$MOESWEEP_SOURCE_DIR/examples/command-backend"

# The example sweep (examples/command-backend/sweep.toml) with absolute paths, so it runs from the
# scratch directory; ARGS are lines of sed script applied after that (another name, grid, extra flags).
#   example_sweep [SED_SCRIPT...] > sweep.toml
example_sweep() {
  local script=("-e" "s#\"python3\", \"examples/command-backend/train.py\"#\"$PYTHON\", \"$EXAMPLE/train.py\"#")
  for s in "$@"; do script+=("-e" "$s"); done
  sed "${script[@]}" "$EXAMPLE/sweep.toml"
}
# A sed script that adds train.py arguments (a TOML list fragment) after --out {run_dir}.
with_args() { echo "s#\"--out\", \"{run_dir}\"\\]#\"--out\", \"{run_dir}\", $1]#"; }

# The eval loss each attempt's log reports ("done: ... eval loss X") against the store's final_loss,
# per done run, exactly (read through Python's sqlite3: the sqlite3 shell prints at most 16 digits):
# prints the number of runs that agree.
losses_agree() {  # DB WORKDIR
  "$PYTHON" - "$1" "$2" <<'PY'
import glob, re, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
agree = 0
for key, loss in db.execute("select run_key, final_loss from runs where state = 'done'"):
    reported = [float(m) for f in glob.glob(f"{sys.argv[2]}/{key}/attempt-*.log")
                for m in re.findall(r"eval loss (\S+)", open(f).read())]
    if len(reported) == 1 and reported[0] == loss:
        agree += 1
    else:
        print(f"run {key[:12]}: store {loss!r}, logs {reported}", file=sys.stderr)
print(agree)
PY
}
