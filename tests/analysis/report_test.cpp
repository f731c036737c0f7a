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
  EXPECT_NE(read_text(dir_ / "report.md").find("Chinchilla form"), std::string::npos);
  EXPECT_EQ(load_coefficients((dir_ / "fit.toml").string()).form, LawForm::dense);
  EXPECT_EQ(fit_json(fit, runs, options, "dense.csv")["form"], "dense");
}

}  // namespace
}  // namespace moesweep::analysis
