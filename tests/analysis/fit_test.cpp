#include "moesweep/analysis/fit.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "moesweep/input_error.h"
#include "synthetic_runs.h"

namespace moesweep::analysis {
namespace {

constexpr double kNoise = 0.005;  // in ln L, a little below the paper's 0.0062 train RMSE

// Small enough for the test suite, large enough to find the paper's basin: 243 of the 3^9 grid starts
// (on the paper-like runs they reach the same optimum, to the last digit of the objective, as all
// 19683) and 60 bootstrap refits.
FitOptions quick_options() {
  FitOptions options;
  options.starts = 243;
  options.bootstrap = 60;
  return options;
}

// A fit from 81 starts, with `bootstrap` refits, of the paper-like runs of `truth` with the noise of `seed`.
FitResult fit_runs_drawn_from(const Coefficients& truth, unsigned seed, std::size_t bootstrap) {
  FitOptions options = quick_options();
  options.starts = 81;
  options.bootstrap = bootstrap;
  return fit_law(testing::synthetic_runs(truth, kNoise, seed), options);
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

TEST(Fit, BootstrapIntervalsOnThePaperLikeGridCoverTheComputeOptimaAndShowEMaxIsLoose) {
  const FitResult& fit = paper_like_fit();
  ASSERT_EQ(fit.coefficient_intervals.size(), kCoefficientCount);
  EXPECT_GE(fit.bootstrap_converged, 55u);
  const auto point = to_array(fit.coefficients);
  for (std::size_t i = 0; i < kCoefficientCount; ++i) {
    const Interval& interval = fit.coefficient_intervals[i];
    EXPECT_LT(interval.low, interval.high)
        << kCoefficientNames[i] << ": a zero-width interval claims certainty";
    EXPECT_LE(interval.low, point[i]) << kCoefficientNames[i];
    EXPECT_GE(interval.high, point[i]) << kCoefficientNames[i];
  }
  // The runs stop at E = 64, far below the true E_max = 290, so they barely see Ê saturate (see
  // synthetic_runs.h): what a user must see is an E_max interval spanning a wide range, not a
  // measurement. Whether each interval holds the truth is tested where E_max is identified, below.
  const Interval& e_max = fit.coefficient_intervals[10];
  EXPECT_GT(e_max.high / e_max.low, 3.0) << "[" << e_max.low << ", " << e_max.high << "]";
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

// The 90% intervals of all eleven coefficients are honest: over 16 independent noise draws on a grid
// that identifies every coefficient, each interval holds the true value about 90% of the time, and is
// as wide as the real scatter of the fitted value from draw to draw.
//
// A single draw cannot show this: the coefficients are strongly correlated (a, α, δ, E_start move
// together), so one unlucky draw pushes several of them outside their intervals at once, and with
// correctly calibrated 90% intervals all eleven hold the truth on only about half of the draws. The
// seeds are the first 16, not chosen; the thresholds leave room for sampling error only (at a true 90%
// coverage, 10 or fewer of 16 happens with probability 0.003), and a bootstrap whose refits did not
// move (intervals too narrow) or moved too much (too wide) fails the width check.
TEST(Fit, BootstrapIntervalsAreCalibratedForAllElevenCoefficients) {
  constexpr unsigned kDraws = 16;
  FitOptions options;
  options.starts = 81;  // the grid identifies the law: 81 starts find the same optimum as 3^9
  options.bootstrap = 100;
  options.min_tokens_per_param = 0;  // intervals of the law itself; the floor's choice is tested below
  const auto truth = to_array(paper_coefficients());
  // Compared in the solver's own scale (logs of the positive scales, 1/E_max), where the fitted
  // values scatter roughly symmetrically; the percentile intervals carry over unchanged.
  auto solver_scale = [](std::size_t i, double v) {
    switch (i) {
      case 0:
      case 4:
      case 8:
      case 9:
        return std::log(v);  // a, b, c, e_start
      case 10:
        return 1.0 / v;  // e_max
      default:
        return v;
    }
  };
  std::array<std::size_t, kCoefficientCount> covered{};
  std::array<std::vector<double>, kCoefficientCount> fitted, half_widths;
  for (unsigned seed = 1; seed <= kDraws; ++seed) {
    const FitResult fit = fit_law(testing::identifying_runs(paper_coefficients(), kNoise, seed), options);
    ASSERT_EQ(fit.coefficient_intervals.size(), kCoefficientCount);
    EXPECT_GE(fit.bootstrap_converged, 90u) << "seed " << seed;
    EXPECT_TRUE(coefficients_at_bounds(fit.coefficients).empty()) << "seed " << seed;
    const auto point = to_array(fit.coefficients);
    for (std::size_t i = 0; i < kCoefficientCount; ++i) {
      const Interval& interval = fit.coefficient_intervals[i];
      if (interval.low <= truth[i] && truth[i] <= interval.high) ++covered[i];
      fitted[i].push_back(solver_scale(i, point[i]));
      half_widths[i].push_back(std::abs(solver_scale(i, interval.high) - solver_scale(i, interval.low)) / 2);
    }
  }
  std::size_t total = 0;
  for (std::size_t i = 0; i < kCoefficientCount; ++i) {
    total += covered[i];
    EXPECT_GE(covered[i], 11u) << kCoefficientNames[i] << ": the truth was inside " << covered[i] << " of "
                               << kDraws << " 90% intervals";
    double mean = 0, mean_half_width = 0;
    for (std::size_t k = 0; k < kDraws; ++k)
      mean += fitted[i][k] / kDraws, mean_half_width += half_widths[i][k] / kDraws;
    double variance = 0;
    for (const double v : fitted[i]) variance += (v - mean) * (v - mean) / (kDraws - 1);
    // A 90% interval of a normal estimate is ±1.645 standard deviations.
    const double ratio = mean_half_width / (1.645 * std::sqrt(variance));
    EXPECT_GT(ratio, 0.6) << kCoefficientNames[i] << ": bootstrap intervals narrower than the real scatter";
    EXPECT_LT(ratio, 1.7) << kCoefficientNames[i] << ": bootstrap intervals wider than the real scatter";
    std::printf("  %-8s covered %2zu/%u  interval half-width / (1.645 sd of fits) %.2f\n",
                std::string(kCoefficientNames[i]).c_str(), covered[i], kDraws, ratio);
  }
  EXPECT_GE(total, 0.8 * kDraws * kCoefficientCount) << total << " of " << kDraws * kCoefficientCount;
}

TEST(Fit, EStartStaysAtOrAboveOneEvenWhenTheDataWantLess) {
  // Runs from a law with E_start = 0.5: the best unconstrained fit would put E_start below one
  // expert's worth. The fit and every bootstrap refit must stop at the bound, and say so.
  Coefficients truth = paper_coefficients();
  truth.e_start = 0.5;
  const FitResult fit = fit_runs_drawn_from(truth, 8, 20);
  EXPECT_GE(fit.coefficients.e_start, kMinEStart);
  EXPECT_NEAR(fit.coefficients.e_start, kMinEStart, 1e-6) << "the data pull E_start onto its bound";
  EXPECT_GE(fit.coefficient_intervals[9].low, kMinEStart * (1 - 1e-12)) << "bootstrap refits keep the bound";
  EXPECT_EQ(coefficients_at_bounds(fit.coefficients), std::vector<std::string>{"e_start"});
}

TEST(Fit, RunsWithoutSaturationGiveEMaxAtItsBoundWithAnHonestInterval) {
  // Runs from a law whose benefit of experts never saturates (E_max far beyond the bound). The fit
  // must not report a precise astronomical E_max (in ln E_max that limit is flat, and refits started
  // there never moved: intervals like [1e27, 1e27]); it stops at kMaxEMax, flags it, and the
  // bootstrap interval runs from what the runs do show (no saturation up to E = 64) to the bound.
  Coefficients truth = paper_coefficients();
  truth.e_max = 1e12;
  const FitResult fit = fit_runs_drawn_from(truth, 9, 40);
  EXPECT_TRUE(e_max_at_bound(fit.coefficients.e_max)) << fit.coefficients.e_max;
  EXPECT_EQ(coefficients_at_bounds(fit.coefficients), std::vector<std::string>{"e_max"});
  const Interval& e_max = fit.coefficient_intervals[10];
  EXPECT_TRUE(e_max_at_bound(e_max.high)) << e_max.high;
  EXPECT_LT(e_max.low, 0.5 * e_max.high) << "refits moved off the bound: the interval is not a point";
  EXPECT_GT(e_max.low, 64) << "yet the runs do rule out saturation below their largest E";
}

TEST(Fit, NoConvergedStartIsAnErrorNotAResult) {
  // One solver iteration is never enough to converge from the grid: the fit must throw (exit 1 in the
  // CLI) rather than return the best unconverged point.
  FitOptions options = quick_options();
  options.starts = 9;
  options.bootstrap = 0;
  options.max_iterations = 1;
  try {
    fit_law(testing::synthetic_runs(paper_coefficients(), kNoise, 10), options);
    FAIL() << "expected std::runtime_error";
  } catch (const InputError& e) {
    FAIL() << "not bad input: " << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("did not converge from any of the 9 starting points"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line";
  }
}

TEST(Fit, RepeatsOfOnePointAreBadInputNotAPerfectFit) {
  // 40 runs of one configuration: enough rows, no information about the law's shape.
  std::vector<analysis::Run> runs(40, analysis::Run{1e8, 1e9, 1, 3.0, ""});
  for (std::size_t i = 0; i < runs.size(); ++i) runs[i].loss = 3.0 + 0.001 * static_cast<double>(i % 7);
  try {
    fit_law(runs, quick_options());
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("only 1 distinct (n_act, tokens, experts) points to fit 5"),
              std::string::npos)
        << e.what();
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
  // Nor the training domain: the floors' validation figures come from training runs only.
  ASSERT_EQ(clean.domain.candidates.size(), corrupted.domain.candidates.size());
  for (std::size_t f = 0; f < clean.domain.candidates.size(); ++f)
    EXPECT_EQ(clean.domain.candidates[f].validation.rmse_log,
              corrupted.domain.candidates[f].validation.rmse_log);
  EXPECT_EQ(clean.domain.min_tokens_per_param, corrupted.domain.min_tokens_per_param);
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
  const std::vector<analysis::Run> all = testing::synthetic_runs(paper_coefficients(), kNoise, 4, {1, 4, 16});
  std::vector<analysis::Run> runs(all.begin(), all.begin() + 4);  // four dense runs
  runs.insert(runs.end(), all.begin() + 40, all.begin() + 44);    // four with E = 4
  runs.insert(runs.end(), all.begin() + 80, all.begin() + 84);    // four with E = 16
  FitOptions options = quick_options();
  options.heldout.count = 2;  // leaves 10 training runs for 11 coefficients
  try {
    fit_law(runs, options);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("need at least 11"), std::string::npos) << e.what();
  }
}

// ---- The training-domain rule, on plain figures -------------------------------------------------------

FloorCandidate candidate(double floor, double rmse, bool eligible = true, bool converged = true) {
  FloorCandidate c;
  c.min_tokens_per_param = floor;
  c.fitted_runs = 100;
  c.eligible = eligible;
  c.converged = converged;
  c.validation = ErrorSummary{rmse, 10 * rmse, 10};
  return c;
}

TEST(TrainingDomain, TheLowestFloorWithinTheMarginOfTheBestWins) {
  // The paper's figures (lowest-loss:10, validation RMSE per floor): 7 is best, 5 is 16% worse.
  const std::vector<FloorCandidate> paper = {
      candidate(0, 0.00803),  candidate(1, 0.00620),  candidate(2, 0.00496),
      candidate(3, 0.00414),  candidate(5, 0.00334),  candidate(7, 0.00289),
      candidate(10, 0.00322), candidate(15, 0.00388), candidate(20, 0.00570)};
  EXPECT_EQ(choose_training_domain(paper).chosen, 5u) << "floor 7";
  // Law-generated runs: the floors differ by noise only, so every run is fitted.
  const std::vector<FloorCandidate> noise = {candidate(0, 0.00674), candidate(7, 0.00671),
                                             candidate(20, 0.00659)};
  EXPECT_EQ(choose_training_domain(noise).chosen, 0u);
  // With no margin, the lowest RMSE.
  EXPECT_EQ(choose_training_domain(noise, DomainChoiceOptions{0.0, 0.0}).chosen, 2u);
  // Noise-free runs: every floor predicts to rounding, and every run is fitted.
  const std::vector<FloorCandidate> exact = {candidate(0, 3e-13), candidate(2, 5e-14), candidate(7, 1e-13)};
  EXPECT_EQ(choose_training_domain(exact).chosen, 0u);
  // A wider margin trades the paper's floor 7 for 5.
  EXPECT_EQ(choose_training_domain(paper, DomainChoiceOptions{0.2, 1e-6}).chosen, 4u);
}

TEST(TrainingDomain, IneligibleOrUnconvergedFloorsAreNeverChosen) {
  const std::vector<FloorCandidate> candidates = {candidate(0, 0.009), candidate(5, 0.001, false),
                                                  candidate(7, 0.002, true, false), candidate(10, 0.004)};
  const DomainChoice choice = choose_training_domain(candidates);
  EXPECT_EQ(choice.chosen, 3u);
  EXPECT_NE(choice.reason.find("best 0.004 at D/N >= 10"), std::string::npos) << choice.reason;
  EXPECT_FALSE(choose_training_domain({candidate(0, 0.001, false), candidate(5, 0.001, true, false)}).chosen);
  EXPECT_FALSE(choose_training_domain({}).chosen);
}

TEST(TrainingDomain, NoValidationRunsMeansEveryTrainingRunIsFitted) {
  FitOptions options = quick_options();
  options.starts = 27;
  options.bootstrap = 0;
  options.heldout.count = 0;
  const FitResult fit = fit_law(testing::synthetic_runs(paper_coefficients(), kNoise, 11), options);
  EXPECT_FALSE(fit.domain.by_validation);
  EXPECT_TRUE(fit.domain.candidates.empty());
  EXPECT_EQ(fit.domain.min_tokens_per_param, 0);
  EXPECT_EQ(fit.fitted_runs.size(), 280u);
  EXPECT_TRUE(fit.below_floor.empty());
}

TEST(TrainingDomain, AGivenFloorLeavesTheShortRunsOutOfTheFit) {
  const std::vector<analysis::Run> runs = testing::synthetic_runs(paper_coefficients(), kNoise, 12);
  FitOptions options = quick_options();
  options.starts = 27;
  options.bootstrap = 0;
  options.min_tokens_per_param = 20;
  const FitResult fit = fit_law(runs, options);
  EXPECT_TRUE(fit.domain.candidates.empty());
  for (const std::size_t i : fit.fitted_runs) EXPECT_GE(runs[i].tokens, 20 * runs[i].n_act);
  for (const std::size_t i : fit.below_floor) EXPECT_LT(runs[i].tokens, 20 * runs[i].n_act);
  EXPECT_EQ(fit.fitted_runs.size() + fit.below_floor.size(), 270u);
  EXPECT_EQ(fit.train.n, fit.fitted_runs.size());
  EXPECT_EQ(fit.below_floor_errors.n, fit.below_floor.size());
}

// ---- Identifiability ----------------------------------------------------------------------------------

// 24 runs of the published law at E ∈ {1, 8}: two values of Ê cannot place E_start and E_max, which
// then trade against a/δ and b/ω. The fit holds them at the published values and says so, and it still
// predicts the runs' own expert counts exactly.
TEST(Identifiability, TwoExpertCountsHoldEStartAndEMaxAtThePublishedValues) {
  const Coefficients truth = paper_coefficients();
  const std::vector<analysis::Run> runs =
      testing::runs_on_grid(truth, 0.0, 1, {1e8, 4e8, 1.6e9}, {2e9, 8e9, 3.2e10, 1.28e11}, {1, 8});
  ASSERT_EQ(runs.size(), 24u);
  FitOptions options = quick_options();
  options.heldout.count = 0;
  options.bootstrap = 20;
  const FitResult fit = fit_law(runs, options);
  EXPECT_EQ(fit.coefficients.form, LawForm::joint);
  EXPECT_TRUE(fit.expert_transform_fixed);
  EXPECT_EQ(fit.coefficients.e_start, truth.e_start);
  EXPECT_EQ(fit.coefficients.e_max, truth.e_max);
  EXPECT_FALSE(fit.fitted[9]) << "e_start";
  EXPECT_FALSE(fit.fitted[10]) << "e_max";
  EXPECT_TRUE(std::isnan(fit.coefficient_intervals[9].low)) << "no interval for a coefficient held fixed";
  ASSERT_FALSE(fit.warnings.empty());
  EXPECT_NE(fit.warnings.front().find("only 2 distinct expert counts (E = 1, 8): E_start and E_max are not "
                                      "identified, so they are held at the published 2.0732 and 290.45"),
            std::string::npos)
      << fit.warnings.front();
  EXPECT_LT(fit.train.rmse_log, 1e-4);
  for (const double n : {2e8, 1e9})
    for (const double e : {1.0, 8.0})
      EXPECT_NEAR(predict_loss(fit.coefficients, n, 5e10, e), predict_loss(truth, n, 5e10, e), 1e-3)
          << "N " << n << " E " << e;
}

TEST(Identifiability, OneExpertCountAboveOneIsBadInput) {
  const std::vector<analysis::Run> runs = testing::runs_on_grid(
      paper_coefficients(), kNoise, 1, {1e8, 4e8, 1.6e9}, {2e9, 8e9, 3.2e10, 1.28e11}, {8});
  FitOptions options = quick_options();
  options.heldout.count = 0;
  try {
    fit_law(runs, options);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("all 12 fitted runs have E = 8: with one expert count"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line";
  }
}

// 12 runs for 11 coefficients: the fit interpolates, and a bootstrap resample of 12 runs rarely holds
// 11 distinct ones. The report must say so, and the intervals must not pass for measurements.
TEST(Identifiability, BarelyMoreRunsThanCoefficientsWarnsAndFlagsTheIntervals) {
  const std::vector<analysis::Run> runs =
      testing::runs_on_grid(paper_coefficients(), kNoise, 3, {2e8, 1.6e9}, {4e9, 6.4e10}, {1, 4, 32});
  ASSERT_EQ(runs.size(), 12u);
  FitOptions options = quick_options();
  options.heldout.count = 0;
  options.bootstrap = 40;
  const FitResult fit = fit_law(runs, options);
  EXPECT_FALSE(fit.expert_transform_fixed);
  bool warned = false;
  for (const std::string& w : fit.warnings)
    warned = warned ||
             w.find("12 fitted runs for 11 coefficients (fewer than 3 per coefficient)") != std::string::npos;
  EXPECT_TRUE(warned);
  EXPECT_FALSE(fit.intervals_reliable);
  EXPECT_GT(fit.bootstrap_underdetermined, 20u);
  EXPECT_EQ(fit.bootstrap_converged + fit.bootstrap_underdetermined + fit.bootstrap_failed,
            fit.bootstrap_fits)
      << "every replicate is counted";
}

TEST(Fit, EveryBootstrapReplicateIsCountedAndRefitsStartFromSeveralPoints) {
  const FitResult& fit = paper_like_fit();
  EXPECT_EQ(fit.bootstrap_converged + fit.bootstrap_underdetermined + fit.bootstrap_failed,
            fit.bootstrap_fits);
  EXPECT_EQ(fit.bootstrap_underdetermined, 0u);
  EXPECT_TRUE(fit.intervals_reliable);
  ASSERT_EQ(fit.coefficient_se.size(), kCoefficientCount);
  for (std::size_t i = 0; i < kCoefficientCount; ++i)
    EXPECT_GT(fit.coefficient_se[i], 0) << kCoefficientNames[i];
}

TEST(Fit, ExcludedRunsTakePartInNothing) {
  std::vector<analysis::Run> runs = testing::synthetic_runs(paper_coefficients(), kNoise, 13, {1});
  runs.push_back(analysis::Run{1e8, 1e9, 1, 9.0, "outlier"});  // the highest loss by far
  FitOptions options = quick_options();
  options.bootstrap = 0;
  options.exclude = parse_exclude_rule("highest-loss:1");
  const FitResult fit = fit_law(runs, options);
  EXPECT_EQ(fit.excluded, std::vector<std::size_t>{runs.size() - 1});
  EXPECT_EQ(fit.training.size() + fit.heldout.size(), runs.size() - 1);
  EXPECT_EQ(to_string(parse_exclude_rule("highest-loss:5")), "highest-loss:5");
  EXPECT_THROW(parse_exclude_rule("lowest-loss:5"), InputError);
  EXPECT_THROW(parse_exclude_rule("highest-loss"), InputError);
}

TEST(Fit, ThePaperObjectiveWeightsLowLossRunsAndPenalisesTheRawParameters) {
  // On three runs, by hand: weights (ln L)^-30 rescaled to mean 1, Huber δ, plus 1e-5·Σp².
  const std::vector<analysis::Run> runs = {
      {1e8, 1e9, 1, 3.0, ""}, {1e9, 1e10, 4, 2.6, ""}, {4e8, 2e10, 8, 2.7, ""}};
  const Coefficients k = paper_coefficients();
  const std::vector<std::size_t> all = {0, 1, 2};
  double weights[3], mean = 0;
  for (int i = 0; i < 3; ++i) mean += (weights[i] = std::pow(std::log(runs[i].loss), -30)) / 3;
  double expected = 0;
  for (int i = 0; i < 3; ++i) {
    const double r = std::log(predict_loss(k, runs[i].n_act, runs[i].tokens, runs[i].experts) / runs[i].loss);
    const double huber = std::abs(r) <= 0.01 ? 0.5 * r * r : 0.01 * (std::abs(r) - 0.005);
    expected += weights[i] / mean * huber;
  }
  const double p[] = {std::log(k.a),    std::log(k.b), std::log(k.c), k.alpha, k.beta,
                      k.delta,          k.gamma,       k.omega,       k.zeta,  std::log(k.e_start),
                      std::log(k.e_max)};
  for (const double v : p) expected += 1e-5 * v * v;
  EXPECT_NEAR(objective_value(k, runs, all, Objective::paper, 0.01), expected, 1e-12);
  EXPECT_EQ(parse_objective("paper"), Objective::paper);
  EXPECT_THROW(parse_objective("l2"), InputError);
}

}  // namespace
}  // namespace moesweep::analysis
