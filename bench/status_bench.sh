#!/usr/bin/env bash
# `moesweep status` on a database of 100,000 runs (override: RUNS=N): the median of 10 wall times of
# the text output, --json and --sweep NAME, and the CPU that `status --watch 1` takes over 10 seconds,
# there and on the paper grid (sweeps/paper.toml, 328 runs: a typical sweep). Prints a Markdown table;
# never pass/fail. The issue's targets: text under 50 ms at 100,000 runs, --watch under 1% of a core.
#
# The database: `moesweep run --backend simulate` creates it (schema and all) with the paper grid's
# 328 finished runs as sweep 'paper'; SQL then adds the rest in four sweeps, as the store writes them:
# each run with a ~1 kB config_json copied from a real one, 60% done, 0.25% running (an open attempt),
# 0.5% failed (three attempts), 0.2% diverged, 0.4% preempted, the rest pending; every 50th run a
# cooldown trunk with four branches after it; two metrics rows per finished attempt. No Slurm job ids:
# with them each sweep costs a squeue (and, once the job has left the queue, an sacct) per refresh.
#   bench/status_bench.sh [build/moesweep]      (KEEP_DB=1 keeps the databases and says where)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
MOESWEEP=$(realpath "${1:-$here/build/moesweep}")
RUNS=${RUNS:-100000}
WATCH_SECONDS=${WATCH_SECONDS:-10}
work=$(mktemp -d /tmp/moesweep-status-bench.XXXXXX)
if [ -n "${KEEP_DB:-}" ]; then echo "keeping $work" >&2; else trap 'rm -rf "$work"' EXIT; fi
cd "$work"

"$MOESWEEP" run "$here/sweeps/paper.toml" --db paper.db --workdir runs --backend simulate --time-scale 1e-7 \
  >/dev/null 2>&1
cp paper.db big.db
start=$(date +%s.%N)
sqlite3 -bail big.db >/dev/null <<SQL
PRAGMA journal_mode = WAL;
BEGIN;
INSERT INTO sweeps(name, spec_path) SELECT 'grid-' || i, '/sweeps/grid-' || i || '.toml'
  FROM (SELECT 0 AS i UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3);
CREATE TEMP TABLE gen AS
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $RUNS - (SELECT COUNT(*) FROM runs))
SELECT i,
       CASE WHEN i % 400 = 7 THEN 'running' WHEN i % 200 = 3 THEN 'failed' WHEN i % 500 = 11 THEN 'diverged'
            WHEN i % 250 = 13 THEN 'preempted' WHEN i % 100 < 60 THEN 'done' ELSE 'pending' END AS state,
       CASE WHEN i % 50 = 0 THEN 'trunk' WHEN i % 50 <= 4 THEN 'branch' ELSE 'run' END AS kind,
       1 << (i % 6) AS experts, 32 + 16 * (i % 31) AS d_model, (1 << 19) * (1 + i % 64) AS tokens
FROM n;
INSERT INTO runs(run_key, config_json, n_act, n_total, tokens, experts, d_model, n_layers, n_heads, lr, flops,
                 state, attempts, final_loss, error, step, tokens_done, last_loss, tokens_per_s,
                 final_train_loss, kind, trunk_id, branch_step, branch_tokens, trained_tokens)
SELECT lower(hex(randomblob(32))),
       replace((SELECT config_json FROM runs LIMIT 1), '"seed":0', '"seed":' || g.i),
       12 * g.d_model * g.d_model * 2 + 256 * g.d_model, 12 * g.d_model * g.d_model * (1 + g.experts),
       g.tokens, g.experts, g.d_model, 2, 4, 0.003, 6.0 * (12 * g.d_model * g.d_model * 2 + 256 * g.d_model) * g.tokens,
       g.state,
       CASE g.state WHEN 'pending' THEN 0 WHEN 'failed' THEN 3 ELSE 1 END,
       CASE WHEN g.state = 'done' THEN 3.0 + (g.i % 997) / 997.0 END,
       CASE WHEN g.state = 'failed' THEN 'worker exited: signal 9 (killed) at step ' || (g.i % 1000)
            WHEN g.state = 'diverged' THEN 'loss became NaN at step ' || (g.i % 1000) END,
       CASE g.state WHEN 'pending' THEN 0 WHEN 'done' THEN g.tokens / 4096 ELSE (g.i % 100) END,
       CASE g.state WHEN 'pending' THEN 0 WHEN 'done' THEN g.tokens ELSE (g.i % 100) * 4096 END,
       CASE WHEN g.state != 'pending' THEN 3.5 + (g.i % 991) / 991.0 END,
       CASE WHEN g.state = 'running' THEN 1.0e6 + g.i END,
       CASE WHEN g.state = 'done' THEN 3.0 + (g.i % 983) / 983.0 END,
       g.kind, NULL,
       CASE WHEN g.kind = 'branch' THEN 100 END, CASE WHEN g.kind = 'branch' THEN 409600 END,
       CASE WHEN g.kind = 'branch' THEN g.tokens / 5 ELSE g.tokens END
FROM gen g ORDER BY g.i;
-- A branch's trunk is the run up to four before it whose kind is 'trunk' (every 50th).
UPDATE runs SET trunk_id = (SELECT MAX(t.id) FROM runs t WHERE t.kind = 'trunk' AND t.id < runs.id)
  WHERE kind = 'branch' AND id > (SELECT MAX(run_id) FROM sweep_runs);
INSERT INTO sweep_runs(sweep_id, run_id)
  SELECT (SELECT id FROM sweeps WHERE name = 'grid-' || (r.id / 3 % 4)), r.id FROM runs r
  WHERE r.id > (SELECT MAX(run_id) FROM sweep_runs);
-- Attempts: one per try, oldest first; the running run's last one open.
INSERT INTO attempts(run_id, rank, ranks, host, ended_at, exit_reason)
  SELECT r.id, 1 + r.id % 255, 1, 'node' || (r.id % 32),
         CASE WHEN r.state = 'running' THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%fZ','now') END,
         CASE r.state WHEN 'running' THEN NULL WHEN 'done' THEN 'completed' WHEN 'preempted' THEN 'preempted'
                      WHEN 'diverged' THEN 'diverged' ELSE 'failed' END
  FROM runs r, (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) tries
  WHERE r.id > (SELECT MAX(run_id) FROM attempts) AND tries.k <= r.attempts ORDER BY r.id, tries.k;
INSERT INTO metrics(run_id, attempt_id, step, tokens, train_loss, eval_loss, tokens_per_s, lr)
  SELECT a.run_id, a.id, 10 * h.k, 40960 * h.k, 4.0 - h.k * 0.1, CASE WHEN h.k = 2 THEN 3.9 END, 1.0e6, 0.003
  FROM attempts a, (SELECT 1 AS k UNION ALL SELECT 2) h WHERE a.ended_at IS NOT NULL
    AND a.run_id > (SELECT MAX(run_id) FROM metrics);
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
generated=$(echo "$(date +%s.%N) - $start" | bc)

# Median of 10 wall times, in ms, after one untimed warm-up (the database in the page cache).
median_ms() {
  python3 - "$@" <<'PY'
import statistics, subprocess, sys, time
cmd = sys.argv[1:]
subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
times = []
for _ in range(10):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    times.append(1000 * (time.perf_counter() - t))
print(f"{statistics.median(times):.1f} (min {min(times):.1f}, max {max(times):.1f})")
PY
}
# CPU (user + system) of `status --watch 1` over WATCH_SECONDS, as a share of one core.
watch_cpu() {
  "$MOESWEEP" status --db "$1" --watch 1 >/dev/null &
  local pid=$! t0 t1
  sleep 1  # past the first render's start-up
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  sleep "$WATCH_SECONDS"
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  awk -v d="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v s="$WATCH_SECONDS" 'BEGIN { printf "%.2f", 100 * d / hz / s }'
}

runs=$(sqlite3 big.db "select count(*) from runs")
small=$(sqlite3 paper.db "select count(*) from runs")
echo "database: $runs runs, $(sqlite3 big.db "select count(*) from attempts") attempts," \
  "$(sqlite3 big.db "select count(*) from metrics") metrics rows, $(($(stat -c %s big.db) / 1048576)) MiB;" \
  "generated in ${generated%.*} s"
echo "command: bench/status_bench.sh $MOESWEEP; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| what | $runs runs | $small runs (paper grid) |"
echo "|---|---|---|"
echo "| \`status\` text, median ms | $(median_ms "$MOESWEEP" status --db big.db) | $(median_ms "$MOESWEEP" status --db paper.db) |"
echo "| \`status --json\`, median ms | $(median_ms "$MOESWEEP" status --db big.db --json) | $(median_ms "$MOESWEEP" status --db paper.db --json) |"
echo "| \`status --sweep\`, median ms | $(median_ms "$MOESWEEP" status --db big.db --sweep grid-1) | $(median_ms "$MOESWEEP" status --db paper.db --sweep paper) |"
echo "| \`status --watch 1\`, % of a core | $(watch_cpu big.db) | $(watch_cpu paper.db) |"
