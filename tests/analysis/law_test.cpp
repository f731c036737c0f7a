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

TEST(Law, PredictionStaysFiniteWhereTheTermsFactorsOverflow) {
  // A fit far from the paper's law (seen on noisy data): Ê^δ overflows and N^α underflows, while
  // their product a·Ê^δ·N^α is an ordinary number. Multiplying the factors gave ∞·0 = NaN, which
  // reached the report's error table; the terms are now computed as exp of their logarithms.
  Coefficients k = paper_coefficients();
  k.delta = 400;  // Ê(8) ≈ 9: 9^400 ≈ 1e381 overflows
  k.alpha = -45;  // (1e9)^-45 underflows to 0
  k.gamma = 0;
  const double log_ehat = std::log(transformed_experts(8, k.e_start, k.e_max));
  const double expected_params_term = std::exp(std::log(k.a) + 400 * log_ehat - 45 * std::log(1e9));
  const double data_term = k.b * std::pow(transformed_experts(8, k.e_start, k.e_max), k.omega) *
                           std::pow(1e10, k.beta + k.zeta * log_ehat);
  const double loss = predict_loss(k, 1e9, 1e10, 8);
  ASSERT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, expected_params_term + data_term + k.c, 1e-9 * loss);
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
