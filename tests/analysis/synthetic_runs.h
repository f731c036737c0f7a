#pragma once
// Runs generated from a known law on a paper-like grid, for the recovery tests and the fit benchmark.
#include <cmath>
#include <random>
#include <vector>

#include "moesweep/analysis/law.h"
#include "moesweep/analysis/runs.h"

namespace moesweep::analysis::testing {

// 5 model sizes (≈ 30M to 2B active parameters) × 8 token counts (0.5B to 130B) × 7 expert counts
// (1 to 64): 280 runs, the size of the paper's sweep. Losses carry multiplicative log-normal noise of
// `log_noise` standard deviation, from a fixed seed.
inline std::vector<Run> synthetic_runs(const Coefficients& truth, double log_noise, unsigned seed,
                                       std::vector<double> experts = {1, 2, 4, 8, 16, 32, 64}) {
  const double n_acts[] = {3e7, 1e8, 3e8, 8e8, 2e9};
  const double tokens[] = {5e8, 1e9, 2.2e9, 5e9, 1.1e10, 2.5e10, 6e10, 1.3e11};
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, log_noise);
  std::vector<Run> runs;
  for (const double e : experts)
    for (const double n : n_acts)
      for (const double d : tokens)
        runs.push_back(Run{n, d, e, predict_loss(truth, n, d, e) * std::exp(noise(rng)), "synthetic"});
  return runs;
}

}  // namespace moesweep::analysis::testing
