// moesweep run SWEEP.toml --db FILE [--workdir DIR] [--backend torch|simulate] ...: under mpirun or srun,
// rank 0 coordinates and the other ranks train; with one rank the sweep runs serially in-process.
#include <mpi.h>

#include <chrono>
#include <cstdlib>
#include <iostream>

#include "commands.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/sweep_runner.h"

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

int run_under_mpi(const orchestrator::SweepRunOptions& options) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) MPI_Init(nullptr, nullptr);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int status = 0;
  try {
    status = orchestrator::run_sweep(options);
  } catch (const InputError& e) {
    if (rank == 0) std::cerr << "moesweep: " << e.what() << "\n";  // every rank read the same file
    status = 2;
  }
  MPI_Finalize();
  return status;
}

}  // namespace

void add_run(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Run a sweep: under mpirun/srun rank 0 coordinates and the rest train");
  auto opt = std::make_shared<orchestrator::SweepRunOptions>();
  auto deadline = std::make_shared<std::string>();
  cmd->add_option("sweep", opt->sweep_path, "Sweep file (TOML)")->required();
  cmd->add_option("--db", opt->db_path, "Sweep database (SQLite; created if missing)")->required();
  cmd->add_option("--workdir", opt->workdir, "Checkpoints go to WORKDIR/<run_key>/")->capture_default_str();
  cmd->add_option("--backend", opt->backend, "torch trains; simulate sleeps and reports the published law")
      ->check(CLI::IsMember({"torch", "simulate"}))
      ->capture_default_str();
  cmd->add_option("--time-scale", opt->time_scale, "simulate: wall seconds per nominal training second")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--deadline", *deadline,
                  "When the allocation ends: unix time or +N[s|m|h] (default: SLURM_JOB_END_TIME)");
  cmd->add_option("--heartbeat", opt->heartbeat_interval_s, "Seconds between progress reports")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_flag("--retry-failed", opt->retry_failed, "Train runs that an earlier job left failed again");
  cmd->add_flag("--retry-diverged", opt->retry_diverged, "Train runs that an earlier job left diverged again");
  cmd->add_flag("--keep-branch-points", opt->keep_branch_points,
                "Keep a cooldown trunk's branch-point checkpoints after it and all its branches are done "
                "(by default they are deleted then)");
  cmd->add_option("--device", opt->device, "torch: cpu or cuda")->capture_default_str();
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
