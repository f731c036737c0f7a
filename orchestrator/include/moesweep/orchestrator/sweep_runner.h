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
//
// One owner per sweep: the coordinator holds a lease on its sweep (lease.h) and claims each run in the
// store before handing it out, so a second coordinator (another sweep in the same database, a second
// job for the same sweep) never touches runs whose owner is alive, and a run shared by two sweeps is
// trained once. A coordinator that loses its lease (it stopped renewing long enough for another to
// take over) stops its workers and exits 1 without recording anything more.
//
// Liveness: every worker rank reports from its own thread every heartbeat interval, whatever it is
// doing (a long eval, a checkpoint write, a resume load); a rank silent for heartbeat_timeout_s is
// declared dead and fenced: told to stop, its attempt closed, and its run directory handed to the next
// attempt (backend.h), before the run is handed out again.
#include <optional>
#include <string>

namespace moesweep::orchestrator {

inline constexpr int kExitPreempted = 75;  // EX_TEMPFAIL: stopped early, run the same command again

struct SweepRunOptions {
  std::string sweep_path;
  std::string db_path;
  std::string workdir = "runs";     // checkpoints: WORKDIR/<run_key>/
  std::string backend = "torch";    // "torch" trains; "simulate" sleeps and reports the published law;
                                    // "command" starts the sweep's [backend] command (command_backend.h);
                                    // "": the sweep file's [sweep] backend, else torch
  double time_scale = 1e-5;         // simulate: wall seconds per second of nominal training
  std::optional<double> deadline;   // unix time the allocation ends (else SLURM_JOB_END_TIME, if set)
  double heartbeat_interval_s = 2;  // how often a worker reports progress
  bool retry_failed = false;        // hand out runs left failed by an earlier job again
  bool retry_diverged = false;      // likewise for diverged runs
  bool keep_branch_points = false;  // cooldown branching: keep a trunk's branch points after its family is done
  std::string device = "cpu";       // torch backend: "cpu" or "cuda" (each rank its own GPU)
  int gpus_per_node = 0;            // torch backend, "cuda": GPUs per node (0: those CUDA shows)
  int threads = 1;                  // torch backend: intra-op threads per rank (1: deterministic)
  double lease_s = 60;              // the coordinator's lease on the sweep lapses this long after its
                                    // last renewal (it renews every lease_s/6 s from its own thread)
  bool take_over = false;           // a sweep another coordinator owns: wait for its lease to lapse
  std::string exit_status_file;     // rank 0 writes its exit status here (a launcher such as mpirun
                                    // replaces it with its own after a TERM)
};

// Runs the sweep over MPI_COMM_WORLD (MPI must be initialised). Returns the process exit status:
// 0 every run done, kExitPreempted stopped by a signal or the deadline with runs left, 1 runs failed.
int run_sweep(const SweepRunOptions& options);

}  // namespace moesweep::orchestrator
