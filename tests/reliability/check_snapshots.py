#!/usr/bin/env python3
"""check_snapshots.py RUNS MIN_READS LOG...: every snapshot the readers of readers.sh took is one committed
state, and each kind of reader took at least MIN_READS of them.

A log holds blocks "=== moesweep STATUS" (then `moesweep status --json` output) and "=== sqlite3 STATUS"
(then `sqlite3 -header ... 'select * from status'`: a header line, then '|'-separated rows). Prints what
it checked; exits 1 on the first half-written run it finds.
"""
import json
import sys

STATES = {"pending", "running", "done", "failed", "diverged", "preempted"}


def check_run(run, where):
    state = run["state"]
    if state not in STATES:
        raise ValueError(f"{where}: state '{state}'")
    if not 0.0 <= float(run["progress"]) <= 1.0:
        raise ValueError(f"{where}: progress {run['progress']}")
    if state == "done" and (run["final_loss"] in (None, "") or float(run["progress"]) != 1.0):
        raise ValueError(f"{where}: a done run without its final loss: {run}")
    if state == "running" and (run["rank"] in (None, "") or int(run["attempts"]) < 1):
        raise ValueError(f"{where}: a running run without its attempt: {run}")
    if state in ("failed", "diverged") and not run["error"]:
        raise ValueError(f"{where}: a {state} run without its error: {run}")


def check(runs_expected, path, kind, body, where):
    if kind == "moesweep":
        snapshot = json.loads(body)
        runs = snapshot["runs"]
        if snapshot["runs_total"] != runs_expected or sum(snapshot["counts"].values()) != runs_expected:
            raise ValueError(f"{where}: {snapshot['runs_total']} runs, counts {snapshot['counts']}")
    else:
        lines = [line for line in body.splitlines() if line]
        columns = lines[0].split("|") if lines else []
        if any(len(line.split("|")) != len(columns) for line in lines):
            raise ValueError(f"{where}: a row with the wrong number of columns")
        runs = [dict(zip(columns, line.split("|"))) for line in lines[1:]]
    if len(runs) != runs_expected:
        raise ValueError(f"{where}: {len(runs)} runs, expected {runs_expected}")
    for run in runs:
        check_run(run, where)


def main():
    runs_expected = int(sys.argv[1])
    min_reads = int(sys.argv[2])
    counts = {"moesweep": 0, "sqlite3": 0}
    states_seen = set()
    try:
        for path in sys.argv[3:]:
            kind, status, body, start = None, None, [], 0
            blocks = []
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if line.startswith("=== "):
                        if kind:
                            blocks.append((kind, status, "".join(body), start))
                        _, kind, status = line.split()
                        body, start = [], number
                    else:
                        body.append(line)
            if kind:
                blocks.append((kind, status, "".join(body), start))
            for kind, status, body, start in blocks:
                where = f"{path}:{start} ({kind})"
                if status != "0":
                    raise ValueError(f"{where}: exit status {status}")
                check(runs_expected, path, kind, body, where)
                counts[kind] += 1
                if kind == "sqlite3":
                    states_seen.update(line.split("|")[1] for line in body.splitlines()[1:] if line)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    if min(counts.values()) < min_reads:
        print(f"FAIL: fewer than {min_reads} snapshots of a kind: {counts}", file=sys.stderr)
        return 1
    print(f"ok: {counts['moesweep']} moesweep status and {counts['sqlite3']} sqlite3 snapshots, each one "
          f"committed state (states seen: {', '.join(sorted(states_seen))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
