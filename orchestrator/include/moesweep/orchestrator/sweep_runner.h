#pragma once
// `moesweep run`: one allocation works through a sweep. Rank 0 coordinates (registers the runs, owns
// every database write, schedules, never trains); ranks 1..K−1 train what it hands them. With one rank
// the same coordinator trains the runs itself, one after another.
//
// Exactly once: every state change is a transaction in the store, done runs are never handed out again,
// and a run whose previous job died while it was running resumes from its newest checkpoint in the
// work directory. SIGTERM or SIGUSR1 (Slurm's warning) makes every rank checkpoint and stop; the
// coordinator marks those runs preempted and exits with kExitPreempted, which the batch script turns
// into a requeue.
#include <optional>
#include <string>

namespace moesweep::orchestrator {

inline constexpr int kExitPreempted = 75;  // EX_TEMPFAIL: stopped early, run the same command again

struct SweepRunOptions {
  std::string sweep_path;
  std::string db_path;
  std::string workdir = "runs";     // checkpoints: WORKDIR/<run_key>/
  std::string backend = "torch";    // "torch" trains; "simulate" sleeps and reports the published law
  double time_scale = 1e-5;         // simulate: wall seconds per second of nominal training
  std::optional<double> deadline;   // unix time the allocation ends (else SLURM_JOB_END_TIME, if set)
  double heartbeat_interval_s = 2;  // how often a worker reports progress
  bool retry_failed = false;        // hand out runs left failed by an earlier job again
  bool retry_diverged = false;      // likewise for diverged runs
  bool keep_branch_points = false;  // cooldown branching: keep a trunk's branch points after its family is done
  std::string device = "cpu";       // torch backend: "cpu" or "cuda" (each rank its own GPU)
  int threads = 1;                  // torch backend: intra-op threads per rank (1: deterministic)
};

// Runs the sweep over MPI_COMM_WORLD (MPI must be initialised). Returns the process exit status:
// 0 every run done, kExitPreempted stopped by a signal or the deadline with runs left, 1 runs failed.
int run_sweep(const SweepRunOptions& options);

// Bytes one rank needs to train a run: parameters with gradients and AdamW state (16 bytes each,
// replicated on every data-parallel rank) plus activations (split across the ranks).
struct MemoryEstimate {
  double replicated_bytes = 0;
  double activation_bytes = 0;
};
struct ExpandedRun;
MemoryEstimate estimate_memory(const ExpandedRun& run);
// Smallest data-parallel gang that fits `rank_memory` bytes per rank (1 when unlimited), or 0 when
// no gang can (the replicated state alone is too big).
int gang_size(const MemoryEstimate& estimate, double rank_memory, int max_ranks);

}  // namespace moesweep::orchestrator
