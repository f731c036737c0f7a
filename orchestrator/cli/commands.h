#pragma once
// Each subcommand of the `moesweep` executable lives in its own cmd_*.cpp and registers itself here.
// A command reports failure by throwing: moesweep::InputError → exit 2, ExitStatus → its code,
// anything else → exit 1. One line on stderr in every case.
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
