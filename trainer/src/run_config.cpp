#include "moesweep/trainer/run_config.h"

#include <cmath>

namespace moesweep::trainer {

std::int64_t vocab_size_of(const std::string& tokenizer) {
  if (tokenizer == "byte") return 256;
  if (tokenizer == "gpt2") return 50257;
  return 0;
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
