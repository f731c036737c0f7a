#pragma once
// The observations a fit reads: one finished training run each.
#include <optional>
#include <string>
#include <vector>

namespace moesweep::analysis {

struct Run {
  double n_act = 0;    // active parameters N
  double tokens = 0;   // D
  double experts = 1;  // E
  double loss = 0;     // final eval loss
  std::string label;   // where it came from: "FILE:LINE" or the run key
};

// A CSV with the header n_act,tokens,experts,loss (any column order, extra columns ignored; blank lines
// and lines starting with '#' skipped).
// Throws InputError naming the file, line and field for a missing column, a value that is not a
// number, a non-positive value or E < 1.
std::vector<Run> read_runs_csv(const std::string& path);

// The finished runs of a sweep database (all sweeps when `sweep` is empty). Throws InputError for a
// file that is not a moesweep database or a sweep that does not exist.
std::vector<Run> read_runs_db(const std::string& path, const std::optional<std::string>& sweep);

}  // namespace moesweep::analysis
