#include "moesweep/orchestrator/scheduler.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <map>
#include <stdexcept>

namespace moesweep::orchestrator::scheduling {
namespace {

// The smallest gang whose ranks each hold the run in `rank_memory` bytes, with no cap; 0 when the
// replicated state alone does not fit.
int memory_gang(const MemoryEstimate& e, double rank_memory) {
  if (rank_memory <= 0 || e.replicated_bytes + e.activation_bytes <= rank_memory) return 1;
  const double room = rank_memory - e.replicated_bytes;
  if (!(room > 0)) return 0;
  const double k = std::ceil(e.activation_bytes / room);
  if (!(k < static_cast<double>(INT_MAX / 2))) return INT_MAX / 2;
  int n = std::max(1, static_cast<int>(k));
  // The ceiling above may be off by one in floating point: settle on the exact test, per rank.
  while (n > 1 && e.replicated_bytes + e.activation_bytes / (n - 1) <= rank_memory) --n;
  while (e.replicated_bytes + e.activation_bytes / n > rank_memory) ++n;
  return n;
}

std::string short_name(const std::string& name) { return name.substr(0, 12); }

std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

const char* state_name(RunState s) {
  switch (s) {
    case RunState::queued:
      return "pending";
    case RunState::running:
      return "running";
    case RunState::done:
      return "done";
    case RunState::failed:
      return "failed";
    case RunState::diverged:
      return "diverged";
  }
  return "?";
}

}  // namespace

MemoryEstimate estimate_memory(const ExpandedRun& run) {
  const auto& m = run.config.model;
  MemoryEstimate e;
  // fp32 weights, gradients and AdamW's two moments; the router (d·E per layer) included.
  const double params = static_cast<double>(run.n_total + m.d_model * m.experts * m.n_layers);
  e.replicated_bytes = 16.0 * params;
  // Activations kept for the backward pass, per token and layer (Korthikanti et al. 2022, fp32):
  // about 34·d plus 5·heads·seq_len for the attention scores, in 2-byte units, doubled for fp32;
  // plus the logits.
  const double tokens = static_cast<double>(run.config.train.batch_tokens);
  e.activation_bytes =
      tokens *
      (static_cast<double>(m.n_layers) *
           (34.0 * static_cast<double>(m.d_model) + 5.0 * static_cast<double>(m.n_heads * m.seq_len)) * 2.0 +
       8.0 * static_cast<double>(m.vocab_size));
  return e;
}

std::vector<RunFacts> run_facts(const Sweep& sweep) {
  std::map<std::string, std::size_t> trunk_index;
  for (std::size_t i = 0; i < sweep.runs.size(); ++i)
    if (sweep.runs[i].kind == RunKind::trunk) trunk_index[sweep.runs[i].run_key] = i;
  const double rank_memory = static_cast<double>(sweep.resources.rank_memory_bytes);
  std::vector<RunFacts> facts;
  facts.reserve(sweep.runs.size());
  for (const ExpandedRun& run : sweep.runs) {
    RunFacts f;
    f.name = run.run_key;
    f.kind = run.kind;
    f.flops = run.trained_flops;
    const double n_act = static_cast<double>(run.n_act);
    f.checkpoint_flops =
        6.0 * n_act *
        static_cast<double>(std::min(run.config.train.checkpoint_every_tokens, run.trained_tokens));
    f.memory = estimate_memory(run);
    f.max_gang =
        static_cast<int>(std::min<std::int64_t>(trainer::max_data_parallel_ranks(run.config), INT_MAX));
    if (const int k = memory_gang(f.memory, rank_memory); k > f.max_gang)
      f.gang_problem = trainer::data_parallel_problem(run.config, k);
    if (run.kind == RunKind::branch) {
      if (const auto t = trunk_index.find(run.trunk_key); t != trunk_index.end()) f.trunk = t->second;
      f.branch_point_step = run.branch_point.step;
      f.branch_point_flops = 6.0 * n_act * static_cast<double>(run.branch_point.tokens);
    }
    facts.push_back(std::move(f));
  }
  return facts;
}

SchedulerOptions scheduler_options(const Resources& resources) {
  SchedulerOptions o;
  o.rank_memory_bytes = static_cast<double>(resources.rank_memory_bytes);
  o.wall_clock_s = resources.wall_clock_s;
  o.rank_flops = resources.rank_flops;
  o.max_attempts = resources.max_attempts;
  return o;
}

RunState run_state(const std::string& s) {
  if (s == "pending" || s == "preempted") return RunState::queued;
  if (s == "running") return RunState::running;
  if (s == "done") return RunState::done;
  if (s == "failed") return RunState::failed;
  if (s == "diverged") return RunState::diverged;
  throw std::invalid_argument("unknown run state '" + s + "'");
}

Scheduler::Scheduler(std::vector<RunFacts> runs, SchedulerOptions options)
    : runs_(std::move(runs)), options_(options), branches_(runs_.size()) {
  for (std::size_t i = 0; i < runs_.size(); ++i) {
    if (runs_[i].kind != RunKind::branch || !runs_[i].trunk) continue;
    if (*runs_[i].trunk >= runs_.size() || runs_[*runs_[i].trunk].kind != RunKind::trunk)
      throw std::invalid_argument("run " + std::to_string(i) + ": its trunk index is not a trunk");
    branches_[*runs_[i].trunk].push_back(i);
  }
}

double Scheduler::rank_flops(const Snapshot& s) const {
  return s.measured_rank_flops > 0 ? s.measured_rank_flops : options_.rank_flops;
}

GangPlan Scheduler::plan(std::size_t i, const Snapshot& s) const {
  const RunFacts& r = runs_.at(i);
  GangPlan p;
  const double rank_memory = options_.rank_memory_bytes;
  const int by_memory = memory_gang(r.memory, rank_memory);
  const int workers = std::max(1, s.worker_ranks);
  if (by_memory == 0) {
    p.problem = "needs " + std::to_string(static_cast<long long>(r.memory.replicated_bytes / 1e9)) +
                " GB of parameters and optimizer state per rank; [resources] rank_memory is " +
                std::to_string(static_cast<long long>(rank_memory) / 1000000000) + " GB";
    return p;
  }
  if (r.max_gang > 0 && by_memory > r.max_gang) {
    p.problem = "[resources] rank_memory needs a gang of " + std::to_string(by_memory) + " ranks, but " +
                (r.gang_problem.empty() ? "its smallest batch makes only " + std::to_string(r.max_gang) +
                                              " routing group(s) and each rank takes whole groups"
                                        : r.gang_problem);
    return p;
  }
  if (by_memory > workers) {
    p.problem = "[resources] rank_memory needs a gang of " + std::to_string(by_memory) +
                " ranks; this job has " + std::to_string(workers) + " worker rank(s)";
    return p;
  }
  const int limit = r.max_gang > 0 ? std::min(workers, r.max_gang) : workers;
  p.min_ranks = by_memory;
  int ranks = by_memory;
  const double flops = rank_flops(s);
  const double left = std::max(0.0, r.flops - s.runs.at(i).flops_done);
  if (options_.gangs_by_time && options_.wall_clock_s > 0 && flops > 0) {
    // The smallest gang that trains the whole run within one allocation (the 1e-12 keeps an exact fit at
    // its size). By the whole run, not what is left: a resumed run keeps its gang, so the tail of a long
    // run on the critical path does not slow down to one rank.
    const double needed = std::ceil(r.flops / (flops * options_.wall_clock_s) * (1 - 1e-12));
    ranks = std::max(ranks, static_cast<int>(std::min(static_cast<double>(limit), std::max(1.0, needed))));
    p.across_jobs = left / (flops * ranks) > options_.wall_clock_s;
  }
  p.ranks = ranks;
  p.seconds = flops > 0 ? left / (flops * ranks) : 0;
  return p;
}

double Scheduler::critical_path(std::size_t i, const Snapshot& s) const { return path_at(i, s, 0); }

double Scheduler::path_at(std::size_t i, const Snapshot& s, int ranks) const {
  const double flops = rank_flops(s);
  // Seconds at its gang; without a throughput, FLOPs per rank (the order is the same).
  auto time_of = [&](std::size_t j, int gang, double from_flops, double to_flops) {
    if (gang <= 0) gang = std::max(1, plan(j, s).ranks);
    return std::max(0.0, to_flops - from_flops) / ((flops > 0 ? flops : 1.0) * gang);
  };
  const RunFacts& r = runs_.at(i);
  const double done = s.runs.at(i).flops_done;
  double path = time_of(i, ranks, done, r.flops);
  if (r.kind != RunKind::trunk) return path;
  for (std::size_t b : branches_[i]) {
    if (s.runs.at(b).state != RunState::queued) continue;
    path = std::max(path, time_of(i, ranks, done, runs_[b].branch_point_flops) +
                              time_of(b, 0, s.runs[b].flops_done, runs_[b].flops));
  }
  return path;
}

std::vector<std::size_t> Scheduler::queue_order(const Snapshot& s) const {
  struct Entry {
    std::size_t run;
    double path;
  };
  std::vector<Entry> queue;
  for (std::size_t i = 0; i < runs_.size(); ++i)
    if (s.runs.at(i).state == RunState::queued)
      queue.push_back({i, options_.order == Order::critical_path ? critical_path(i, s) : 0.0});
  std::sort(queue.begin(), queue.end(), [&](const Entry& a, const Entry& b) {
    if (a.path != b.path) return a.path > b.path;
    const bool a_trunk = runs_[a.run].kind == RunKind::trunk, b_trunk = runs_[b.run].kind == RunKind::trunk;
    if (a_trunk != b_trunk) return a_trunk;  // its branches wait on it
    if (runs_[a.run].flops != runs_[b.run].flops) return runs_[a.run].flops > runs_[b.run].flops;
    return a.run < b.run;
  });
  std::vector<std::size_t> order;
  order.reserve(queue.size());
  for (const Entry& e : queue) order.push_back(e.run);
  return order;
}

bool Scheduler::branch_ready(std::size_t i, const Snapshot& s) const {
  const RunFacts& r = runs_[i];
  if (s.runs[i].branch_point_found) return true;
  return r.trunk && s.runs[*r.trunk].branch_points_written >= r.branch_point_step;
}

Decision Scheduler::decide(const Snapshot& s) const {
  if (s.runs.size() != runs_.size())
    throw std::invalid_argument("snapshot has " + std::to_string(s.runs.size()) + " runs, the scheduler " +
                                std::to_string(runs_.size()));
  Decision d;
  // A run no gang can train fails now, wherever it stands in the queue.
  for (std::size_t i = 0; i < runs_.size(); ++i) {
    if (s.runs[i].state != RunState::queued || s.runs[i].held_elsewhere) continue;
    if (GangPlan p = plan(i, s); p.ranks == 0) {
      d.action = Decision::Action::fail;
      d.run = i;
      d.reason = p.problem;
      return d;
    }
  }
  const std::vector<std::size_t> order = queue_order(s);
  // Each run on its gang, in priority order; a run whose gang is wider than the idle ranks is passed over.
  for (std::size_t i : order) {
    if (s.runs[i].held_elsewhere) continue;
    const GangPlan p = plan(i, s);
    if (p.ranks <= s.idle_ranks && consider(i, p, p.ranks, s, d)) return d;
  }
  // Nothing started, yet ranks are idle: a run whose gang was widened for time (never below what its
  // memory needs) may start on the idle ranks, if its critical path at that width stays within what the
  // remaining work needs anyway (its rank-seconds over the workers), so the narrower start cannot
  // lengthen the sweep. Without this, a small job of gang-2 runs leaves one rank idle for days.
  if (s.idle_ranks <= 0 || !options_.gangs_by_time) return d;
  const double work_bound = remaining_rank_seconds(s) / std::max(1, s.worker_ranks);
  for (std::size_t i : order) {
    if (s.runs[i].held_elsewhere) continue;
    const GangPlan p = plan(i, s);
    if (p.ranks <= s.idle_ranks || p.min_ranks > s.idle_ranks) continue;
    if (path_at(i, s, s.idle_ranks) > work_bound) continue;
    if (consider(i, p, s.idle_ranks, s, d)) {
      if (d.action == Decision::Action::start)
        d.note = "starts on " + std::to_string(d.ranks) + " of the " + std::to_string(p.ranks) +
                 " ranks its time asks for: they would idle, and the sweep's remaining work outlasts it" +
                 " anyway; it continues across requeued jobs from its checkpoints if need be";
      return d;
    }
  }
  return d;  // wait
}

// Rules 3 to 5 for run i on `ranks` ranks: true with the decision in `d`, false when it waits.
bool Scheduler::consider(std::size_t i, const GangPlan& p, int ranks, const Snapshot& s, Decision& d) const {
  const RunFacts& r = runs_[i];
  if (r.kind == RunKind::branch && !branch_ready(i, s)) {
    const std::string step = std::to_string(r.branch_point_step);
    if (!r.trunk) {
      d.action = Decision::Action::fail;
      d.failure = Decision::Failure::no_trunk_checkpoint;
      d.run = i;
      d.reason = "its trunk is not in the sweep: no checkpoint at step " + step + " to start from";
      return true;
    }
    const std::size_t t = *r.trunk;
    const RunState trunk = s.runs[t].state;
    if (trunk == RunState::queued || trunk == RunState::running) return false;  // it will write the point
    if (trunk == RunState::done && s.runs[t].reopens < options_.max_attempts) {
      d.action = Decision::Action::reopen_trunk;
      d.run = t;
      d.branch = i;
      d.reason = "branch point at step " + step + " is missing; the trunk trains again to write it";
      return true;
    }
    d.action = Decision::Action::fail;
    d.failure = Decision::Failure::no_trunk_checkpoint;
    d.run = i;
    d.reason = "its trunk " + short_name(runs_[t].name) + " ended " + state_name(trunk) +
               " without a usable checkpoint at step " + step +
               (s.runs[t].reopens > 0 ? " (reopened " + std::to_string(s.runs[t].reopens) + " times)" : "");
    return true;
  }
  // Worth starting only if it can reach its first checkpoint within this allocation.
  if (!reaches_checkpoint(i, ranks, s)) return false;
  d.action = Decision::Action::start;
  d.run = i;
  d.ranks = ranks;
  if (p.across_jobs && ranks == p.ranks)
    d.note = "needs " + format("%.1f", p.seconds / 86400) + " days on " + std::to_string(p.ranks) +
             " rank(s), the most it can use, more than one allocation's wall clock (" +
             format("%.0f", options_.wall_clock_s / 3600) +
             " h): it continues across requeued jobs from its checkpoints";
  return true;
}

bool Scheduler::reaches_checkpoint(std::size_t i, int ranks, const Snapshot& s) const {
  const double flops = rank_flops(s);
  return !s.deadline || flops <= 0 || s.now + runs_[i].checkpoint_flops / (flops * ranks) < *s.deadline;
}

double Scheduler::remaining_rank_seconds(const Snapshot& s) const {
  const double flops = rank_flops(s);
  double left = 0;
  for (std::size_t i = 0; i < runs_.size(); ++i)
    if (s.runs[i].state == RunState::queued || s.runs[i].state == RunState::running)
      left += std::max(0.0, runs_[i].flops - s.runs[i].flops_done);
  return left / (flops > 0 ? flops : 1.0);
}

bool Scheduler::deadline_blocks_everything(const Snapshot& s) const {
  if (!s.deadline) return false;
  for (std::size_t i = 0; i < runs_.size(); ++i) {
    if (s.runs.at(i).state != RunState::queued) continue;
    const GangPlan p = plan(i, s);
    if (p.ranks == 0) continue;                                             // it fails instead
    if (runs_[i].kind == RunKind::branch && !branch_ready(i, s)) continue;  // only its trunk unblocks it
    if (reaches_checkpoint(i, p.ranks, s)) return false;
  }
  return true;
}

}  // namespace moesweep::orchestrator::scheduling
