// moesweep run SWEEP.toml --db FILE [--workdir DIR] [--backend torch|simulate|command] ...: under mpirun or srun,
// rank 0 coordinates and the other ranks train; with one rank the sweep runs serially in-process.
#include <mpi.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/sweep_runner.h"
#include "rank_placement.h"

namespace moesweep::cli {
namespace {

// "1767225600" (unix time) or "+90m", "+2h", "+45s" (from now).
double parse_deadline(const std::string& text) {
  char* end = nullptr;
  if (!text.empty() && text[0] == '+') {
    const double amount = std::strtod(text.c_str() + 1, &end);
    const std::string unit = end ? end : "";
    const double scale = unit == "s" || unit.empty() ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : -1;
    if (scale < 0 || !(amount > 0)) throw InputError("--deadline: '" + text + "' is not +N[s|m|h] or a unix time");
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    return std::chrono::duration<double>(now).count() + amount * scale;
  }
  const double when = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !(when > 0))
    throw InputError("--deadline: '" + text + "' is not +N[s|m|h] or a unix time");
  return when;
}

int run_under_mpi(orchestrator::SweepRunOptions options) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  // Workers report liveness from a second thread while the first trains (sweep_runner.h).
  int provided = MPI_THREAD_SINGLE;
  if (!initialised) MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int status = 0;
  try {
    // Each worker a GPU of its own, decided before the store is opened: a layout with two workers on one
    // GPU is refused on every rank alike, and no run starts. Rank 0 coordinates and takes no GPU.
    if (options.backend != "simulate")  // torch, command, or the file's choice: a GPU each, if asked
      options.device = orchestrator::place_on_gpu(
          options.device, MPI_COMM_WORLD, size > 1 ? 0 : orchestrator::kNoCoordinator, options.gpus_per_node);
    status = orchestrator::run_sweep(options);
  } catch (const InputError& e) {
    if (rank == 0) std::cerr << "moesweep: " << e.what() << "\n";  // every rank read the same file
    status = 2;
  }
  // mpirun exits 1 after a TERM whatever its ranks return; the batch script reads the real status here.
  if (rank == 0 && !options.exit_status_file.empty()) {
    std::ofstream out(options.exit_status_file, std::ios::trunc);
    out << status << "\n";
  }
  MPI_Finalize();
  return status;
}

}  // namespace

void add_run(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", kRunDescription);
  auto opt = std::make_shared<orchestrator::SweepRunOptions>();
  opt->backend.clear();  // not given: the sweep file's [sweep] backend, else torch
  auto deadline = std::make_shared<std::string>();
  cmd->add_option("sweep", opt->sweep_path, "Sweep file (TOML)")->required();
  cmd->add_option("--db", opt->db_path, "Sweep database (SQLite; created if missing)")->required();
  cmd->add_option("--workdir", opt->workdir, "Checkpoints go to WORKDIR/<run_key>/")->capture_default_str();
  cmd->add_option("--backend", opt->backend,
                  "torch trains; simulate sleeps and reports the published law; command starts the sweep's "
                  "[backend] command (default: the sweep's [sweep] backend, else torch)")
      ->check(CLI::IsMember({"torch", "simulate", "command"}));
  cmd->add_option("--time-scale", opt->time_scale, "simulate: wall seconds per nominal training second")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--deadline", *deadline,
                  "When the allocation ends: unix time or +N[s|m|h] (default: SLURM_JOB_END_TIME)");
  cmd->add_option("--heartbeat", opt->heartbeat_interval_s, "Seconds between progress reports")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--lease", opt->lease_s,
                  "Seconds the sweep's lease outlives its coordinator's last renewal (renewed every sixth of "
                  "it); another coordinator may take the sweep over only after that")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_flag("--take-over", opt->take_over,
                "The sweep is owned by a coordinator that may be alive: wait for its lease to lapse, then take "
                "the sweep over (a dead owner on this host, or an earlier run of this Slurm job, is taken over "
                "without it)");
  cmd->add_option("--exit-status-file", opt->exit_status_file,
                  "Rank 0 writes its exit status here (for launchers that replace it, like mpirun after TERM)");
  cmd->add_flag("--retry-failed", opt->retry_failed, "Train runs that an earlier job left failed again");
  cmd->add_flag("--retry-diverged", opt->retry_diverged, "Train runs that an earlier job left diverged again");
  cmd->add_flag("--keep-branch-points", opt->keep_branch_points,
                "Keep a cooldown trunk's branch-point checkpoints after it and all its branches are done "
                "(by default they are deleted then)");
  cmd->add_option("--device", opt->device, "torch: cpu or cuda (each worker a GPU of its own on its node)")
      ->capture_default_str();
  cmd->add_option("--gpus-per-node", opt->gpus_per_node,
                  "torch, --device cuda: GPUs per node; default: the devices CUDA shows this process")
      ->check(kPositive);
  cmd->add_option("--threads", opt->threads, "torch: intra-op threads per rank, the BLAS pool's too (the same count gives the same bits)")
      ->check(kPositive)
      ->capture_default_str();
  cmd->callback([opt, deadline] {
    if (!deadline->empty()) opt->deadline = parse_deadline(*deadline);
    const int status = run_under_mpi(*opt);
    if (status != 0) throw ExitStatus{status};
  });
}

}  // namespace moesweep::cli
