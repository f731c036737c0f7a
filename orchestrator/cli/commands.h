#pragma once
// Each subcommand lives in its own cmd_*.cpp and registers itself here. `moesweep` holds the light ones
// (no LibTorch, MPI or Ceres: `status` starts in milliseconds); helper executables beside it hold the
// rest, `run` and `train` in moesweep-train, `fit` in moesweep-fit, and `moesweep` hands itself over to
// them (exec, same process) when asked for those (helpers.cpp).
// A command reports failure by throwing: moesweep::InputError → exit 2, ExitStatus → its code,
// anything else → exit 1. One line on stderr in every case (run_cli).
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdlib>
#include <string>

namespace moesweep::cli {

struct ExitStatus {
  int code;
};

// Checks for numeric options. CLI11's PositiveNumber says "Value -1 not in range 0.000000 to 1797693…"
// (the whole of DBL_MAX); these say "--heartbeat: must be positive, got -1".
inline CLI::Validator number_check(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0' || !std::isfinite(value)) return "'" + text + "' is not a number";
        if (zero_allowed ? value < 0 : value <= 0)
          return std::string(zero_allowed ? "must not be negative" : "must be positive") + ", got " + text;
        return "";
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}
inline const CLI::Validator kPositive = number_check(false);
inline const CLI::Validator kNonNegative = number_check(true);

// Parses the command line and runs the chosen subcommand; returns the exit status the contract above
// gives. Every executable's main().
int run_cli(CLI::App& app, int argc, char** argv);

// `moesweep run|train|fit ...`: execs the helper executable that holds the command (moesweep-train,
// moesweep-fit; beside this one) with the same arguments and does not return; when it is missing, one line
// on stderr and exit 2. Any other command: returns.
void hand_over_to_helper(int argc, char** argv);
// Lists a command of a helper executable in `moesweep --help`, under `group` (its own --help comes from
// the helper).
void add_helper_command(CLI::App& app, const std::string& command, const std::string& group);
// One-line descriptions of the helpers' commands, for moesweep's --help and the helpers' own.
inline constexpr const char* kRunDescription =
    "Run a sweep: under mpirun/srun rank 0 coordinates and the rest train";
inline constexpr const char* kFitDescription =
    "Fit the joint scaling law to finished runs, with a held-out extrapolation check";
inline constexpr const char* kTrainDescription =
    "Train one run file (no database). Exit 3 if the loss diverges, 4 if stopped by SIGTERM/SIGUSR1/SIGINT "
    "(a checkpoint is written; rerun with --resume). Data-parallel over all ranks under mpirun/srun.";

void add_expand(CLI::App& app);
void add_status(CLI::App& app);
void add_run(CLI::App& app);
void add_fit(CLI::App& app);
void add_predict(CLI::App& app);
void add_plan(CLI::App& app);
void add_prepare_data(CLI::App& app);
void add_train(CLI::App& app);
void add_submit(CLI::App& app);

}  // namespace moesweep::cli
