#include "moesweep/trainer/model.h"

#include <cmath>

#include "torch_compat.h"

namespace moesweep::trainer {
namespace {

// Truncated normal at ±2 std by inverting the normal CDF on the truncated range (as PyTorch's Python
// nn.init.trunc_normal_ does; LibTorch 1.13's C++ API has no such initialiser).
torch::Tensor truncated_normal(torch::IntArrayRef shape, std::int64_t fan_in) {
  const double std = std::sqrt(0.1 / static_cast<double>(fan_in));
  const double lower_cdf = 0.5 * (1.0 + std::erf(-2.0 / std::sqrt(2.0)));
  const double upper_cdf = 0.5 * (1.0 + std::erf(2.0 / std::sqrt(2.0)));
  auto t = torch::empty(shape).uniform_(2.0 * lower_cdf - 1.0, 2.0 * upper_cdf - 1.0);
  t.erfinv_().mul_(std * std::sqrt(2.0)).clamp_(-2.0 * std, 2.0 * std);
  return t;
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const auto half = x.size(-1) / 2;
  const auto x1 = x.narrow(-1, 0, half);
  const auto x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

}  // namespace

Routing route_top1(const torch::Tensor& expert, const torch::Tensor& probability, std::int64_t experts,
                   std::int64_t capacity) {
  // Order each group's tokens by expert, and within an expert by descending probability (stable sorts:
  // equal probabilities keep position order). A token's place in that order minus the start of its
  // expert's run is its position in the expert's buffer.
  // (The stable flag must be an optional<bool>: a plain bool would pick the sort(dim, descending) overload.)
  const c10::optional<bool> stable = true;
  const auto by_probability = std::get<1>(torch::sort(probability, stable, -1, /*descending=*/true));
  const auto expert_by_probability = expert.gather(1, by_probability);
  const auto within = std::get<1>(torch::sort(expert_by_probability, stable, -1, /*descending=*/false));
  const auto order = by_probability.gather(1, within);
  const auto sorted_expert = expert.gather(1, order);

  const auto counts = torch::one_hot(expert, experts).sum(1);  // [G, E]
  const auto starts = counts.cumsum(1) - counts;
  const auto length = expert.size(1);
  const auto place = torch::arange(length, expert.options()).expand_as(expert);
  const auto sorted_position = place - starts.gather(1, sorted_expert);
  const auto position = torch::empty_like(expert).scatter(1, order, sorted_position);
  return {position, position < capacity};
}

MoeTransformerImpl::MoeTransformerImpl(const ModelConfig& config, torch::Dtype compute_dtype)
    : config_(config), compute_dtype_(compute_dtype) {
  const auto d = config.d_model, V = config.vocab_size, E = config.experts, hidden = 3 * config.d_model;
  TORCH_CHECK(d % config.n_heads == 0 && (d / config.n_heads) % 2 == 0,
              "d_model must split into n_heads heads of even size");
  embedding_ = register_parameter("embedding", truncated_normal({V, d}, d));
  for (std::int64_t layer = 0; layer < config.n_layers; ++layer) {
    const std::string prefix = "layer" + std::to_string(layer) + "_";
    Block block;
    block.attention_norm =
        register_module(prefix + "attention_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    block.qkv = register_parameter(prefix + "qkv", truncated_normal({3 * d, d}, d));
    block.attention_out = register_parameter(prefix + "attention_out", truncated_normal({d, d}, d));
    block.feed_forward_norm =
        register_module(prefix + "feed_forward_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    if (E > 1) block.router = register_parameter(prefix + "router", truncated_normal({E, d}, d));
    block.gate = register_parameter(prefix + "expert_gate", truncated_normal({E, d, hidden}, d));
    block.up = register_parameter(prefix + "expert_up", truncated_normal({E, d, hidden}, d));
    block.down = register_parameter(prefix + "expert_down", truncated_normal({E, hidden, d}, hidden));
    blocks_.push_back(std::move(block));
  }
  final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  head_ = register_parameter("head", truncated_normal({V, d}, d));

  const auto head_dim = d / config.n_heads;
  const auto inverse_frequency =
      torch::pow(10000.0, -torch::arange(0, head_dim, 2, torch::kDouble) / static_cast<double>(head_dim));
  const auto angles = torch::outer(torch::arange(config.seq_len, torch::kDouble), inverse_frequency);
  rope_cos_ = register_buffer("rope_cos", angles.cos().to(torch::kFloat));
  rope_sin_ = register_buffer("rope_sin", angles.sin().to(torch::kFloat));
}

torch::Tensor MoeTransformerImpl::attention(const Block& block, const torch::Tensor& x) {
  const auto B = x.size(0), T = x.size(1), d = config_.d_model, H = config_.n_heads;
  const auto qkv = torch::nn::functional::linear(x.to(compute_dtype_), block.qkv.to(compute_dtype_))
                       .to(torch::kFloat)
                       .view({B, T, 3, H, d / H})
                       .permute({2, 0, 3, 1, 4});  // [3, B, H, T, head_dim]
  const auto cos = rope_cos_.narrow(0, 0, T), sin = rope_sin_.narrow(0, 0, T);
  const auto mixed =
      compat::causal_attention(apply_rope(qkv[0], cos, sin), apply_rope(qkv[1], cos, sin), qkv[2]);
  const auto merged = mixed.transpose(1, 2).reshape({B, T, d});
  return torch::nn::functional::linear(merged.to(compute_dtype_), block.attention_out.to(compute_dtype_))
      .to(torch::kFloat);
}

torch::Tensor MoeTransformerImpl::feed_forward(const Block& block, const torch::Tensor& x,
                                               double capacity_factor, torch::Tensor& z_loss,
                                               torch::Tensor& balance_loss) {
  const auto B = x.size(0), T = x.size(1), d = x.size(2), E = config_.experts;
  const auto gate = block.gate.to(compute_dtype_), up = block.up.to(compute_dtype_),
             down = block.down.to(compute_dtype_);
  if (E == 1) {
    const auto h = x.to(compute_dtype_);
    return torch::matmul(torch::silu(torch::matmul(h, gate[0])) * torch::matmul(h, up[0]), down[0])
        .to(torch::kFloat);
  }

  const auto logits = torch::nn::functional::linear(x, block.router);  // fp32: x and the router are fp32
  const auto probabilities = torch::softmax(logits, -1);               // [B, T, E]
  z_loss = z_loss + torch::logsumexp(logits, -1).square().mean();
  const auto [top_probability, top_expert] = probabilities.max(-1);  // [B, T]
  const auto routed_fraction =
      torch::one_hot(top_expert, E).to(torch::kFloat).mean(1);  // f_i, before dropping
  balance_loss =
      balance_loss + static_cast<double>(E) * (routed_fraction * probabilities.mean(1)).sum(-1).mean();

  const auto capacity = std::min<std::int64_t>(
      T, static_cast<std::int64_t>(std::ceil(capacity_factor * static_cast<double>(T) / E)));
  const auto routing = route_top1(top_expert, top_probability, E, capacity);
  const auto group = torch::arange(B, top_expert.options()).unsqueeze(1);
  const auto slot = ((group * E + top_expert) * capacity + routing.position).flatten();
  const auto kept_tokens = routing.kept.flatten().nonzero().squeeze(1);
  const auto kept_slots = slot.index_select(0, kept_tokens);

  // Dispatch into [B·E·C, d] (unfilled slots stay zero), run the experts as one bmm over [E, B·C, d],
  // and combine back, scaled by the router probability.
  const auto flat = x.reshape({B * T, d}).to(compute_dtype_);
  const auto buffer = torch::zeros({B * E * capacity, d}, flat.options())
                          .index_copy(0, kept_slots, flat.index_select(0, kept_tokens))
                          .view({B, E, capacity, d})
                          .transpose(0, 1)
                          .reshape({E, B * capacity, d});
  const auto hidden = torch::silu(torch::bmm(buffer, gate)) * torch::bmm(buffer, up);
  const auto expert_out =
      torch::bmm(hidden, down).view({E, B, capacity, d}).transpose(0, 1).reshape({B * E * capacity, d});
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
  for (auto& block : blocks_) {
    x = x + attention(block, block.attention_norm(x));
    x = x + feed_forward(block, block.feed_forward_norm(x), capacity_factor, z_loss, balance_loss);
  }
  const auto logits =
      torch::nn::functional::linear(final_norm_(x).to(compute_dtype_), head_.to(compute_dtype_))
          .to(torch::kFloat);
  return {logits, z_loss, balance_loss};
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
