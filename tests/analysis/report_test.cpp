#include "moesweep/analysis/report.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "synthetic_runs.h"

namespace moesweep::analysis {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class Report : public ::testing::Test {
 protected:
  std::filesystem::path dir_ =
      std::filesystem::temp_directory_path() / ("moesweep_report_" + std::to_string(::getpid()));
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static FitOptions quick_options() {
    FitOptions options;
    options.starts = 243;
    options.bootstrap = 10;
    return options;
  }
};

TEST_F(Report, JsonCarriesTheIssueSchemaInDesignSignConvention) {
  const auto runs = testing::synthetic_runs(paper_coefficients(), 0.005, 5);
  const FitOptions options = quick_options();
  const FitResult fit = fit_law(runs, options);
  const nlohmann::json json = fit_json(fit, runs, options, "synthetic.csv");
  for (const auto name : kCoefficientNames)
    EXPECT_TRUE(json["coefficients"].contains(std::string(name))) << name;
  EXPECT_LT(json["coefficients"]["alpha"].get<double>(), 0) << "α is negative in DESIGN.md's convention";
  EXPECT_LT(json["coefficients"]["beta"].get<double>(), 0);
  for (const char* set : {"train", "heldout"})
    for (const char* key : {"rmse_log", "max_abs_error", "n"})
      EXPECT_TRUE(json[set].contains(key)) << set << "." << key;
  EXPECT_EQ(json["heldout"]["n"].get<int>(), 10);
  EXPECT_EQ(json["heldout_runs"].size(), 10u);
  EXPECT_EQ(json["form"], "joint");
  EXPECT_EQ(json["compute_optimal"]["optima"].size(), std::size(kPlannerExperts));
  EXPECT_EQ(json["intervals"]["alpha"].size(), 2u);
  EXPECT_EQ(json["bounds"]["e_start_min"].get<double>(), 1.0);
  EXPECT_EQ(json["bounds"]["e_max_max"].get<double>(), kMaxEMax);
  // On this grid (E ≤ 64) E_max may well end on its bound (see synthetic_runs.h); at_bound says which.
  EXPECT_EQ(json["at_bound"], nlohmann::json(coefficients_at_bounds(fit.coefficients)));
}

TEST_F(Report, ACoefficientOnItsBoundIsFlaggedInTheReportAndJson) {
  const auto runs = testing::synthetic_runs(paper_coefficients(), 0.005, 5);
  FitOptions options = quick_options();
  options.starts = 27;
  options.bootstrap = 0;
  FitResult fit = fit_law(runs, options);
  fit.coefficients.e_start = kMinEStart;  // as a fit that ended on both bounds reports them
  fit.coefficients.e_max = kMaxEMax;
  EXPECT_EQ(fit_json(fit, runs, options, "x.csv")["at_bound"], (nlohmann::json{"e_start", "e_max"}));
  write_fit_report(dir_, fit, runs, options, "x.csv");
  const std::string report = read_text(dir_ / "report.md");
  EXPECT_NE(report.find("**E_max is at its bound 1e+06: the runs show no saturation of the benefit of "
                        "experts up to E = 64, so E_max is not identified.**"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("**E_start is at its bound 1:"), std::string::npos) << report;
}

TEST_F(Report, OutFolderHoldsAReusableFitTomlTheReportAndPlots) {
  const auto runs = testing::synthetic_runs(paper_coefficients(), 0.005, 6);
  const FitOptions options = quick_options();
  const FitResult fit = fit_law(runs, options);
  const std::vector<std::string> warnings = write_fit_report(dir_, fit, runs, options, "synthetic.csv");

  const Coefficients back = load_coefficients((dir_ / "fit.toml").string());
  const auto a = to_array(fit.coefficients), b = to_array(back);
  for (std::size_t i = 0; i < kCoefficientCount; ++i) EXPECT_DOUBLE_EQ(a[i], b[i]) << kCoefficientNames[i];

  const std::string report = read_text(dir_ / "report.md");
  EXPECT_NE(report.find("## Extrapolation check"), std::string::npos);
  EXPECT_NE(report.find("Bounds: E_start ≥ 1 and E_max ≤ 1e+06 are enforced"), std::string::npos);
  EXPECT_EQ(report.find("E_max is at its bound") != std::string::npos,
            e_max_at_bound(fit.coefficients.e_max));
  EXPECT_NE(report.find("| held out | 10 |"), std::string::npos);
  EXPECT_NE(report.find("Compute-optimal models at 1e+22 FLOPs"), std::string::npos);

  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot not installed";
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  for (const char* png : {"predicted_vs_observed.png", "loss_vs_tokens.png", "isoflop_profiles.png",
                          "optimal_experts_map.png"}) {
    ASSERT_TRUE(std::filesystem::exists(dir_ / png)) << png;
    EXPECT_GT(std::filesystem::file_size(dir_ / png), 5000u) << png;
  }
}

TEST_F(Report, DenseOnlyFitSaysItIsTheChinchillaForm) {
  const auto runs = testing::synthetic_runs(paper_coefficients(), 0.005, 7, {1});
  const FitOptions options = quick_options();
  const FitResult fit = fit_law(runs, options);
  write_fit_report(dir_, fit, runs, options, "dense.csv");
  const std::string report = read_text(dir_ / "report.md");
  EXPECT_NE(report.find("Chinchilla form"), std::string::npos);
  EXPECT_EQ(load_coefficients((dir_ / "fit.toml").string()).form, LawForm::dense);
  const nlohmann::json json = fit_json(fit, runs, options, "dense.csv");
  EXPECT_EQ(json["form"], "dense");
  // A dense law has no E_start or E_max: none printed, none written, no interval [2, 2].
  for (const char* name : {"e_start", "e_max"}) {
    EXPECT_FALSE(json["coefficients"].contains(name)) << name;
    EXPECT_FALSE(json["intervals"].contains(name)) << name;
    EXPECT_EQ(report.find(std::string("| ") + name + " |"), std::string::npos) << name;
    EXPECT_EQ(read_text(dir_ / "fit.toml").find(std::string(name) + " ="), std::string::npos) << name;
  }
  EXPECT_EQ(json["fitted_coefficients"], (nlohmann::json{"a", "alpha", "b", "beta", "c"}));
}

TEST_F(Report, RunsOfAPublishedLawGetAComparisonSectionAndTheDomainIsExplained) {
  // Runs drawn from the published joint law: its published coefficients describe them, so the report
  // sets the fit beside them.
  const auto runs = testing::synthetic_runs(paper_coefficients(), 0.005, 8);
  FitOptions options = quick_options();
  options.starts = 81;
  const FitResult fit = fit_law(runs, options);
  write_fit_report(dir_, fit, runs, options, "synthetic.csv");
  const std::string report = read_text(dir_ / "report.md");
  EXPECT_NE(report.find("## Comparison with the published fits"), std::string::npos) << report;
  EXPECT_NE(report.find("`ludziejewski2025`"), std::string::npos);
  EXPECT_NE(report.find("| ludziejewski2025 | "), std::string::npos) << "its fit quality on the same split";
  EXPECT_NE(report.find("## Training domain"), std::string::npos);
  EXPECT_NE(report.find("Forward validation: the 10 training runs that `lowest-loss:10` picks next"),
            std::string::npos);
  const nlohmann::json json = fit_json(fit, runs, options, "synthetic.csv");
  ASSERT_EQ(json["published"].size(), 1u);
  EXPECT_EQ(json["published"][0]["key"], "ludziejewski2025");
  EXPECT_EQ(json["domain"]["candidates"].size(), kTokensPerParamFloors.size());
  EXPECT_EQ(json["domain"]["validation_runs"], 10);
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot not installed";
  EXPECT_GT(std::filesystem::file_size(dir_ / "published_vs_observed.png"), 5000u);
}

}  // namespace
}  // namespace moesweep::analysis
