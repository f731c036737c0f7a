#!/usr/bin/env bash
# The paper grid's makespan (sweeps/paper.toml: 41 trunks, 287 cooldown branches) at 32 and 128 ranks
# (override: RANKS="8 32 128") against the lower bound
#     max(longest chain: a trunk plus its longest branch, each at its gang,
#         total work: Σ gang · time over the worker ranks),
# printed with their ratio. Prints figures; never pass/fail.
#
# By default a discrete-event simulation (build/bench/makespan_sim) drives the scheduler itself in
# simulated time, so it is instant: every rank sustains RANK_FLOPS (default 4e14 FLOP/s, the simulate
# backend's nominal rate), gangs scale perfectly, jobs last WALL_CLOCK (default 48:00:00) and are
# requeued at once, and the scheduler's order before issue 15 (trunks first, then most work; gangs by
# memory alone) runs beside it for comparison.
#
# MPIRUN=1 also runs the grid through `mpirun … moesweep run --backend simulate` (wall time = nominal time
# × TIME_SCALE), with RANK_FLOPS and WALL_CLOCK as the sweep's [resources], so the real coordinator
# decides with the same scheduler and assumptions, and bounds it by the attempts' measured times:
# chain = a trunk's time + its longest branch's, work = Σ ranks · time / (ranks − 1), in wall seconds.
#   bench/sweep_makespan.sh [build/moesweep]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
MOESWEEP=${1:-$here/build/moesweep}
SIM=${MAKESPAN_SIM:-$(dirname "$MOESWEEP")/bench/makespan_sim}
RANKS=${RANKS:-32 128}
"$SIM" "$here/sweeps/paper.toml" --ranks "$(echo $RANKS | tr ' ' ',')" --rank-flops "${RANK_FLOPS:-4e14}" \
  --wall-clock "${WALL_CLOCK:-48:00:00}" --requeue-wait "${REQUEUE_WAIT:-0}"

[ "${MPIRUN:-0}" = 1 ] || exit 0
SCALE=${TIME_SCALE:-2e-6}
work=$(mktemp -d /tmp/moesweep-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo
echo "mpirun + moesweep run --backend simulate, time scale $SCALE (wall seconds; bound from the attempts' times)"
printf '%6s %12s %10s %10s %10s %8s %18s %14s\n' ranks makespan_s chain_s work_s bound_s ratio \
  coordinator_cpu_s workers_cpu_s
# The simulation's assumptions as the sweep's [resources], so the real coordinator sizes gangs alike.
sweep="$work/paper.toml"
{ cat "$here/sweeps/paper.toml"
  printf '\n[resources]\nwall_clock = "%s"\nrank_flops = %s\n' "${WALL_CLOCK:-48:00:00}" "${RANK_FLOPS:-4e14}"; } > "$sweep"
for ranks in $RANKS; do
  db="$work/sim-$ranks.db"
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" "$MOESWEEP" run "$sweep" \
    --db "$db" --workdir "$work/runs-$ranks" --backend simulate --time-scale "$SCALE" --heartbeat 2 >/dev/null 2>&1
  sqlite3 "$db" "
    with took as (select run_id, max(ranks) as ranks,
                         sum((julianday(ended_at) - julianday(started_at)) * 86400.0) as s
                  from attempts where ranks > 0 group by run_id),
         run as (select r.id, r.kind, r.trunk_id, t.ranks, t.s from runs r join took t on t.run_id = r.id),
         chain as (select max(t.s + coalesce((select max(b.s) from run b where b.trunk_id = t.id), 0)) as len
                   from run t where t.kind != 'branch'),
         total as (select sum(ranks * s) / ($ranks - 1) as len from run),
         span as (select (julianday(max(ended_at)) - julianday(min(started_at))) * 86400.0 as wall from attempts),
         bound as (select max(chain.len, total.len) as lb from chain, total)
    select printf('%6d %12.2f %10.2f %10.2f %10.2f %8.3f %18.2f %14.2f', $ranks, wall, chain.len, total.len, lb,
                  wall / lb, cast(substr(m, instr(m, 'coordinator CPU ') + 16) as real),
                  cast(substr(m, instr(m, 'workers CPU ') + 12) as real))
    from span, chain, total, bound, (select message as m from events where kind = 'job_end');"
done
