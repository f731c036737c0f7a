#!/usr/bin/env bash
# Simulates the paper grid on 8, 32 and 128 ranks (override: RANKS="8 32") and prints the makespan
# against the lower bound max(longest run, total work / workers), all in simulated seconds, plus the
# coordinator's CPU time. Work is what each run trains itself (paper.toml uses cooldown branches: a
# trunk's work counts once, a branch's is its cooldown). Prints figures; never pass/fail.
#   bench/sweep_makespan.sh [build/moesweep]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
MOESWEEP=${1:-$here/build/moesweep}
SCALE=${TIME_SCALE:-2e-6}
work=$(mktemp -d /tmp/moesweep-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); time scale $SCALE"
printf '%6s %12s %12s %8s %18s %14s\n' ranks "makespan_s" "bound_s" ratio "coordinator_cpu_s" "workers_cpu_s"
for ranks in ${RANKS:-8 32 128}; do
  db="$work/sim-$ranks.db"
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" "$MOESWEEP" run "$here/sweeps/paper.toml" \
    --db "$db" --workdir "$work/runs-$ranks" --backend simulate --time-scale "$SCALE" --heartbeat 2 >/dev/null 2>&1
  sqlite3 "$db" "
    with per_run as (select 6.0 * r.n_act * coalesce(r.trained_tokens, r.tokens) / 4e14 * $SCALE as cost
                     from runs r),
         span as (select (julianday(max(ended_at)) - julianday(min(started_at))) * 86400.0 as wall from attempts),
         bound as (select max((select max(cost) from per_run), (select sum(cost) from per_run) / ($ranks - 1)) as lb)
    select printf('%6d %12.2f %12.2f %8.3f %18.2f %14.2f', $ranks, wall, lb, wall / lb,
                  cast(substr(m, instr(m, 'coordinator CPU ') + 16) as real),
                  cast(substr(m, instr(m, 'workers CPU ') + 12) as real))
    from span, bound, (select message as m from events where kind = 'job_end');"
done
