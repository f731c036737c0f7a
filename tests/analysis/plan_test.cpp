#include "moesweep/analysis/plan.h"

#include <gtest/gtest.h>

#include "moesweep/input_error.h"

namespace moesweep::analysis {
namespace {

TEST(Plan, DenseComputeOptimumAt1e22MatchesDesign) {
  const std::vector<Optimum> optima = compute_optimal(paper_coefficients(), Budget{1e22});
  ASSERT_EQ(optima.size(), std::size(kPlannerExperts));
  EXPECT_EQ(optima[0].experts, 1);
  EXPECT_NEAR(optima[0].n_act / 1e9, 18.8, 0.1);
  EXPECT_NEAR(optima[0].tokens / 1e9, 88.6, 0.3);
  EXPECT_NEAR(6 * optima[0].n_act * optima[0].tokens, 1e22, 1e22 * 1e-9);
}

TEST(Plan, UnderComputeAloneMoreExpertsAlwaysHelpWithThePaperLaw) {
  const std::vector<Optimum> optima = compute_optimal(paper_coefficients(), Budget{1e22});
  for (std::size_t i = 1; i < optima.size(); ++i) {
    EXPECT_LT(optima[i].loss, optima[i - 1].loss) << "E = " << optima[i].experts;
    EXPECT_LT(optima[i].n_act, optima[i - 1].n_act) << "MoE optima are smaller and trained longer";
  }
}

TEST(Plan, InferenceTokensShrinkTheOptimalModel) {
  const Optimum plain = compute_optimal(paper_coefficients(), Budget{1e22})[0];
  const Optimum served = compute_optimal(paper_coefficients(), Budget{1e22, 1e12})[0];
  EXPECT_LT(served.n_act, plain.n_act);
  EXPECT_NEAR(6 * served.n_act * served.tokens + 2 * served.n_act * 1e12, 1e22, 1e22 * 1e-9);
}

TEST(Plan, PaperShapeFamilyCountsParameters) {
  const Shape shape{4096, 64};
  EXPECT_DOUBLE_EQ(active_params(shape), 13.0 * 4096 * 4096 * 64 + 2.0 * 4096 * 50257);
  EXPECT_DOUBLE_EQ(total_params(shape, 1), active_params(shape));
  EXPECT_DOUBLE_EQ(total_params(shape, 8), (4.0 + 72) * 4096 * 4096 * 64 + 2.0 * 4096 * 50257);
  EXPECT_DOUBLE_EQ(memory_bytes(shape, 8, 1000), 2 * (total_params(shape, 8) + 2.0 * 64 * 4096 * 1000));
}

TEST(Plan, MemoryOptimumFitsItsBudgetAndTightBudgetsCostLoss) {
  Budget budget{1e22};
  budget.memory_bytes = 80e9;
  const auto roomy = memory_optimal(paper_coefficients(), budget);
  budget.memory_bytes = 24e9;
  const auto tight = memory_optimal(paper_coefficients(), budget);
  ASSERT_TRUE(roomy && tight);
  EXPECT_LE(tight->memory_bytes, 24e9);
  EXPECT_LE(roomy->memory_bytes, 80e9);
  EXPECT_EQ(tight->shape.n_layers * 64, tight->shape.d_model);
  EXPECT_GE(tight->optimum.loss, roomy->optimum.loss);
  EXPECT_NEAR(6 * tight->optimum.n_act * tight->optimum.tokens, 1e22, 1e13);
}

TEST(Plan, MemoryOptimumSpendsTheBudgetOnTrainingAndInference) {
  Budget budget{1e22, 1e12};
  budget.memory_bytes = 80e9;
  const auto served = memory_optimal(paper_coefficients(), budget);
  budget.inference_tokens = 0;
  const auto plain = memory_optimal(paper_coefficients(), budget);
  ASSERT_TRUE(served && plain);
  const Optimum& o = served->optimum;
  EXPECT_NEAR(6 * o.n_act * o.tokens + 2 * o.n_act * 1e12, 1e22, 1e22 * 1e-9);
  EXPECT_LE(o.n_act, plain->optimum.n_act) << "serving tokens favours a smaller active model";
  EXPECT_GT(o.loss, plain->optimum.loss) << "serving costs training compute";
}

TEST(Plan, KvCacheTakesMemoryFromTheModel) {
  Budget budget{1e22};
  budget.memory_bytes = 24e9;
  const auto without = memory_optimal(paper_coefficients(), budget);
  budget.kv_tokens = 1e6;
  const auto with = memory_optimal(paper_coefficients(), budget);
  ASSERT_TRUE(without && with);
  EXPECT_LT(with->n_total, without->n_total);
}

TEST(Plan, NothingFitsInAKilobyte) {
  Budget budget{1e22};
  budget.memory_bytes = 1e3;
  EXPECT_FALSE(memory_optimal(paper_coefficients(), budget));
}

// A byte-level study (V = 256) plans in its own shape family: a megabyte holds no GPT-2 model (the
// embedding alone of d_model 64 is 6.4M parameters) but several byte-level ones.
TEST(Plan, ByteVocabularyShapesFitWhereGpt2OnesDoNot) {
  const Shape byte_shape{64, 1, 256};
  EXPECT_DOUBLE_EQ(active_params(byte_shape), 13.0 * 64 * 64 + 2.0 * 64 * 256);
  EXPECT_DOUBLE_EQ(total_params(byte_shape, 8), 76.0 * 64 * 64 + 2.0 * 64 * 256);

  Budget budget{1e13};
  budget.memory_bytes = 1e6;
  EXPECT_FALSE(memory_optimal(paper_coefficients(), budget));
  budget.vocabulary = 256;
  const auto best = memory_optimal(paper_coefficients(), budget);
  ASSERT_TRUE(best);
  EXPECT_LE(best->memory_bytes, 1e6);
  EXPECT_DOUBLE_EQ(best->shape.vocabulary, 256);
  EXPECT_DOUBLE_EQ(best->n_total, total_params(best->shape, best->optimum.experts));
  EXPECT_NEAR(6.0 * best->optimum.n_act * best->optimum.tokens, 1e13, 1e13 * 1e-9);
}

TEST(Plan, MemoryUnitsParse) {
  EXPECT_DOUBLE_EQ(parse_bytes("24GB", "--memory"), 24e9);
  EXPECT_DOUBLE_EQ(parse_bytes("1.5 TB", "--memory"), 1.5e12);
  EXPECT_DOUBLE_EQ(parse_bytes("16GiB", "--memory"), 16.0 * (1 << 30));
  EXPECT_DOUBLE_EQ(parse_bytes("1e9", "--memory"), 1e9);
  EXPECT_THROW(parse_bytes("lots", "--memory"), InputError);
  EXPECT_THROW(parse_bytes("80XB", "--memory"), InputError);
  EXPECT_THROW(parse_bytes("-5GB", "--memory"), InputError);
}

}  // namespace
}  // namespace moesweep::analysis
