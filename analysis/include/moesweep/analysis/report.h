#pragma once
// What `moesweep fit` hands back: the --json document and the --out folder (fit.toml, report.md, plots).
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moesweep/analysis/fit.h"

namespace moesweep::analysis {

// {"form", "coefficients": {a, alpha, ..., e_max}, "train": {rmse_log, max_abs_error, n},
//  "heldout": {...}, "intervals", "heldout_runs", "compute_optimal", ...} in DESIGN.md's sign convention.
// An empty held-out set has null errors.
nlohmann::json fit_json(const FitResult& fit, const std::vector<Run>& runs, const FitOptions& options,
                        const std::string& source);

// Writes fit.toml, report.md and the PNG plots (drawn by gnuplot) into `dir`, creating it. Returns
// warnings for what could not be drawn (no gnuplot on PATH, a failed plot); the report says the same.
std::vector<std::string> write_fit_report(const std::filesystem::path& dir, const FitResult& fit,
                                          const std::vector<Run>& runs, const FitOptions& options,
                                          const std::string& source);

}  // namespace moesweep::analysis
