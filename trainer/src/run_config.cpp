#include "moesweep/trainer/run_config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace moesweep::trainer {

std::int64_t vocab_size_of(const std::string& tokenizer) {
  if (tokenizer == "byte") return 256;
  if (tokenizer == "gpt2") return 50257;
  constexpr std::string_view kSentencePiece = "sentencepiece:";
  if (tokenizer.rfind(kSentencePiece, 0) == 0) {
    const std::string digits = tokenizer.substr(kSentencePiece.size());
    if (digits.empty() || digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos)
      return 0;
    const std::int64_t v = std::stoll(digits);
    return v >= 2 && v < (std::int64_t{1} << 31) ? v : 0;
  }
  return 0;
}

std::string tokenizer_family(const std::string& tokenizer) {
  return tokenizer.rfind("sentencepiece:", 0) == 0 ? "sentencepiece" : tokenizer;
}

std::int64_t non_embedding_active_params(const ModelConfig& m) {
  return 13 * m.d_model * m.d_model * m.n_layers;
}

std::int64_t active_params(const ModelConfig& m) {
  return non_embedding_active_params(m) + 2 * m.d_model * m.vocab_size;
}

std::int64_t total_params(const ModelConfig& m) {
  return (4 + 9 * m.experts) * m.d_model * m.d_model * m.n_layers + 2 * m.d_model * m.vocab_size;
}

double training_flops(const RunConfig& r) {
  return 6.0 * static_cast<double>(active_params(r.model)) * static_cast<double>(r.train.tokens);
}

double auto_learning_rate(std::int64_t n_act, std::int64_t experts) {
  return std::exp(8.3916 - 0.81218 * std::log(static_cast<double>(n_act)) -
                  0.25 * std::log(static_cast<double>(experts)));
}

}  // namespace moesweep::trainer

namespace moesweep::trainer {

double decay_factor_at(const TrainConfig& train, std::int64_t tokens_done) {
  // Decay counts tokens before the step, so the last step still moves.
  const double decay_tokens = train.decay_fraction * static_cast<double>(train.tokens);
  return decay_tokens > 0
             ? std::clamp(static_cast<double>(train.tokens - tokens_done) / decay_tokens, 0.0, 1.0)
             : 1.0;
}

double learning_rate_at(const TrainConfig& train, std::int64_t tokens_done, std::int64_t batch_tokens) {
  // Warm-up counts the step's own tokens, so the first step already moves.
  const double warmup = train.warmup_tokens > 0
                            ? std::min(1.0, static_cast<double>(tokens_done + batch_tokens) /
                                                static_cast<double>(train.warmup_tokens))
                            : 1.0;
  return train.lr * warmup * decay_factor_at(train, tokens_done);
}

namespace {

constexpr std::int64_t kRampHalf = 500'000'000;
constexpr std::int64_t kRampFull = 1'000'000'000;

// Where the batch size next changes after `tokens_done` (none: the largest int64).
std::int64_t next_batch_change(const RunConfig& config, std::int64_t tokens_done) {
  if (config.train.batch_ramp) {
    if (tokens_done < kRampHalf) return kRampHalf;
    if (tokens_done < kRampFull) return kRampFull;
  }
  return std::numeric_limits<std::int64_t>::max();
}

}  // namespace

std::int64_t batch_sequences_at(const RunConfig& config, std::int64_t tokens_done) {
  const auto full = config.train.batch_tokens / config.model.seq_len;
  if (!config.train.batch_ramp) return full;
  if (tokens_done < kRampHalf) return std::max<std::int64_t>(1, full / 4);
  if (tokens_done < kRampFull) return std::max<std::int64_t>(1, full / 2);
  return full;
}

namespace {

// The distinct batch sizes of a run, in sequences: the ramp's three, or the one batch.
std::vector<std::int64_t> batch_sizes(const RunConfig& config) {
  std::vector<std::int64_t> sizes;
  for (const std::int64_t tokens : {std::int64_t{0}, kRampHalf, kRampFull}) {
    const auto sequences = batch_sequences_at(config, tokens);
    if (std::find(sizes.begin(), sizes.end(), sequences) == sizes.end()) sizes.push_back(sequences);
  }
  return sizes;
}

}  // namespace

std::int64_t routing_group_size(const ModelConfig& model, std::int64_t sequences) {
  return std::max<std::int64_t>(1, std::min(model.routing_group, sequences));
}

std::int64_t eval_routing_group(const RunConfig& config) {
  return routing_group_size(config.model, batch_sequences_at(config, config.train.tokens));
}

std::string routing_group_problem(const RunConfig& config) {
  for (const auto sequences : batch_sizes(config)) {
    const auto group = routing_group_size(config.model, sequences);
    if (sequences % group != 0)
      return "a batch of " + std::to_string(sequences) + " sequences is not a whole number of " +
             std::to_string(group) + "-sequence routing groups";
  }
  return "";
}

std::int64_t max_data_parallel_ranks(const RunConfig& config) {
  std::int64_t ranks = std::numeric_limits<std::int64_t>::max();
  for (const auto sequences : batch_sizes(config))
    ranks = std::min(ranks, sequences / routing_group_size(config.model, sequences));
  return ranks;
}

std::string data_parallel_problem(const RunConfig& config, std::int64_t ranks) {
  if (max_data_parallel_ranks(config) >= ranks) return "";
  const auto sizes = batch_sizes(config);
  const auto smallest = *std::min_element(sizes.begin(), sizes.end());
  std::string why = "the smallest batch, " + std::to_string(smallest) + " sequences, makes " +
                    std::to_string(max_data_parallel_ranks(config)) + " routing group(s) of " +
                    std::to_string(routing_group_size(config.model, smallest)) + ", fewer than the " +
                    std::to_string(ranks) + " data-parallel ranks (each takes whole groups); ";
  // The largest group that divides every batch and leaves each rank a group.
  for (auto group = smallest / ranks; group >= 1; --group) {
    RunConfig smaller = config;
    smaller.model.routing_group = group;
    if (routing_group_problem(smaller).empty()) return why + "set model.routing_group to at most " + std::to_string(group);
  }
  return why + "a batch of " + std::to_string(smallest) + " sequences cannot be split over " + std::to_string(ranks) +
         " ranks";
}

StepBoundary step_boundary_at_or_before(const RunConfig& config, std::int64_t tokens) {
  // Walk the ramp's phases: within one the batch is constant, so whole runs of steps are a division.
  StepBoundary b;
  while (b.tokens < tokens) {
    const std::int64_t batch = batch_sequences_at(config, b.tokens) * config.model.seq_len;
    if (batch <= 0) return b;
    const std::int64_t change = next_batch_change(config, b.tokens);
    const std::int64_t fit = (tokens - b.tokens) / batch;  // steps that end at or before `tokens`
    const std::int64_t in_phase = change == std::numeric_limits<std::int64_t>::max()
                                      ? fit
                                      : (change - b.tokens + batch - 1) / batch;  // steps starting before it
    const std::int64_t steps = std::min(fit, in_phase);
    b.step += steps;
    b.tokens += steps * batch;
    if (steps == fit) return b;
  }
  return b;
}

StepBoundary step_boundary_at_or_after(const RunConfig& config, std::int64_t tokens) {
  StepBoundary b = step_boundary_at_or_before(config, tokens);
  if (b.tokens < tokens) {
    b.tokens += batch_sequences_at(config, b.tokens) * config.model.seq_len;
    b.step += 1;
  }
  return b;
}

StepBoundary cooldown_branch_point(const RunConfig& config) {
  const auto& t = config.train;
  const auto start =
      static_cast<std::int64_t>(std::floor((1.0 - t.decay_fraction) * static_cast<double>(t.tokens)));
  StepBoundary b = step_boundary_at_or_before(config, std::max<std::int64_t>(0, start));
  // Rounding can put (1 − f)·D a hair past where the decay formula leaves 1: step back until it is 1.
  while (b.tokens > 0 && decay_factor_at(t, b.tokens) < 1.0)
    b = step_boundary_at_or_before(config, b.tokens - 1);
  return b;
}

RunConfig cooldown_trunk_config(const RunConfig& config, std::int64_t tokens) {
  RunConfig trunk = config;
  trunk.train.tokens = tokens;
  trunk.train.decay_fraction = 0.0;
  return trunk;
}

}  // namespace moesweep::trainer
