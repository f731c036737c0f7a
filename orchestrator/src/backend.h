#pragma once
// What a worker does with a run: train it (torch), pretend to (simulate), or start the user's trainer
// (command: command_backend.h). Each reports progress through WorkObserver and honours stop requests;
// each resumes from what the run's directory holds.
#include <mpi.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "moesweep/orchestrator/sweep_runner.h"
#include "moesweep/orchestrator/sweep_spec.h"

namespace moesweep::orchestrator {

struct WorkResult {
  // completed | stopped | diverged | failed, or blocked: a cooldown branch could not start because its
  // trunk's checkpoint is missing, torn or fails its checksum (a corrupt one is moved aside to
  // <file>.corrupt so that the trunk writes it again); nothing was trained.
  std::string outcome;
  double eval_loss = 0;
  double train_loss = 0;
  std::int64_t tokens = 0;
  std::int64_t steps = 0;
  double tokens_per_s = 0;
  double seconds = 0;
  std::int64_t resumed_from_step = 0;
  std::string message;  // failed/diverged: one line
};

struct WorkProgress {
  std::int64_t step = 0;
  std::int64_t tokens = 0;
  double train_loss = 0;
  double lr = 0;
  double tokens_per_s = 0;
};

class WorkObserver {
 public:
  virtual ~WorkObserver() = default;
  virtual void progress(const WorkProgress& p) = 0;
  virtual bool stop_requested() = 0;
  // The signal that asked for the stop (SIGUSR1 or SIGTERM), which the command backend forwards to its
  // child; SIGUSR1 when the stop came from elsewhere (the coordinator, a lost lease).
  virtual int stop_signal() { return SIGUSR1; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  // `gang` is the run's data-parallel communicator (MPI_COMM_NULL for one rank); `attempt` the store's
  // attempt id. The gang's leader first fences the run directory (fence_run_dir); checkpoints are then
  // published only while it still names this attempt, and an attempt fenced meanwhile ends with outcome
  // "superseded" without writing. Never throws: a run that cannot be trained comes back as outcome
  // "failed" with its message.
  virtual WorkResult train(const ExpandedRun& run, const std::filesystem::path& run_dir, std::int64_t attempt,
                           MPI_Comm gang, WorkObserver& observer) = 0;
};

// options.backend: "torch", "simulate" or "command" (then sweep.command is the template).
std::unique_ptr<Backend> make_backend(const SweepRunOptions& options, const Sweep& sweep);

// Fencing by the run directory: RUN_DIR/attempt names the attempt that owns the run now. A new attempt
// writes it (atomically) before anything else and removes the temporary files earlier attempts left;
// run_dir_owned_by is asked before every file the attempt publishes, so an attempt declared dead (a
// silent rank, a lapsed lease) can never overwrite what its successor wrote.
void fence_run_dir(const std::filesystem::path& run_dir, std::int64_t attempt);
bool run_dir_owned_by(const std::filesystem::path& run_dir, std::int64_t attempt);

// Where a trunk keeps its branch-point checkpoints: WORKDIR/<trunk key>/branch-points/ckpt-<step>.pt
// (never rotated away; `moesweep run` deletes them once the trunk and all its branches are done). A branch
// becomes runnable when its file exists.
std::filesystem::path branch_points_dir(const std::string& workdir, const std::string& trunk_key);
std::filesystem::path branch_point_path(const std::string& workdir, const std::string& trunk_key,
                                        std::int64_t step);
std::filesystem::path branch_point_file(const std::string& workdir, const ExpandedRun& branch);

}  // namespace moesweep::orchestrator
