#include "moesweep/orchestrator/schedule_simulation.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace moesweep::orchestrator::scheduling {
namespace {

constexpr double kForever = std::numeric_limits<double>::infinity();

Snapshot fresh_snapshot(const Scheduler& scheduler, int worker_ranks) {
  Snapshot s;
  s.runs.resize(scheduler.runs().size());
  s.worker_ranks = worker_ranks;
  s.idle_ranks = worker_ranks;
  return s;
}

}  // namespace

SimulationResult simulate(const Scheduler& scheduler, const SimulationOptions& options) {
  const std::vector<RunFacts>& runs = scheduler.runs();
  const double rank_flops = scheduler.options().rank_flops;
  if (!(rank_flops > 0)) throw std::invalid_argument("simulate: the scheduler's rank_flops must be > 0");
  if (options.worker_ranks < 1) throw std::invalid_argument("simulate: worker_ranks must be >= 1");

  // Each trunk's branches, by branch point.
  std::vector<std::vector<std::size_t>> branches(runs.size());
  for (std::size_t i = 0; i < runs.size(); ++i)
    if (runs[i].kind == RunKind::branch && runs[i].trunk) branches[*runs[i].trunk].push_back(i);
  for (auto& list : branches)
    std::sort(list.begin(), list.end(), [&](std::size_t a, std::size_t b) {
      return runs[a].branch_point_flops < runs[b].branch_point_flops;
    });

  struct Running {
    std::size_t run;
    int ranks;
    double start;
    double done_at_start;
    std::size_t attempt;
  };
  SimulationResult result;
  Snapshot s = fresh_snapshot(scheduler, options.worker_ranks);
  std::vector<Running> running;
  double now = 0;
  auto job_end = [&] { return options.wall_clock_s > 0 ? now + options.wall_clock_s : kForever; };
  double deadline = job_end();
  result.jobs = 1;

  // When a running run's FLOPs reach `flops`.
  auto time_at = [&](const Running& r, double flops) {
    return r.start + (flops - r.done_at_start) / (rank_flops * r.ranks);
  };
  auto tolerance = [&](double t) { return 1e-9 * std::max(1.0, t); };
  auto write_branch_points = [&](std::size_t trunk) {
    for (std::size_t b : branches[trunk]) {
      if (runs[b].branch_point_flops > s.runs[trunk].flops_done * (1 + 1e-12)) break;
      s.runs[trunk].branch_points_written =
          std::max(s.runs[trunk].branch_points_written, runs[b].branch_point_step);
      s.runs[b].branch_point_found = true;
    }
  };
  auto end_attempt = [&](const Running& r, bool finished) {
    SimulatedAttempt& a = result.attempts[r.attempt];
    a.end_s = now;
    a.finished = finished;
    result.busy_rank_s += a.ranks * (a.end_s - a.start_s);
    s.idle_ranks += r.ranks;
  };
  auto next_job = [&] {
    now += options.requeue_wait_s;
    deadline = job_end();
    ++result.jobs;
    for (RunStatus& status : s.runs) status.reopens = 0;  // counted per job
  };

  while (true) {
    s.now = now;
    s.deadline = deadline < kForever ? std::optional<double>(deadline) : std::nullopt;
    // Apply decisions until the scheduler waits.
    for (Decision d = scheduler.decide(s); d.action != Decision::Action::wait; d = scheduler.decide(s)) {
      if (d.action == Decision::Action::start) {
        s.runs[d.run].state = RunState::running;
        s.idle_ranks -= d.ranks;
        running.push_back({d.run, d.ranks, now, s.runs[d.run].flops_done, result.attempts.size()});
        result.attempts.push_back({d.run, d.ranks, now, now, false});
      } else if (d.action == Decision::Action::fail) {
        s.runs[d.run].state = RunState::failed;
        result.failures.push_back(runs[d.run].name.substr(0, 12) + ": " + d.reason);
      } else {  // reopen_trunk: never needed here (no checkpoint goes missing), applied all the same
        s.runs[d.run].state = RunState::queued;
        ++s.runs[d.run].reopens;
      }
    }
    const bool queued = std::any_of(s.runs.begin(), s.runs.end(),
                                    [](const RunStatus& r) { return r.state == RunState::queued; });
    if (running.empty()) {
      if (!queued) break;
      if (s.deadline && scheduler.deadline_blocks_everything(s)) {  // the job ends early; the next one starts
        next_job();
        continue;
      }
      result.stuck = true;
      break;
    }

    // The next event: a run finishing, a trunk writing a branch point, or the job's end.
    double next = deadline;
    for (const Running& r : running) {
      next = std::min(next, time_at(r, runs[r.run].flops));
      for (std::size_t b : branches[r.run]) {
        if (runs[b].branch_point_flops <= s.runs[r.run].flops_done * (1 + 1e-12)) continue;
        next = std::min(next, time_at(r, runs[b].branch_point_flops));
        break;
      }
    }
    now = std::max(now, next);
    for (auto it = running.begin(); it != running.end();) {
      const RunFacts& facts = runs[it->run];
      RunStatus& status = s.runs[it->run];
      const bool finished = time_at(*it, facts.flops) <= now + tolerance(now);
      status.flops_done =
          finished ? facts.flops
                   : std::min(facts.flops, it->done_at_start + rank_flops * it->ranks * (now - it->start));
      for (std::size_t b : branches[it->run])  // a point due now counts as written, rounding aside
        if (time_at(*it, runs[b].branch_point_flops) <= now + tolerance(now))
          status.flops_done = std::max(status.flops_done, std::min(facts.flops, runs[b].branch_point_flops));
      if (facts.kind == RunKind::trunk) write_branch_points(it->run);
      if (finished) {
        status.state = RunState::done;
        ++result.runs_done;
        end_attempt(*it, true);
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    if (now >= deadline - tolerance(deadline)) {  // the allocation ends: every run checkpoints and stops
      for (const Running& r : running) {
        s.runs[r.run].state = RunState::queued;
        end_attempt(r, false);
      }
      running.clear();
      next_job();
    }
  }
  for (const SimulatedAttempt& a : result.attempts)
    if (a.finished) result.makespan_s = std::max(result.makespan_s, a.end_s);
  return result;
}

MakespanBound makespan_lower_bound(const Scheduler& scheduler, int worker_ranks) {
  const Snapshot s = fresh_snapshot(scheduler, worker_ranks);
  MakespanBound bound;
  double rank_seconds = 0;
  for (std::size_t i = 0; i < scheduler.runs().size(); ++i) {
    const GangPlan p = scheduler.plan(i, s);
    if (p.ranks == 0) continue;  // it fails rather than trains
    rank_seconds += p.ranks * p.seconds;
    // A trunk's critical path holds its branches; a branch's own lies within its trunk's.
    const RunFacts& r = scheduler.runs()[i];
    if (r.kind != RunKind::branch || !r.trunk)
      bound.chain_s = std::max(bound.chain_s, scheduler.critical_path(i, s));
  }
  bound.work_s = rank_seconds / std::max(1, worker_ranks);
  return bound;
}

}  // namespace moesweep::orchestrator::scheduling
