// The fit on real run tables (../shared/data beside the project's root; its README gives sources and
// units): Hoffmann et al.'s points as Epoch AI extracted them, and the 270 runs behind Ludziejewski et
// al.'s joint fit. Each test skips, saying where it looked, when its table is absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "moesweep/analysis/fit.h"
#include "moesweep/analysis/published.h"
#include "moesweep/analysis/runs.h"

namespace moesweep::analysis {
namespace {

const std::filesystem::path kSharedData = MOESWEEP_SHARED_DATA;
const std::string kChinchilla = "chinchilla-epoch/runs.csv";
const std::string kPaperRuns = "ludziejewski2025/runs.csv";

// The table's path, or "" when it is absent (the caller skips).
std::string table(const std::string& relative) {
  const std::filesystem::path path = kSharedData / relative;
  return std::filesystem::is_regular_file(path) ? path.string() : "";
}

#define REQUIRE_TABLE(variable, relative)                                                               \
  const std::string variable = table(relative);                                                         \
  if (variable.empty()) {                                                                               \
    GTEST_SKIP() << (kSharedData / (relative)).string()                                                 \
                 << " is absent: the real run tables live in ../shared/data beside the project's root " \
                    "(README, \"Fitting\")";                                                            \
  }                                                                                                     \
  static_assert(true, "")

const PublishedFit& published(const std::string& key) {
  for (const PublishedFit& fit : published_fits())
    if (fit.key == key) return fit;
  throw std::logic_error("no published fit " + key);
}

// Epoch's reproduction of Hoffmann et al.: drop the 5 highest-loss points, fit the other 240 with a
// summed Huber loss (δ = 1e-3) on ln L, nothing held out.
FitOptions epoch_options() {
  FitOptions options;
  options.exclude.highest_loss = 5;
  options.heldout.count = 0;
  options.huber_delta = 1e-3;
  options.bootstrap = 0;
  return options;
}

TEST(PublishedData, TheTablesReadAsTheyAre) {
  REQUIRE_TABLE(chinchilla, kChinchilla);
  REQUIRE_TABLE(paper, kPaperRuns);
  EXPECT_EQ(read_runs_csv(chinchilla).size(), 245u);
  EXPECT_EQ(read_runs_csv(paper).size(), 270u);
  const std::string annotated = table("ludziejewski2025/runs_annotated.csv");  // extra columns ignored
  if (!annotated.empty()) {
    EXPECT_EQ(read_runs_csv(annotated).size(), 270u);
  }
}

TEST(PublishedData, ChinchillaHuberFitMatchesEpochsWithinHalfAPercent) {
  REQUIRE_TABLE(path, kChinchilla);
  const std::vector<analysis::Run> runs = read_runs_csv(path);
  const FitResult fit = fit_law(runs, epoch_options());
  EXPECT_EQ(fit.coefficients.form, LawForm::dense);
  EXPECT_EQ(fit.excluded, (std::vector<std::size_t>{0, 1, 2, 3, 4}))
      << "the first five rows are the outliers";
  EXPECT_EQ(fit.fitted_runs.size(), 240u);
  const Coefficients epoch = published("epoch2024-huber").coefficients;
  const auto ours = to_array(fit.coefficients), theirs = to_array(epoch);
  for (const std::size_t i : {0u, 1u, 4u, 5u, 8u})  // a, alpha, b, beta, c
    EXPECT_NEAR(ours[i] / theirs[i], 1.0, 0.005)
        << kCoefficientNames[i] << ": " << ours[i] << " vs Epoch's " << theirs[i];
}

TEST(PublishedData, ChinchillaBootstrapStandardErrorsAreComparableToEpochs) {
  REQUIRE_TABLE(path, kChinchilla);
  FitOptions options = epoch_options();
  options.bootstrap = 100;
  const FitResult fit = fit_law(read_runs_csv(path), options);
  EXPECT_EQ(fit.bootstrap_converged, 100u) << fit.bootstrap_failed << " failed";
  EXPECT_TRUE(fit.intervals_reliable);
  const std::vector<double>& epoch = published("epoch2024").standard_errors;
  for (const std::size_t i : {0u, 1u, 4u, 5u, 8u}) {
    const double ratio = fit.coefficient_se[i] / epoch[i];
    EXPECT_GT(ratio, 2.0 / 3) << kCoefficientNames[i] << ": SE " << fit.coefficient_se[i] << " vs Epoch's "
                              << epoch[i];
    EXPECT_LT(ratio, 1.5) << kCoefficientNames[i] << ": SE " << fit.coefficient_se[i] << " vs Epoch's "
                          << epoch[i];
  }
}

TEST(PublishedData, ThePaperObjectiveAtThePublishedCoefficientsIsTheNotebooksValue) {
  REQUIRE_TABLE(path, kPaperRuns);
  const std::vector<analysis::Run> runs = read_runs_csv(path);
  const std::vector<std::size_t> heldout = select_heldout(runs, HeldoutRule{});  // lowest-loss:10
  std::vector<std::size_t> training;
  for (std::size_t i = 0; i < runs.size(); ++i)
    if (std::find(heldout.begin(), heldout.end(), i) == heldout.end()) training.push_back(i);
  ASSERT_EQ(training.size(), 260u);
  EXPECT_NEAR(objective_value(paper_coefficients(), runs, training, Objective::paper, 0.01), 0.0022418, 5e-8);
  // The published figures on the authors' split (DESIGN.md).
  EXPECT_NEAR(error_summary(paper_coefficients(), runs, training).rmse_log, 0.00605, 5e-6);
  EXPECT_NEAR(error_summary(paper_coefficients(), runs, heldout).rmse_log, 0.00485, 5e-6);
  EXPECT_NEAR(error_summary(paper_coefficients(), runs, heldout).max_abs_error, 0.0181, 5e-5);
}

// The default rule on the authors' split (the 10 lowest-loss runs held out) extrapolates as well as the
// published fit, whose start the held-out runs helped choose; here they influence nothing.
TEST(PublishedData, ThePapersSplitExtrapolatesAsWellAsThePublishedFit) {
  REQUIRE_TABLE(path, kPaperRuns);
  const std::vector<analysis::Run> runs = read_runs_csv(path);
  FitOptions options;  // lowest-loss:10 held out, floor by validation on the next 10 lowest-loss runs
  options.bootstrap = 0;
  const FitResult fit = fit_law(runs, options);
  EXPECT_TRUE(fit.domain.by_validation);
  EXPECT_EQ(fit.domain.min_tokens_per_param, 7);
  EXPECT_EQ(fit.fitted_runs.size(), 146u);
  const ErrorSummary published_heldout = error_summary(paper_coefficients(), runs, fit.heldout);
  // Measured: RMSE(ln L) 0.004393, max |L - L^| 0.015970 (published 0.00485, 0.0181).
  EXPECT_LE(fit.heldout_errors.rmse_log, 0.00440) << "published: " << published_heldout.rmse_log;
  EXPECT_LE(fit.heldout_errors.max_abs_error, 0.0160) << "published: " << published_heldout.max_abs_error;
  EXPECT_LT(fit.heldout_errors.rmse_log, published_heldout.rmse_log);
  EXPECT_LT(fit.heldout_errors.max_abs_error, published_heldout.max_abs_error);
}

// A second split that played no part in choosing the rule: the 10 runs of most training compute.
TEST(PublishedData, TheTopComputeSplitExtrapolatesAsWell) {
  REQUIRE_TABLE(path, kPaperRuns);
  const std::vector<analysis::Run> runs = read_runs_csv(path);
  FitOptions options;
  options.heldout = parse_heldout_rule("top-compute:10");
  options.bootstrap = 0;
  const FitResult fit = fit_law(runs, options);
  EXPECT_EQ(fit.domain.validation_rule.kind, HeldoutRule::Kind::top_compute);
  EXPECT_EQ(fit.domain.min_tokens_per_param, 7);
  EXPECT_LE(fit.heldout_errors.rmse_log, 0.00395);      // measured 0.003944
  EXPECT_LE(fit.heldout_errors.max_abs_error, 0.0149);  // measured 0.014894
  const ErrorSummary published_heldout = error_summary(paper_coefficients(), runs, fit.heldout);
  EXPECT_LT(fit.heldout_errors.rmse_log, published_heldout.rmse_log);
}

}  // namespace
}  // namespace moesweep::analysis
