#pragma once
// A discrete-event simulation of a sweep under the scheduler (scheduler.h), in simulated seconds: the
// coordinator's loop without MPI, the store or a backend. Used by bench/makespan_sim and the scheduler's
// tests to measure makespans against a lower bound.
//
// The model: every worker rank sustains the scheduler's stated rank_flops, and a gang of k ranks trains
// k times as fast (perfect data-parallel scaling). A trunk writes each branch point the moment its
// FLOPs reach it, and the branch sees it at once. With a wall clock, jobs of that length follow each
// other (with requeue_wait_s between them); at a job's end every running run stops and keeps its
// progress (moesweep checkpoints on Slurm's warning signal), and a job whose queue the deadline blocks
// ends early, as `moesweep run` does. Nothing fails at random and no checkpoint goes missing.
#include <cstddef>
#include <string>
#include <vector>

#include "moesweep/orchestrator/scheduler.h"

namespace moesweep::orchestrator::scheduling {

struct SimulationOptions {
  int worker_ranks = 1;       // ranks that train (a job's ranks minus the coordinator)
  double wall_clock_s = 0;    // each job's time limit; 0: one job without one
  double requeue_wait_s = 0;  // from one job's end to the next one's start
};

struct SimulatedAttempt {
  std::size_t run = 0;
  int ranks = 0;
  double start_s = 0;
  double end_s = 0;
  bool finished = false;  // false: stopped at its job's end
};

struct SimulationResult {
  double makespan_s = 0;  // from the first job's start to the last run's end
  int jobs = 0;
  int runs_done = 0;
  std::vector<std::string> failures;  // "<run key prefix>: <reason>", one per run the scheduler failed
  bool stuck = false;                 // runs were left queued that nothing could ever start (a scheduler bug)
  double busy_rank_s = 0;             // Σ ranks · seconds over every attempt
  std::vector<SimulatedAttempt> attempts;
};

// Throws std::invalid_argument when the scheduler's rank_flops is not > 0 or worker_ranks < 1.
SimulationResult simulate(const Scheduler& scheduler, const SimulationOptions& options);

// A lower bound on the makespan of any schedule that runs each run on the gang the scheduler gives it
// at the start: the longest chain (an independent run; a trunk up to each branch point plus that
// branch, i.e. in cooldown branching the trunk plus its longest branch) and the total rank-seconds
// Σ gang · time spread over the worker ranks. Jobs' ends and requeue waits are not in it.
struct MakespanBound {
  double chain_s = 0;
  double work_s = 0;
  double bound_s() const { return chain_s > work_s ? chain_s : work_s; }
};
MakespanBound makespan_lower_bound(const Scheduler& scheduler, int worker_ranks);

}  // namespace moesweep::orchestrator::scheduling
