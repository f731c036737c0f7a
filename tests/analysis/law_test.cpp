#include "moesweep/analysis/law.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace moesweep::analysis {
namespace {

TEST(Law, PaperCheckValuesFromDesign) {
  const Coefficients paper = paper_coefficients();
  EXPECT_NEAR(predict_loss(paper, 1103142144, 8.000012e10, 4), 2.39664, 5e-6);
  EXPECT_NEAR(predict_loss(paper, 2715922944, 979959808, 1), 2.87325, 5e-6);
}

TEST(Law, TransformedExpertsMatchClarksFormulaForOneToThirtyTwo) {
  const double e_start = 2.0732, e_max = 290.45;
  double previous = 0;
  for (int e = 1; e <= 32; ++e) {
    // Written out independently of the library: 1/Ê = 1/(E − 0.99 + 1/(1/E_start − 1/E_max)) + 1/E_max.
    const double expected = 1.0 / (1.0 / (e - 0.99 + 1.0 / (1.0 / e_start - 1.0 / e_max)) + 1.0 / e_max);
    const double ehat = transformed_experts(e, e_start, e_max);
    EXPECT_NEAR(ehat, expected, 1e-12 * expected) << "E = " << e;
    EXPECT_GT(ehat, previous) << "Ê must grow with E";
    EXPECT_LT(ehat, e_max);
    previous = ehat;
  }
  // Dense stays finite and close to E_start (E − 0.99 keeps it off the singular E − 1 = 0 corner).
  EXPECT_NEAR(transformed_experts(1, e_start, e_max), 2.0732, 0.01);
}

TEST(Law, MoreExpertsLowerThePaperLossAtFixedActiveSize) {
  const Coefficients paper = paper_coefficients();
  EXPECT_LT(predict_loss(paper, 1e9, 1e11, 8), predict_loss(paper, 1e9, 1e11, 1));
}

TEST(Law, CoefficientsFileRoundTripsAtFullPrecision) {
  const auto dir = std::filesystem::temp_directory_path() / "moesweep_law_roundtrip";
  std::filesystem::create_directories(dir);
  Coefficients k = paper_coefficients();
  k.alpha = -0.123456789012345;
  std::ofstream(dir / "fit.toml") << coefficients_toml(k);
  for (const auto& spec : {(dir / "fit.toml").string(), dir.string()}) {
    const Coefficients back = load_coefficients(spec);
    const auto a = to_array(k), b = to_array(back);
    for (std::size_t i = 0; i < kCoefficientCount; ++i) EXPECT_DOUBLE_EQ(a[i], b[i]) << kCoefficientNames[i];
    EXPECT_EQ(back.form, LawForm::joint);
  }
  EXPECT_DOUBLE_EQ(load_coefficients("paper").a, 35.907456);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moesweep::analysis
