#pragma once
// The decoder-only Switch-MoE transformer, as the authors' llm-random code builds it (DESIGN.md
// "Trainer recipe details"; every choice below is a ModelConfig key with the authors' default):
//  - pre-norm blocks (LayerNorm), causal multi-head attention with RoPE (θ = 10000, rotate-half), untied
//    input embedding and output head, no biases, no LayerNorm before the head (final_norm = false);
//  - feed-forward = Switch layer: a linear router (fp32 softmax), top-1 token choice, SwiGLU experts
//    with hidden size 3·d_model run as batched GEMMs over an [E, capacity, d] buffer; the expert output
//    is scaled by the router probability (not renormalised, so the router learns from the LM loss);
//    E = 1 is a plain dense SwiGLU block without router;
//  - routing groups of `routing_group` consecutive sequences (the whole batch when smaller): per
//    group and expert, capacity = min(floor(cf · group_tokens / E), group_tokens), and the balance
//    and z-losses are computed over the group;
//  - over capacity, an expert keeps tokens in position order of the flattened group (sequence-major):
//    a token's fate depends only on earlier tokens of its own sequence (and on earlier sequences of
//    its group), never on a later position, so the model cannot see the future through routing.
//    Dropped tokens get no feed-forward output and pass through the residual;
//  - the router runs in fp32; the GEMMs and attention in `compute_dtype` (bf16 on CUDA, where attention
//    goes through the fused kernel with fp32 softmax statistics; fp32 on CPU).
// Init: normal with std = √(0.1 / fan_in), cut at ±init_truncation (absolute); fan_in = d_model for
// attention, router, gate, up and head, E·3d for the expert down-projection (expert_down_fan_in),
// embedding_init_fan_in (1) for the embedding; LayerNorm at 1 and 0.
#include <torch/torch.h>

#include "moesweep/trainer/run_config.h"

namespace moesweep::trainer {

struct ModelOutput {
  torch::Tensor logits;        // [B, T, V], fp32
  torch::Tensor z_loss;        // Σ over layers of mean over tokens of logsumexp(router logits)²
  torch::Tensor balance_loss;  // Σ over layers of mean over routing groups of E·Σ_i f_i·P_i
  torch::Tensor dropped;       // [n_layers] int64: tokens dropped for lack of capacity in each layer
};

// Top-1 routing with capacity, per routing group (row). Input [G, N]: each token's chosen expert, the
// group's tokens flattened sequence-major. Outputs [G, N]: the token's position in its expert's buffer
// (the number of earlier tokens of the group routed to the same expert) and whether it fits
// (position < capacity).
struct Routing {
  torch::Tensor position;
  torch::Tensor kept;
};
Routing route_top1(const torch::Tensor& expert, std::int64_t experts, std::int64_t capacity);

// Expert capacity of one routing group of `group_tokens` tokens: min(floor or ceil(cf · group_tokens /
// E), group_tokens), by config.capacity_rounding.
std::int64_t expert_capacity(const ModelConfig& config, double capacity_factor, std::int64_t group_tokens);

class MoeTransformerImpl : public torch::nn::Module {
 public:
  explicit MoeTransformerImpl(const ModelConfig& config, torch::Dtype compute_dtype = torch::kFloat);
  // tokens: [B, T] int64, T ≤ seq_len; B must be a multiple of routing_group_size(config, B) (a
  // TORCH_CHECK fails otherwise: callers split batches into whole routing groups).
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
                             torch::Tensor& z_loss, torch::Tensor& balance_loss, torch::Tensor& dropped);

  ModelConfig config_;
  torch::Dtype compute_dtype_;
  torch::Tensor embedding_, head_;  // [V, d] each
  std::vector<Block> blocks_;
  torch::nn::LayerNorm final_norm_{nullptr};  // null unless config.final_norm
  torch::Tensor rope_cos_, rope_sin_;         // [seq_len, head_dim / 2]
};
TORCH_MODULE(MoeTransformer);

// Parameters as the paper counts them (router and norms excluded), from the built model's tensors:
// all experts for the total, one expert per layer for the active count.
std::int64_t counted_total_params(MoeTransformerImpl& model);
std::int64_t counted_active_params(MoeTransformerImpl& model);

// --- One training step's pieces, exactly as the trainer runs them (the parity test uses them too) ---

struct StepLosses {
  torch::Tensor lm;     // mean cross-entropy over the batch's tokens (nats/token)
  torch::Tensor total;  // lm + z_loss_weight·z_loss + balance_loss_weight·balance_loss
};
// batch: [B, T + 1] int64 windows (inputs [:, :T], targets [:, 1:]).
StepLosses training_losses(const ModelOutput& out, const torch::Tensor& batch, const TrainConfig& train);

// AdamW with the run's betas, eps and weight decay (on every parameter, or on matrices only, by
// train.weight_decay_scope); the learning rate is set per step by the caller.
std::unique_ptr<torch::optim::AdamW> make_optimizer(MoeTransformerImpl& model, const TrainConfig& train);

}  // namespace moesweep::trainer
