#pragma once
// The scheduling policy of `moesweep run`: which queued run starts next, on how many ranks, and what
// becomes of runs that cannot start. A pure function of a snapshot; it knows neither MPI nor SQL. The
// coordinator gathers the snapshot (its queue, idle ranks, the branch points it has seen on disk, the
// clock) and applies the decision (MPI messages, store writes); the makespan simulation
// (schedule_simulation.h) drives the same function with simulated time.
//
// The rules, in the order decide() applies them:
//   1. A queued run no gang can train fails, with the reason: its replicated state alone exceeds
//      [resources] rank_memory; the gang its memory needs is more ranks than its smallest batch has
//      routing groups (ranks take whole groups); or more than this job's worker ranks.
//   2. The queued runs are taken in priority order (Order below). A run whose gang is more ranks than are
//      idle is passed over (smaller runs behind it may start). Only if that starts nothing while ranks
//      idle, a run whose gang was widened for time may start on the idle ranks (never fewer than its
//      memory needs), in the same order, when its critical path at that width stays within the
//      remaining work's bound (queued and running FLOPs over all worker ranks): the narrower start
//      cannot lengthen the sweep, and leaving the ranks idle would.
//   3. A cooldown branch starts once its trunk's checkpoint at the branch point is there. While the trunk
//      is queued or running the branch waits. A done trunk without that checkpoint is reopened to write
//      it again, at most max_attempts times per job; a trunk that failed or diverged (or was reopened
//      that often) leaves the branch failed: it has nothing to start from.
//   4. With a deadline (the allocation's end) and a throughput, a run that cannot reach its first
//      checkpoint before it waits for the next job.
//   5. Otherwise the run starts on its gang.
// A queued run another coordinator holds now (RunStatus::held_elsewhere) is passed over by every rule.
//
// Gang size (plan()): the smallest gang whose ranks each hold the run in rank_memory (parameters,
// gradients and AdamW state replicated, activations split), raised to the smallest gang that trains the
// whole run within one allocation's wall clock at rank_flops per rank (perfect data-parallel scaling),
// never above what data parallelism allows (trainer::max_data_parallel_ranks) or the worker ranks. By
// the whole run, not what is left of it, so a resumed run keeps its gang and the tail of a long run on
// the critical path does not narrow. A run that even its largest gang cannot finish within the wall
// clock takes that gang and continues across requeued jobs from its checkpoints; it is never failed for
// that. The throughput is the measured one once there is one (Snapshot), else the stated rank_flops;
// with neither, or no wall clock, gangs are by memory alone.
//
// Units: FLOPs as the paper counts them (6·N_act·tokens), seconds, bytes, FLOP/s per rank.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moesweep/orchestrator/sweep_spec.h"

namespace moesweep::orchestrator::scheduling {

// Bytes one rank needs to train a run: parameters with gradients and AdamW state (16 bytes each,
// replicated on every data-parallel rank) plus activations (split across the ranks).
struct MemoryEstimate {
  double replicated_bytes = 0;
  double activation_bytes = 0;
};
MemoryEstimate estimate_memory(const ExpandedRun& run);

// What the scheduler knows of one run of the sweep; it does not change while a job runs.
struct RunFacts {
  std::string name;  // for messages: the run key (its first 12 characters are shown)
  RunKind kind = RunKind::independent;
  double flops = 0;             // FLOPs it trains itself from scratch: ExpandedRun::trained_flops
  double checkpoint_flops = 0;  // FLOPs from a start to its first checkpoint (at most `flops`)
  MemoryEstimate memory;        // {0, 0}: fits any rank
  int max_gang = 0;             // most data-parallel ranks its batches allow; 0: no limit
  // Why a gang above max_gang cannot train it (trainer::data_parallel_problem's text for the gang its
  // memory needs), quoted when that gang is too large; empty: a generic line.
  std::string gang_problem;
  // Branches: their trunk (an index into the same vector; nullopt when the sweep has none) and where
  // they leave it.
  std::optional<std::size_t> trunk;
  std::int64_t branch_point_step = 0;
  double branch_point_flops = 0;  // the trunk's FLOPs up to the branch point: 6·N_act·branch_point.tokens
};

// Facts of every run of an expanded sweep, in its order (trunks are found by key).
std::vector<RunFacts> run_facts(const Sweep& sweep);

// Queue order. critical_path (the default): the longest remaining critical path first, i.e. longest
// processing time first over trunk → branch chains: an independent run's or a branch's path is its own
// time; a trunk's is the longest of its own remaining time and, for each branch still to run, the
// trunk's time to that branch's point plus the branch's time (in cooldown branching: the trunk plus its
// longest branch), each at its gang. Ties: trunks first, then more FLOPs. most_work is the order
// before issue 15: trunks first, then the most FLOPs first.
enum class Order { critical_path, most_work };

struct SchedulerOptions {
  double rank_memory_bytes = 0;  // [resources] rank_memory; 0: no limit
  double wall_clock_s = 0;  // [resources] wall_clock, one allocation's time limit; 0: gangs by memory only
  double rank_flops = 0;    // [resources] rank_flops, FLOP/s one rank sustains; 0: not stated
  int max_attempts = 3;     // [resources] max_attempts: reopens of one done trunk per job
  Order order = Order::critical_path;
  bool gangs_by_time = true;  // false: gangs by memory alone (the policy before issue 15)
};
SchedulerOptions scheduler_options(const Resources& resources);

// A run's state as the job knows it (the store's pending and preempted are both `queued`).
enum class RunState { queued, running, done, failed, diverged };
// "pending", "preempted", "running", "done", "failed", "diverged" → RunState. Throws std::invalid_argument.
RunState run_state(const std::string& store_state);

struct RunStatus {
  RunState state = RunState::queued;
  double flops_done = 0;  // FLOPs its checkpoints already hold (resumed runs); 0: from scratch or unknown
  // Trunks: the step of the last branch point written, in step order (0: none yet), and how often this
  // job has reopened the trunk to write one again.
  std::int64_t branch_points_written = 0;
  int reopens = 0;
  // Branches: the trunk's checkpoint at branch_point_step was found. May stay false while the trunk is
  // queued or running (branch_points_written covers that); must be looked up once it is not.
  bool branch_point_found = false;
  // Queued, but another coordinator holds it now (the store refused this job's claim, and it has not
  // looked again yet): decide() neither starts nor fails it. It stays queued in every other respect: its
  // branches wait on it, and deadline_blocks_everything counts it, since its holder may let it go.
  bool held_elsewhere = false;
};

struct Snapshot {
  std::vector<RunStatus> runs;     // one per RunFacts, same order
  int idle_ranks = 0;              // worker ranks free now
  int worker_ranks = 1;            // worker ranks that can train in this job (gangs never exceed it)
  double now = 0;                  // seconds (unix time, or simulated)
  std::optional<double> deadline;  // when the allocation ends, same clock; nullopt: no deadline
  double measured_rank_flops = 0;  // FLOP/s per rank measured so far; 0: none, the stated rank_flops holds
};

struct Decision {
  enum class Action {
    start,         // start `run` on `ranks` idle ranks (any of them: ranks are alike); `note` says if it
                   // continues across jobs
    fail,          // leave `run` failed; `reason` is the store's error line
    reopen_trunk,  // reopen the done trunk `run` (pending again) because `branch` finds no branch point;
                   // the caller counts it in RunStatus::reopens
    wait,          // nothing can start now
  };
  // fail: which rule. The coordinator's attempt exit_reason: "unschedulable", "no trunk checkpoint".
  enum class Failure { unschedulable, no_trunk_checkpoint };
  Action action = Action::wait;
  Failure failure = Failure::unschedulable;
  std::size_t run = 0;
  int ranks = 0;
  std::size_t branch = 0;
  std::string reason;  // fail, reopen_trunk: one line for the store and the log
  std::string note;    // start: "", or that it continues across jobs, or why it starts narrower than its gang
};

// A run's gang (sized by its whole FLOPs, see above) and the time its remaining FLOPs take on it.
struct GangPlan {
  int ranks = 0;             // 0: no gang can train it (see problem)
  int min_ranks = 0;         // the fewest it can train on: the gang its memory needs
  double seconds = 0;        // remaining FLOPs / (rank FLOP/s · ranks); 0 when no throughput is known
  bool across_jobs = false;  // even this gang cannot finish within the wall clock
  std::string problem;       // ranks == 0: why
};

// The policy over a fixed set of runs. decide() is const and keeps no history: the caller applies each
// decision to its snapshot and asks again until the answer is `wait`.
class Scheduler {
 public:
  // Throws std::invalid_argument when a branch's trunk index does not name a trunk.
  Scheduler(std::vector<RunFacts> runs, SchedulerOptions options);

  // Throws std::invalid_argument when the snapshot does not hold one RunStatus per run.
  Decision decide(const Snapshot& snapshot) const;

  // True when a deadline is set and no queued run that could start (a branch must have its branch
  // point) reaches its first checkpoint before it: the job may end and leave the queue to the next.
  bool deadline_blocks_everything(const Snapshot& snapshot) const;

  GangPlan plan(std::size_t run, const Snapshot& snapshot) const;
  // The queued runs in the order decide() considers them.
  std::vector<std::size_t> queue_order(const Snapshot& snapshot) const;
  // Remaining critical path of a run in seconds (FLOPs per rank when no throughput is known).
  double critical_path(std::size_t run, const Snapshot& snapshot) const;

  const std::vector<RunFacts>& runs() const { return runs_; }
  const SchedulerOptions& options() const { return options_; }

 private:
  double rank_flops(const Snapshot& snapshot) const;
  bool branch_ready(std::size_t branch, const Snapshot& snapshot) const;
  double path_at(std::size_t run, const Snapshot& snapshot, int ranks) const;  // ranks 0: its gang
  bool consider(std::size_t run, const GangPlan& plan, int ranks, const Snapshot& snapshot,
                Decision& d) const;
  bool reaches_checkpoint(std::size_t run, int ranks, const Snapshot& snapshot) const;
  double remaining_rank_seconds(const Snapshot& snapshot) const;

  std::vector<RunFacts> runs_;
  SchedulerOptions options_;
  std::vector<std::vector<std::size_t>> branches_;  // by trunk index: its branches
};

}  // namespace moesweep::orchestrator::scheduling
