#include "moesweep/analysis/fit.h"

#include <gtest/gtest.h>

#include <cmath>

#include "moesweep/input_error.h"
#include "synthetic_runs.h"

namespace moesweep::analysis {
namespace {

constexpr double kNoise = 0.005;  // in ln L, a little below the paper's 0.0062 train RMSE

// Small enough for the test suite, large enough to find the paper's basin: 729 of the 3^9 grid starts
// and 60 bootstrap refits.
FitOptions quick_options() {
  FitOptions options;
  options.starts = 729;
  options.bootstrap = 60;
  return options;
}

const FitResult& paper_like_fit() {
  static const FitResult fit =
      fit_law(testing::synthetic_runs(paper_coefficients(), kNoise, 1), quick_options());
  return fit;
}

TEST(Fit, RecoversAPaperLikeLawToTheNoiseLevelOnHeldOutRuns) {
  const FitResult& fit = paper_like_fit();
  EXPECT_EQ(fit.coefficients.form, LawForm::joint);
  EXPECT_EQ(fit.heldout.size(), 10u);
  EXPECT_EQ(fit.train.n, 270u);
  EXPECT_NEAR(fit.train.rmse_log, kNoise, 0.2 * kNoise);
  EXPECT_LT(fit.heldout_errors.rmse_log, 1.5 * kNoise)
      << "the lowest-loss runs extrapolate at the noise level";
  EXPECT_LT(fit.heldout_errors.max_abs_error, 0.03);
  EXPECT_GT(fit.converged_starts, 0u);
}

TEST(Fit, BootstrapIntervalsCoverTheTrueComputeOptimaAndMostCoefficients) {
  const FitResult& fit = paper_like_fit();
  ASSERT_EQ(fit.coefficient_intervals.size(), kCoefficientCount);
  EXPECT_GE(fit.bootstrap_converged, 55u);
  const auto truth = to_array(paper_coefficients());
  std::size_t covered = 0;
  for (std::size_t i = 0; i < kCoefficientCount; ++i) {
    const Interval& interval = fit.coefficient_intervals[i];
    EXPECT_LT(interval.low, interval.high) << kCoefficientNames[i];
    if (interval.low <= truth[i] && truth[i] <= interval.high) ++covered;
  }
  // Eleven correlated 90% intervals: some miss by chance; most must hold the truth.
  EXPECT_GE(covered, 7u);
  // What a user acts on: the compute-optimal model at 1e22 FLOPs, for every E.
  const std::vector<Optimum> true_optima = compute_optimal(paper_coefficients(), Budget{1e22});
  ASSERT_EQ(fit.headline.size(), true_optima.size());
  for (std::size_t e = 0; e < true_optima.size(); ++e) {
    const HeadlineInterval& h = fit.headline[e];
    EXPECT_EQ(h.point.experts, true_optima[e].experts);
    EXPECT_LE(h.n_act.low, true_optima[e].n_act) << "E = " << h.point.experts;
    EXPECT_GE(h.n_act.high, true_optima[e].n_act) << "E = " << h.point.experts;
    EXPECT_LE(h.loss.low, true_optima[e].loss) << "E = " << h.point.experts;
    EXPECT_GE(h.loss.high, true_optima[e].loss) << "E = " << h.point.experts;
  }
}

TEST(Fit, HeldOutRunsNeverChangeTheChosenFit) {
  // Corrupting the held-out losses must leave the coefficients bit-for-bit unchanged.
  std::vector<analysis::Run> runs = testing::synthetic_runs(paper_coefficients(), kNoise, 2);
  FitOptions options = quick_options();
  options.starts = 81;
  options.bootstrap = 0;
  const FitResult clean = fit_law(runs, options);
  for (const std::size_t i : clean.heldout) runs[i].loss *= 0.9;  // still the lowest, so still held out
  const FitResult corrupted = fit_law(runs, options);
  ASSERT_EQ(clean.heldout, corrupted.heldout);
  const auto a = to_array(clean.coefficients), b = to_array(corrupted.coefficients);
  for (std::size_t i = 0; i < kCoefficientCount; ++i) EXPECT_EQ(a[i], b[i]) << kCoefficientNames[i];
  EXPECT_GT(corrupted.heldout_errors.rmse_log, 5 * clean.heldout_errors.rmse_log);
}

TEST(Fit, DenseOnlyRunsFitTheChinchillaForm) {
  const std::vector<analysis::Run> runs = testing::synthetic_runs(paper_coefficients(), kNoise, 3, {1});
  FitOptions options = quick_options();
  options.bootstrap = 20;
  const FitResult fit = fit_law(runs, options);
  EXPECT_EQ(fit.coefficients.form, LawForm::dense);
  EXPECT_EQ(fit.starts, 243u) << "3^5 grid over a, alpha, b, beta, c";
  EXPECT_EQ(fit.coefficients.gamma, 0);
  EXPECT_EQ(fit.coefficients.delta, 0);
  EXPECT_EQ(fit.coefficients.zeta, 0);
  EXPECT_EQ(fit.coefficients.omega, 0);
  EXPECT_LT(fit.heldout_errors.rmse_log, 2 * kNoise);
  ASSERT_EQ(fit.headline.size(), 1u) << "a dense law says nothing about E > 1";
  EXPECT_NEAR(fit.headline[0].point.n_act / 1e9, 18.8, 5.0);
}

TEST(Fit, HeldOutRulesPickTheRunsTheyName) {
  std::vector<analysis::Run> runs = {analysis::Run{1e8, 1e9, 1, 3.0, ""},
                                     {1e9, 1e9, 1, 2.5, ""},
                                     {1e8, 1e11, 1, 2.4, ""},
                                     {2e8, 1e10, 4, 2.6, ""}};
  EXPECT_EQ(select_heldout(runs, parse_heldout_rule("lowest-loss:2")), (std::vector<std::size_t>{1, 2}));
  EXPECT_EQ(select_heldout(runs, parse_heldout_rule("top-compute:1")), (std::vector<std::size_t>{2}));
  EXPECT_EQ(select_heldout(runs, parse_heldout_rule("largest-n:1")), (std::vector<std::size_t>{1}));
  EXPECT_EQ(parse_heldout_rule("lowest-loss").count, 10u);
  EXPECT_EQ(to_string(parse_heldout_rule("top-compute:7")), "top-compute:7");
  EXPECT_THROW(parse_heldout_rule("random:5"), InputError);
  EXPECT_THROW(parse_heldout_rule("lowest-loss:x"), InputError);
}

TEST(Fit, TooFewRunsForElevenCoefficientsIsBadInput) {
  const std::vector<analysis::Run> all = testing::synthetic_runs(paper_coefficients(), kNoise, 4, {1, 4});
  std::vector<analysis::Run> runs(all.begin(), all.begin() + 6);  // six dense runs
  runs.insert(runs.end(), all.begin() + 40, all.begin() + 46);    // six with E = 4
  FitOptions options = quick_options();
  options.heldout.count = 2;  // leaves 10 training runs for 11 coefficients
  try {
    fit_law(runs, options);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("need at least 11"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moesweep::analysis
