// `moesweep`: the light commands, without LibTorch, MPI or Ceres. `run`, `train` and `fit` are
// exec'd in the helper executables beside it (helpers.cpp).
#include "commands.h"

int main(int argc, char** argv) {
  moesweep::cli::hand_over_to_helper(argc, argv);  // before any other work
  CLI::App app{"moesweep: Mixture-of-Experts scaling-law sweeps (Ludziejewski et al., ICML 2025)"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  moesweep::cli::add_expand(app);
  moesweep::cli::add_status(app);
  moesweep::cli::add_helper_command(app, "fit", "Subcommands");
  moesweep::cli::add_predict(app);
  moesweep::cli::add_plan(app);
  moesweep::cli::add_prepare_data(app);
  moesweep::cli::add_submit(app);
  const char* training = "Training (in moesweep-train, with LibTorch and MPI)";
  moesweep::cli::add_helper_command(app, "run", training);
  moesweep::cli::add_helper_command(app, "train", training);
  return moesweep::cli::run_cli(app, argc, argv);
}
