// `moesweep-train`: `moesweep run` and `moesweep train`, with LibTorch and MPI. Started by `moesweep`
// (helpers.cpp) with moesweep's own argv, so its help and messages speak of `moesweep run`.
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"moesweep-train: the `run` and `train` commands of moesweep, which `moesweep` starts"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  moesweep::cli::add_run(app);
  moesweep::cli::add_train(app);
  return moesweep::cli::run_cli(app, argc, argv);
}
