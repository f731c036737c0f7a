#pragma once
// Each subcommand of the `moesweep` executable lives in its own cmd_*.cpp and registers itself here.
// A command reports failure by throwing: moesweep::InputError → exit 2, ExitStatus → its code,
// anything else → exit 1. One line on stderr in every case.
#include <CLI/CLI.hpp>

namespace moesweep::cli {

struct ExitStatus {
  int code;
};

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
