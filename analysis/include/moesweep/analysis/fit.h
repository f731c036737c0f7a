#pragma once
// Fitting the joint law to finished runs, as the authors did (Huber loss on log L, a 3^9 grid of
// starts) but with an honest extrapolation check: the held-out runs never influence the chosen fit.
#include <cstddef>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moesweep/analysis/law.h"
#include "moesweep/analysis/plan.h"
#include "moesweep/analysis/runs.h"

namespace moesweep::analysis {

// Which runs to hold out: the K with the lowest loss (the authors' choice), the K with the most
// training compute 6·N·D, or the K largest N_act. K = 0 holds nothing out.
struct HeldoutRule {
  enum class Kind { lowest_loss, top_compute, largest_n };
  Kind kind = Kind::lowest_loss;
  std::size_t count = 10;
};
// "lowest-loss:10", "top-compute:5", "largest-n:8". Throws InputError naming --heldout.
HeldoutRule parse_heldout_rule(const std::string& text);
std::string to_string(const HeldoutRule& rule);
// The indices of the held-out runs, ties broken by input order.
std::vector<std::size_t> select_heldout(const std::vector<Run>& runs, const HeldoutRule& rule);

// The full start grid: 3 levels for each of the nine exponents and scales (3^9 = 19683); a dense-only
// fit has five free coefficients (3^5 = 243).
inline constexpr std::size_t kFullJointGrid = 19683;

// The fit's bounds on the saturation parameters. E_start ≥ 1: Ê at E = 1 is about E_start, and below
// one expert's worth the transform has no meaning. E_max ≤ kMaxEMax: a fit that reaches this bound
// found no saturation of the benefit of experts in the runs (E_max is then not identified; the report
// and the summary say so).
inline constexpr double kMinEStart = 1.0;
inline constexpr double kMaxEMax = 1e6;
// Whether a fitted or bootstrap E_max sits at kMaxEMax, i.e. the runs show no saturation.
inline bool e_max_at_bound(double e_max) { return e_max >= 0.999 * kMaxEMax; }

struct FitOptions {
  HeldoutRule heldout;
  double huber_delta = 0.01;
  std::size_t starts = kFullJointGrid;  // fewer takes an evenly spread subset of the grid
  std::size_t bootstrap = 200;          // resamples of the training runs; 0 = no intervals
  unsigned seed = 0;                    // bootstrap resampling
  unsigned threads = 0;                 // 0 = all hardware threads
  double headline_flops = 1e22;         // budget of the planner answers the bootstrap gives intervals for
  int max_iterations = 500;  // per solve (short solves use at most 20); a solve that hits it did not converge
  // Called from the fitting threads as work completes: stage is "screen", "short solves", "polish" or
  // "bootstrap".
  std::function<void(std::string_view stage, std::size_t done, std::size_t total)> progress;
};

struct ErrorSummary {
  double rmse_log = 0;       // RMSE of ln L − ln L̂
  double max_abs_error = 0;  // max |L − L̂|
  std::size_t n = 0;
};

// The 5th and 95th percentiles of the bootstrap fits; NaN when there were none.
struct Interval {
  double low = std::numeric_limits<double>::quiet_NaN();
  double high = std::numeric_limits<double>::quiet_NaN();
};

// A planner headline (compute-optimal model at options.headline_flops for one E) with its interval.
struct HeadlineInterval {
  Optimum point;  // from the chosen fit
  Interval n_act, tokens, loss;
};

struct FitResult {
  Coefficients coefficients;         // form == dense when every run has E = 1
  double objective = 0;              // Σ Huber_δ(ln L̂ − ln L) over the training runs, at the chosen fit
  std::size_t starts = 0;            // grid points screened
  std::size_t polished = 0;          // the best of them, solved to convergence (see fit.cpp)
  std::size_t converged_starts = 0;  // of the polished ones
  std::vector<std::size_t> heldout;  // indices into the runs
  ErrorSummary train, heldout_errors;
  std::size_t bootstrap_fits = 0, bootstrap_converged = 0;
  std::vector<Interval> coefficient_intervals;  // kCoefficientNames order; empty without bootstrap
  std::vector<HeadlineInterval> headline;       // one per kPlannerExperts entry (just E = 1 when dense)
  double seconds = 0;
};

// Throws InputError when the training runs (or their distinct (N_act, D, E) points) are fewer than the
// fitted parameters, std::runtime_error when no start converges (no result, so nothing to report).
FitResult fit_law(const std::vector<Run>& runs, const FitOptions& options);

// The names of the coefficients a fit left on one of its bounds (E_start at kMinEStart, E_max at
// kMaxEMax): the runs did not identify them. Empty for a dense fit, which does not fit either.
std::vector<std::string> coefficients_at_bounds(const Coefficients& k);

ErrorSummary error_summary(const Coefficients& k, const std::vector<Run>& runs,
                           const std::vector<std::size_t>& which);

}  // namespace moesweep::analysis
