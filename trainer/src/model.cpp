#include "moesweep/trainer/model.h"

#include <cmath>

#include "torch_compat.h"

namespace moesweep::trainer {
namespace {

// Normal with std = √(0.1 / fan_in) cut at ±bound (absolute), by inverting the normal CDF on the cut
// range (as PyTorch's Python nn.init.trunc_normal_ does; LibTorch 1.13's C++ API has no such
// initialiser).
torch::Tensor truncated_normal(torch::IntArrayRef shape, std::int64_t fan_in, double bound) {
  const double std = std::sqrt(0.1 / static_cast<double>(fan_in));
  const double cut = bound / std;  // the bound in standard deviations
  const double lower_cdf = 0.5 * (1.0 + std::erf(-cut / std::sqrt(2.0)));
  const double upper_cdf = 0.5 * (1.0 + std::erf(cut / std::sqrt(2.0)));
  auto t = torch::empty(shape).uniform_(2.0 * lower_cdf - 1.0, 2.0 * upper_cdf - 1.0);
  t.erfinv_().mul_(std * std::sqrt(2.0)).clamp_(-bound, bound);
  return t;
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const auto half = x.size(-1) / 2;
  const auto x1 = x.narrow(-1, 0, half);
  const auto x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

}  // namespace

Routing route_top1(const torch::Tensor& expert, std::int64_t experts, std::int64_t capacity) {
  // Kept by position, not probability: a token's place in its expert's buffer counts only the tokens
  // before it in the flattened group, so a later token can never evict an earlier one.
  const auto position =
      (torch::one_hot(expert, experts).cumsum(1) - 1).gather(2, expert.unsqueeze(-1)).squeeze(-1);
  return {position, position < capacity};
}

std::int64_t expert_capacity(const ModelConfig& config, double capacity_factor, std::int64_t group_tokens) {
  const double share = capacity_factor * static_cast<double>(group_tokens) / static_cast<double>(config.experts);
  const auto rounded =
      static_cast<std::int64_t>(config.capacity_rounding == "ceil" ? std::ceil(share) : std::floor(share));
  return std::min(rounded, group_tokens);
}

MoeTransformerImpl::MoeTransformerImpl(const ModelConfig& config, torch::Dtype compute_dtype)
    : config_(config), compute_dtype_(compute_dtype) {
  const auto d = config.d_model, V = config.vocab_size, E = config.experts, hidden = 3 * config.d_model;
  TORCH_CHECK(d % config.n_heads == 0 && (d / config.n_heads) % 2 == 0,
              "d_model must split into n_heads heads of even size");
  const double bound = config.init_truncation;
  const auto down_fan_in = config.expert_down_fan_in == "one_expert" ? hidden : E * hidden;
  embedding_ = register_parameter("embedding", truncated_normal({V, d}, config.embedding_init_fan_in, bound));
  for (std::int64_t layer = 0; layer < config.n_layers; ++layer) {
    const std::string prefix = "layer" + std::to_string(layer) + "_";
    Block block;
    block.attention_norm =
        register_module(prefix + "attention_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    block.qkv = register_parameter(prefix + "qkv", truncated_normal({3 * d, d}, d, bound));
    block.attention_out = register_parameter(prefix + "attention_out", truncated_normal({d, d}, d, bound));
    block.feed_forward_norm =
        register_module(prefix + "feed_forward_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    if (E > 1) block.router = register_parameter(prefix + "router", truncated_normal({E, d}, d, bound));
    block.gate = register_parameter(prefix + "expert_gate", truncated_normal({E, d, hidden}, d, bound));
    block.up = register_parameter(prefix + "expert_up", truncated_normal({E, d, hidden}, d, bound));
    block.down = register_parameter(prefix + "expert_down", truncated_normal({E, hidden, d}, down_fan_in, bound));
    blocks_.push_back(std::move(block));
  }
  if (config.final_norm)
    final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  head_ = register_parameter("head", truncated_normal({V, d}, d, bound));

  const auto head_dim = d / config.n_heads;
  const auto inverse_frequency =
      torch::pow(10000.0, -torch::arange(0, head_dim, 2, torch::kDouble) / static_cast<double>(head_dim));
  const auto angles = torch::outer(torch::arange(config.seq_len, torch::kDouble), inverse_frequency);
  rope_cos_ = register_buffer("rope_cos", angles.cos().to(torch::kFloat));
  rope_sin_ = register_buffer("rope_sin", angles.sin().to(torch::kFloat));
}

torch::Tensor MoeTransformerImpl::attention(const Block& block, const torch::Tensor& x) {
  const auto B = x.size(0), T = x.size(1), d = config_.d_model, H = config_.n_heads;
  // RoPE in fp32, then attention in the compute dtype: bf16 on CUDA, where the fused kernel keeps the
  // softmax statistics in fp32 (the authors trained in bf16); fp32 on CPU.
  const auto qkv = torch::nn::functional::linear(x.to(compute_dtype_), block.qkv.to(compute_dtype_))
                       .to(torch::kFloat)
                       .view({B, T, 3, H, d / H})
                       .permute({2, 0, 3, 1, 4});  // [3, B, H, T, head_dim]
  const auto cos = rope_cos_.narrow(0, 0, T), sin = rope_sin_.narrow(0, 0, T);
  const auto mixed = compat::causal_attention(apply_rope(qkv[0], cos, sin).to(compute_dtype_),
                                              apply_rope(qkv[1], cos, sin).to(compute_dtype_),
                                              qkv[2].to(compute_dtype_));
  const auto merged = mixed.transpose(1, 2).reshape({B, T, d});
  return torch::nn::functional::linear(merged, block.attention_out.to(compute_dtype_)).to(torch::kFloat);
}

torch::Tensor MoeTransformerImpl::feed_forward(const Block& block, const torch::Tensor& x,
                                               double capacity_factor, torch::Tensor& z_loss,
                                               torch::Tensor& balance_loss, torch::Tensor& dropped) {
  const auto B = x.size(0), T = x.size(1), d = x.size(2), E = config_.experts;
  const auto gate = block.gate.to(compute_dtype_), up = block.up.to(compute_dtype_),
             down = block.down.to(compute_dtype_);
  if (E == 1) {
    dropped = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    const auto h = x.to(compute_dtype_);
    return torch::matmul(torch::silu(torch::matmul(h, gate[0])) * torch::matmul(h, up[0]), down[0])
        .to(torch::kFloat);
  }

  // Routing groups: G consecutive sequences, flattened sequence-major into N tokens each.
  const auto sequences_per_group = routing_group_size(config_, B);
  TORCH_CHECK(B % sequences_per_group == 0, "a batch of ", B, " sequences is not a whole number of ",
              sequences_per_group, "-sequence routing groups");
  const auto G = B / sequences_per_group, N = sequences_per_group * T;
  const auto grouped = x.reshape({G, N, d});

  const auto logits = torch::nn::functional::linear(grouped, block.router);  // fp32: x and the router are fp32
  const auto probabilities = torch::softmax(logits, -1);                     // [G, N, E]
  z_loss = z_loss + torch::logsumexp(logits, -1).square().mean();  // groups are equal: mean of group means
  const auto [top_probability, top_expert] = probabilities.max(-1);  // [G, N]
  const auto routed_fraction =
      torch::one_hot(top_expert, E).to(torch::kFloat).mean(1);  // f_i per group, before dropping
  balance_loss =
      balance_loss + static_cast<double>(E) * (routed_fraction * probabilities.mean(1)).sum(-1).mean();

  const auto capacity = expert_capacity(config_, capacity_factor, N);
  const auto routing = route_top1(top_expert, E, capacity);
  dropped = (~routing.kept).sum();
  const auto group = torch::arange(G, top_expert.options()).unsqueeze(1);
  const auto slot = ((group * E + top_expert) * capacity + routing.position).flatten();
  const auto kept_tokens = routing.kept.flatten().nonzero().squeeze(1);
  const auto kept_slots = slot.index_select(0, kept_tokens);

  // Dispatch into [G·E·C, d] (unfilled slots stay zero), run the experts as one bmm over [E, G·C, d],
  // and combine back, scaled by the router probability.
  const auto flat = x.reshape({B * T, d}).to(compute_dtype_);
  const auto buffer = torch::zeros({G * E * capacity, d}, flat.options())
                          .index_copy(0, kept_slots, flat.index_select(0, kept_tokens))
                          .view({G, E, capacity, d})
                          .transpose(0, 1)
                          .reshape({E, G * capacity, d});
  const auto hidden = torch::silu(torch::bmm(buffer, gate)) * torch::bmm(buffer, up);
  const auto expert_out =
      torch::bmm(hidden, down).view({E, G, capacity, d}).transpose(0, 1).reshape({G * E * capacity, d});
  const auto weighted = expert_out.index_select(0, kept_slots).to(torch::kFloat) *
                        top_probability.flatten().index_select(0, kept_tokens).unsqueeze(1);
  return torch::zeros({B * T, d}, x.options()).index_copy(0, kept_tokens, weighted).view({B, T, d});
}

ModelOutput MoeTransformerImpl::forward(const torch::Tensor& tokens, double capacity_factor) {
  const auto B = tokens.size(0), T = tokens.size(1);
  TORCH_CHECK(T <= config_.seq_len, "sequence longer than seq_len");
  auto x = embedding_.index_select(0, tokens.flatten()).view({B, T, config_.d_model});
  auto z_loss = torch::zeros({}, x.options());
  auto balance_loss = torch::zeros({}, x.options());
  std::vector<torch::Tensor> dropped(blocks_.size());
  for (std::size_t layer = 0; layer < blocks_.size(); ++layer) {
    auto& block = blocks_[layer];
    x = x + attention(block, block.attention_norm(x));
    x = x + feed_forward(block, block.feed_forward_norm(x), capacity_factor, z_loss, balance_loss, dropped[layer]);
  }
  if (final_norm_) x = final_norm_(x);
  const auto logits =
      torch::nn::functional::linear(x.to(compute_dtype_), head_.to(compute_dtype_)).to(torch::kFloat);
  return {logits, z_loss, balance_loss, torch::stack(dropped)};
}

StepLosses training_losses(const ModelOutput& out, const torch::Tensor& batch, const TrainConfig& train) {
  const auto T = batch.size(1) - 1;
  const auto lm = torch::nn::functional::cross_entropy(out.logits.reshape({-1, out.logits.size(-1)}),
                                                       batch.narrow(1, 1, T).reshape(-1));
  return {lm, lm + train.z_loss_weight * out.z_loss + train.balance_loss_weight * out.balance_loss};
}

std::unique_ptr<torch::optim::AdamW> make_optimizer(MoeTransformerImpl& model, const TrainConfig& train) {
  const auto adam = torch::optim::AdamWOptions(train.lr)
                        .betas({train.adam_beta1, train.adam_beta2})
                        .eps(train.adam_eps)
                        .weight_decay(train.weight_decay);
  if (train.weight_decay_scope == "all") return std::make_unique<torch::optim::AdamW>(model.parameters(), adam);
  // "matrices": decay the embedding, head, attention, router and experts; not the LayerNorms.
  std::vector<torch::Tensor> decayed, not_decayed;
  for (auto& parameter : model.parameters()) (parameter.dim() >= 2 ? decayed : not_decayed).push_back(parameter);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, std::make_unique<torch::optim::AdamWOptions>(adam));
  groups.emplace_back(not_decayed,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(adam).weight_decay(0.0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), adam);
}

namespace {

// Experts' weights count once per expert in the total, once per layer in the active count.
std::int64_t counted_params(MoeTransformerImpl& model, bool active_only) {
  std::int64_t count = 0;
  for (const auto& item : model.named_parameters()) {
    const auto& name = item.key();
    if (name.find("router") != std::string::npos || name.find("norm") != std::string::npos) continue;
    const bool expert = name.find("expert_") != std::string::npos;
    count += expert && active_only ? item.value().numel() / model.config().experts : item.value().numel();
  }
  return count;
}

}  // namespace

std::int64_t counted_total_params(MoeTransformerImpl& model) { return counted_params(model, false); }
std::int64_t counted_active_params(MoeTransformerImpl& model) { return counted_params(model, true); }

}  // namespace moesweep::trainer
