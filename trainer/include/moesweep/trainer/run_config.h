#pragma once
// The fully resolved configuration of one training run: what `moesweep train RUN.toml` takes and what a
// sweep expands into. Plain data; parsing (TOML) lives in the orchestrator, training in the trainer.
#include <cstdint>
#include <string>

namespace moesweep::trainer {

struct DataConfig {
  std::string train;               // token shard written by prepare-data (path as written in the file)
  std::string val;
  // "byte" (256 symbols), "gpt2" (50257), or "sentencepiece:V" for shards prepared with a SentencePiece
  // model of V pieces (prepare-data prints V; the shards record it, and a mismatch is refused).
  std::string tokenizer = "byte";
};

struct ModelConfig {
  std::int64_t d_model = 64;
  std::int64_t n_layers = 2;
  std::int64_t n_heads = 4;
  std::int64_t experts = 1;  // 1 = dense SwiGLU block, no router
  std::int64_t seq_len = 128;
  std::int64_t vocab_size = 256;  // derived from the tokenizer
  double capacity_factor = 1.0;       // training
  double eval_capacity_factor = 1.5;  // evaluation (the paper's measured loss)

  // The authors' recipe (llm-random, branch constrained_main_eval; DESIGN.md "Trainer recipe details").
  // Routing group, in sequences: capacity and both auxiliary losses are computed over the tokens of
  // this many consecutive sequences of a batch (the whole batch when it is smaller), in training and in
  // eval. The authors' group is one forward call (the per-GPU micro-batch; 64 sequences in their eval);
  // ours is a fixed count, so a run gives the same result on any number of data-parallel ranks.
  std::int64_t routing_group = 64;
  // Capacity per expert and group = min(round(cf · group_tokens / E), group_tokens); the authors floor.
  std::string capacity_rounding = "floor";  // "floor" | "ceil"
  bool final_norm = false;                  // the authors have no LayerNorm before the head
  // Init: normal with std √(0.1 / fan_in), cut at ±init_truncation (absolute; the authors' 0.2 cuts
  // nothing but the embedding, whose std is √0.1 with their fan_in of 1).
  double init_truncation = 0.2;
  std::int64_t embedding_init_fan_in = 1;
  // The expert down-projection's fan_in: "all_experts" = E·3d (the authors' code), "one_expert" = 3d.
  std::string expert_down_fan_in = "all_experts";
};

struct TrainConfig {
  std::int64_t tokens = 2'000'000;  // D
  std::int64_t batch_tokens = 8192;
  double lr = 0.0;         // resolved learning rate (lr = "auto" is resolved at parse time)
  bool lr_auto = false;    // whether lr came from the auto rule (informational)
  std::int64_t warmup_tokens = 100'000;
  double decay_fraction = 0.2;  // linear decay to 0 over the final fraction of tokens
  double weight_decay = 0.1;
  double grad_clip = 0.1;
  std::uint64_t seed = 0;
  std::int64_t eval_tokens = 65'536;
  std::int64_t checkpoint_every_tokens = 500'000;
  bool batch_ramp = false;  // the paper's 128 -> 256 -> 512 sequence ramp at 0.5B and 1B tokens
  double z_loss_weight = 0.001;
  double balance_loss_weight = 0.01;
  // AdamW as the authors ran it: PyTorch's defaults β = (0.9, 0.999), eps 1e-8, never overridden.
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  // Which parameters weight decay applies to: "all" (the authors: every parameter, LayerNorm included)
  // or "matrices" (the common GPT practice: parameters of two or more dimensions only).
  std::string weight_decay_scope = "all";
};

struct RunConfig {
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
};

// Vocabulary size of a tokenizer name: 256, 50257, or V of "sentencepiece:V" (2 ≤ V < 2^31); 0 for an
// unknown name.
std::int64_t vocab_size_of(const std::string& tokenizer);
// The tokenizer a shard header names for a run's tokenizer: "sentencepiece" for "sentencepiece:V",
// else the name itself.
std::string tokenizer_family(const std::string& tokenizer);

// Parameter counts exactly as the paper counts them (router and norms excluded):
// active = 13·d²·L + 2·d·V; total = (4 + 9E)·d²·L + 2·d·V.
std::int64_t active_params(const ModelConfig& m);
std::int64_t total_params(const ModelConfig& m);
std::int64_t non_embedding_active_params(const ModelConfig& m);  // 13·d²·L

// Training FLOPs as the paper counts them: 6·N_act·D.
double training_flops(const RunConfig& r);

// The learning-rate rule lr = exp(8.3916 − 0.81218·ln N_act − 0.25·ln E).
double auto_learning_rate(std::int64_t n_act, std::int64_t experts);

// The rule's name and version, which a run key hashes for lr = "auto" instead of the rate: the rate's
// last bit depends on the build (fused multiply-add, libm), the name does not. Change the version
// whenever auto_learning_rate changes, so runs trained at the old rates are not taken for done.
inline constexpr const char* kAutoLearningRateRule = "auto (rule v1)";

// --- The schedule: plain arithmetic on the config, shared by the trainer and the sweep expansion. ---

// The learning rate of the step that starts after `tokens_done` tokens and consumes `batch_tokens`:
// linear warm-up over warmup_tokens, constant, then linear decay to 0 over the final decay_fraction
// of train.tokens.
double learning_rate_at(const TrainConfig& train, std::int64_t tokens_done, std::int64_t batch_tokens);

// The decay part of that rate alone: 1 before the decay starts, falling linearly to 0 at train.tokens.
double decay_factor_at(const TrainConfig& train, std::int64_t tokens_done);

// Sequences per global batch at `tokens_done`: batch_tokens / seq_len, or with batch_ramp the paper's
// ramp (a quarter of it until 0.5B tokens, half until 1B tokens, then all of it).
std::int64_t batch_sequences_at(const RunConfig& config, std::int64_t tokens_done);

// --- Routing groups (model.routing_group): plain arithmetic, shared by the trainer and the scheduler. ---

// Sequences per routing group for a forward call on `sequences` sequences: min(routing_group, sequences).
std::int64_t routing_group_size(const ModelConfig& model, std::int64_t sequences);

// The routing group of the run's last batch. Eval routes in groups of this size too, so training and
// eval route alike (at paper scale, the authors' 64 sequences; for a small batch, the whole batch).
std::int64_t eval_routing_group(const RunConfig& config);

// Empty when every batch of the run (the ramp's too) is a whole number of routing groups; otherwise
// the reason, for an InputError on model.routing_group.
std::string routing_group_problem(const RunConfig& config);

// The most data-parallel ranks the run can train on: ranks take whole routing groups, so the routing
// groups in its smallest batch.
std::int64_t max_data_parallel_ranks(const RunConfig& config);

// Empty when the run can train on `ranks` data-parallel ranks; otherwise why not, with the largest
// model.routing_group that would do.
std::string data_parallel_problem(const RunConfig& config, std::int64_t ranks);

// A step boundary: the position after `step` optimizer steps, `tokens` training tokens in.
struct StepBoundary {
  std::int64_t step = 0;
  std::int64_t tokens = 0;
  bool operator==(const StepBoundary& o) const { return step == o.step && tokens == o.tokens; }
};

// The last step boundary at or before `tokens` (the batch ramp included), and the first at or after it.
StepBoundary step_boundary_at_or_before(const RunConfig& config, std::int64_t tokens);
StepBoundary step_boundary_at_or_after(const RunConfig& config, std::int64_t tokens);

// Cooldown branching. A run of D tokens with decay_fraction f is the same training as a trunk at
// constant learning rate (after the same warm-up) up to its branch point, then a branch that decays
// over the rest. The branch point is the last step boundary at or before (1 − f)·D at which the run's
// decay has not begun (decay_factor_at == 1), so every step before it has exactly the trunk's rate.
StepBoundary cooldown_branch_point(const RunConfig& config);

// The trunk that `config`'s cooldown branches share, trained to `tokens`: the same run at constant
// learning rate after warm-up (decay_fraction 0).
RunConfig cooldown_trunk_config(const RunConfig& config, std::int64_t tokens);

}  // namespace moesweep::trainer
