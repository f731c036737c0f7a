// `moesweep-fit`: `moesweep fit`, with Ceres. Started by `moesweep` (helpers.cpp) with moesweep's own
// argv, so its help and messages speak of `moesweep fit`.
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"moesweep-fit: the `fit` command of moesweep, which `moesweep` starts"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  moesweep::cli::add_fit(app);
  return moesweep::cli::run_cli(app, argc, argv);
}
