// The authors' recipe in the model: causal routing (capacity kept by position within a routing group),
// routing groups, floor capacity, their initialisation, no final LayerNorm, AdamW on every parameter.
#include <gtest/gtest.h>

#include <cmath>

#include "moesweep/trainer/model.h"
#include "moesweep/trainer/trainer.h"

namespace moesweep::trainer {
namespace {

// The shape: d_model 32, 2 layers, 2 heads, E = 4, seq_len 64.
ModelConfig causality_model() {
  ModelConfig m;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 2;
  m.experts = 4;
  m.seq_len = 64;
  return m;
}

TEST(Routing, AnEarlierTokenIsNeverDroppedForALaterOne) {
  // Two tokens, both routed to expert 0, room for one (probabilities 0.4 then 0.9 play no part): the
  // earlier one is kept.
  const auto two = route_top1(torch::tensor({{0, 0}}, torch::kLong), 2, 1);
  EXPECT_TRUE(torch::equal(two.kept, torch::tensor({{true, false}})));
  // Expert 0 gets four tokens but holds two: the first two in position order.
  const auto six = route_top1(torch::tensor({{0, 0, 0, 1, 0, 1}}, torch::kLong), 2, 2);
  EXPECT_TRUE(torch::equal(six.position, torch::tensor({{0, 1, 2, 0, 3, 1}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(six.kept, torch::tensor({{true, true, false, true, false, true}})));
}

TEST(Routing, GroupsFillTheirCapacityIndependently) {
  const auto routing = route_top1(torch::tensor({{1, 1, 1}, {1, 0, 1}}, torch::kLong), 2, 1);
  EXPECT_TRUE(torch::equal(routing.kept, torch::tensor({{true, false, false}, {true, true, false}})));
}

TEST(Routing, CapacityIsTheFloorOfTheGroupsShareCappedAtTheGroup) {
  ModelConfig m;
  m.experts = 4;
  EXPECT_EQ(expert_capacity(m, 1.0, 10), 2);   // floor(2.5), the authors' rounding
  EXPECT_EQ(expert_capacity(m, 1.5, 64), 24);
  EXPECT_EQ(expert_capacity(m, 8.0, 10), 10);  // never more than the group
  m.capacity_rounding = "ceil";
  EXPECT_EQ(expert_capacity(m, 1.0, 10), 3);
  m.routing_group = 64;
  EXPECT_EQ(routing_group_size(m, 8), 8);  // a small batch is one group
  EXPECT_EQ(routing_group_size(m, 128), 64);
}

// Changing the second half of one sequence must leave that sequence's first-half logits identical, at
// training and eval capacity factors, with tokens being dropped.
void expect_causal(MoeTransformerImpl& model, double capacity_factor, bool expect_drops) {
  const auto T = model.config().seq_len;
  const auto tokens = torch::randint(0, 256, {8, T}, torch::kLong);
  const auto before = model.forward(tokens, capacity_factor);
  if (expect_drops) {
    ASSERT_GT(before.dropped.sum().item<std::int64_t>(), 0) << "cf " << capacity_factor;
  }
  for (const std::int64_t changed : {0, 3, 7}) {
    auto altered = tokens.clone();
    altered[changed].narrow(0, T / 2, T / 2).copy_(torch::randint(0, 256, {T / 2}, torch::kLong));
    const auto after = model.forward(altered, capacity_factor);
    const auto first_half = [&](const torch::Tensor& logits) { return logits[changed].narrow(0, 0, T / 2); };
    EXPECT_TRUE(torch::equal(first_half(before.logits), first_half(after.logits)))
        << "sequence " << changed << " at capacity factor " << capacity_factor << ": largest change "
        << (first_half(before.logits) - first_half(after.logits)).abs().max().item<double>();
    // The change did reach the model (the test would pass vacuously otherwise).
    EXPECT_FALSE(torch::equal(before.logits[changed], after.logits[changed]));
  }
}

TEST(Causality, LaterTokensNeverChangeEarlierLogitsWhateverTheCapacity) {
  torch::manual_seed(0);
  MoeTransformer model(causality_model());
  for (const double cf : {0.5, 1.0, 1.5}) {
    {
      SCOPED_TRACE("training (autograd on)");
      expect_causal(*model, cf, cf <= 1.0);
    }
    torch::NoGradGuard no_grad;
    SCOPED_TRACE("eval (no grad)");
    expect_causal(*model, cf, cf <= 1.0);
  }
}

TEST(Causality, HoldsWithSeveralRoutingGroupsInABatch) {
  auto m = causality_model();
  m.routing_group = 2;  // 8 sequences = 4 groups
  torch::manual_seed(1);
  MoeTransformer model(m);
  torch::NoGradGuard no_grad;
  for (const double cf : {0.5, 1.0, 1.5}) expect_causal(*model, cf, cf <= 1.0);
}

TEST(Causality, ATrainedRouterStaysCausal) {
  // After training the router is confident and unbalanced: more drops, and by probability they would
  // now often favour later tokens.
  torch::manual_seed(2);
  auto m = causality_model();
  MoeTransformer model(m);
  TrainConfig t;
  t.lr = 1e-2;
  auto optimizer = make_optimizer(*model, t);
  for (int step = 0; step < 10; ++step) {
    const auto batch = torch::randint(0, 16, {8, m.seq_len + 1}, torch::kLong);  // a skewed vocabulary
    optimizer->zero_grad();
    training_losses(model->forward(batch.narrow(1, 0, m.seq_len), 1.0), batch, t).total.backward();
    optimizer->step();
  }
  for (const double cf : {0.5, 1.0, 1.5}) expect_causal(*model, cf, /*expect_drops=*/true);  // eval's too
}

TEST(Recipe, InitialisationFollowsTheAuthors) {
  ModelConfig m;
  m.d_model = 64;
  m.experts = 4;
  torch::manual_seed(0);
  MoeTransformer model(m);
  bool saw_embedding = false, saw_down = false;
  for (const auto& item : model->named_parameters()) {
    const auto& name = item.key();
    ASSERT_EQ(name.find("final_norm"), std::string::npos) << "the authors have no final LayerNorm";
    if (name.find("norm") != std::string::npos) continue;
    const bool embedding = name == "embedding", down = name.find("expert_down") != std::string::npos;
    saw_embedding |= embedding, saw_down |= down;
    const double fan_in = embedding ? 1.0 : down ? 4.0 * 3.0 * 64.0 : 64.0;
    const double sigma = std::sqrt(0.1 / fan_in);
    // A normal cut at ±0.2 absolute: c = 0.2/σ standard deviations; its std is
    // σ·√(1 − 2c·φ(c) / (2Φ(c) − 1)).
    const double c = 0.2 / sigma;
    const double phi = std::exp(-0.5 * c * c) / std::sqrt(2.0 * M_PI), mass = std::erf(c / std::sqrt(2.0));
    const double expected = sigma * std::sqrt(1.0 - 2.0 * c * phi / mass);
    EXPECT_LE(item.value().abs().max().item<double>(), 0.2 + 1e-7) << name;
    EXPECT_NEAR(item.value().std().item<double>(), expected, 0.05 * expected) << name;
  }
  EXPECT_TRUE(saw_embedding && saw_down);
  m.final_norm = true;
  MoeTransformer with_norm(m);
  EXPECT_EQ(with_norm->named_parameters().size(), model->named_parameters().size() + 2);
}

TEST(Recipe, AdamWDecaysEveryParameterWithTheAuthorsBetas) {
  ModelConfig m;
  m.d_model = 32;
  m.experts = 2;
  MoeTransformer model(m);
  TrainConfig t;
  t.lr = 1e-3;
  const auto all = make_optimizer(*model, t);
  ASSERT_EQ(all->param_groups().size(), 1u);
  const auto& options = static_cast<const torch::optim::AdamWOptions&>(all->param_groups()[0].options());
  EXPECT_EQ(std::get<0>(options.betas()), 0.9);
  EXPECT_EQ(std::get<1>(options.betas()), 0.999);
  EXPECT_EQ(options.eps(), 1e-8);
  EXPECT_EQ(options.weight_decay(), 0.1);
  EXPECT_EQ(all->param_groups()[0].params().size(), model->parameters().size());  // LayerNorms too
  t.weight_decay_scope = "matrices";
  const auto matrices = make_optimizer(*model, t);
  ASSERT_EQ(matrices->param_groups().size(), 2u);
  for (const auto& p : matrices->param_groups()[1].params()) EXPECT_EQ(p.dim(), 1);
  EXPECT_EQ(static_cast<const torch::optim::AdamWOptions&>(matrices->param_groups()[1].options()).weight_decay(),
            0.0);
}

TEST(Routing, DataParallelRanksTakeWholeGroups) {
  ModelConfig m;
  m.routing_group = 4;
  EXPECT_EQ(data_parallel_slice(m, 16, 0, 2), std::make_pair(std::int64_t{0}, std::int64_t{8}));
  EXPECT_EQ(data_parallel_slice(m, 16, 1, 2), std::make_pair(std::int64_t{8}, std::int64_t{16}));
  // 3 groups over 2 ranks: 1 and 2 groups, never a split group.
  EXPECT_EQ(data_parallel_slice(m, 12, 0, 2), std::make_pair(std::int64_t{0}, std::int64_t{4}));
  EXPECT_EQ(data_parallel_slice(m, 12, 1, 2), std::make_pair(std::int64_t{4}, std::int64_t{12}));
}

}  // namespace
}  // namespace moesweep::trainer
