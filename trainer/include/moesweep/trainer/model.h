#pragma once
// The decoder-only Switch-MoE transformer (the paper's recipe):
//  - pre-norm blocks (LayerNorm), causal multi-head attention with RoPE, untied input embedding and
//    output head;
//  - feed-forward = Switch layer: a linear router (fp32 softmax), top-1 token choice, SwiGLU experts
//    with hidden size 3·d_model run as batched GEMMs over an [E, capacity, d] buffer; the expert output
//    is scaled by the router probability (not renormalised, so the router learns from the LM loss);
//    E = 1 is a plain dense SwiGLU block without router;
//  - routing groups are single sequences: capacity = ceil(capacity_factor · seq_len / E) per expert and
//    sequence, and the balance loss is averaged over sequences, so results do not depend on how a batch
//    is split over ranks;
//  - dropping rule: an expert over capacity keeps its most probable tokens (highest router probability;
//    ties go to the earlier position); dropped tokens get no feed-forward output and pass through the
//    residual;
//  - attention, RoPE and the router run in fp32; the other GEMMs in `compute_dtype` (bf16 on CUDA).
// Init: truncated normal with std = sqrt(0.1 / fan_in) at ±2 std for every matrix (fan_in = d_model
// for the embedding), LayerNorm at 1 and 0.
#include <torch/torch.h>

#include "moesweep/trainer/run_config.h"

namespace moesweep::trainer {

struct ModelOutput {
  torch::Tensor logits;        // [B, T, V], fp32
  torch::Tensor z_loss;        // Σ over layers of mean over tokens of logsumexp(router logits)²
  torch::Tensor balance_loss;  // Σ over layers of mean over sequences of E·Σ_i f_i·P_i
};

// Top-1 routing with capacity, per group (row). Inputs [G, T]: each token's chosen expert and its
// router probability. Outputs [G, T]: the token's position in its expert's buffer (by descending
// probability) and whether it fits (position < capacity).
struct Routing {
  torch::Tensor position;
  torch::Tensor kept;
};
Routing route_top1(const torch::Tensor& expert, const torch::Tensor& probability, std::int64_t experts,
                   std::int64_t capacity);

class MoeTransformerImpl : public torch::nn::Module {
 public:
  explicit MoeTransformerImpl(const ModelConfig& config, torch::Dtype compute_dtype = torch::kFloat);
  // tokens: [B, T] int64, T ≤ seq_len.
  ModelOutput forward(const torch::Tensor& tokens, double capacity_factor);
  const ModelConfig& config() const { return config_; }

 private:
  struct Block {
    torch::nn::LayerNorm attention_norm{nullptr}, feed_forward_norm{nullptr};
    torch::Tensor qkv, attention_out;  // [3d, d], [d, d]
    torch::Tensor router;              // [E, d]; undefined when E = 1
    torch::Tensor gate, up, down;      // [E, d, 3d], [E, d, 3d], [E, 3d, d]
  };
  torch::Tensor attention(const Block& block, const torch::Tensor& x);
  torch::Tensor feed_forward(const Block& block, const torch::Tensor& x, double capacity_factor,
                             torch::Tensor& z_loss, torch::Tensor& balance_loss);

  ModelConfig config_;
  torch::Dtype compute_dtype_;
  torch::Tensor embedding_, head_;  // [V, d] each
  std::vector<Block> blocks_;
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::Tensor rope_cos_, rope_sin_;  // [seq_len, head_dim / 2]
};
TORCH_MODULE(MoeTransformer);

// Parameters as the paper counts them (router and norms excluded), from the built model's tensors:
// all experts for the total, one expert per layer for the active count.
std::int64_t counted_total_params(MoeTransformerImpl& model);
std::int64_t counted_active_params(MoeTransformerImpl& model);

}  // namespace moesweep::trainer
