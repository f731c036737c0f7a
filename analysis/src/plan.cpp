#include "moesweep/analysis/plan.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "moesweep/input_error.h"

namespace moesweep::analysis {
namespace {

constexpr double kBytesPerElement = 2;
constexpr int kLayerWidth = 64;       // d_model per layer in the paper's shape family
constexpr int kMaxWidthSteps = 4096;  // d_model up to 262144: far beyond any budget the paper considers

// Tokens left for training once inference has taken its share of the budget; ≤ 0 when nothing is left.
double training_tokens(const Budget& budget, double n_act) {
  return (budget.flops - 2.0 * n_act * budget.inference_tokens) / (6.0 * n_act);
}

// Minimises L over ln N for one E. L along the budget is unimodal in ln N (with no inference it is a
// sum of two convex exponentials in ln N), so a log-spaced scan brackets the minimum and golden-section
// search polishes it.
Optimum compute_optimum_for(const Coefficients& k, const Budget& budget, int experts) {
  const double largest_n = budget.inference_tokens > 0 ? budget.flops / (2.0 * budget.inference_tokens)
                                                       : budget.flops / 6.0;  // at least one token
  const double lo = std::log(kSmallestModel), hi = std::log(largest_n) - 1e-9;
  if (!(hi > lo)) throw std::runtime_error("the compute budget is too small to train any model");
  auto loss_at = [&](double log_n) {
    const double n = std::exp(log_n);
    const double d = training_tokens(budget, n);
    return d > 0 ? predict_loss(k, n, d, experts) : std::numeric_limits<double>::infinity();
  };
  constexpr int kScanPoints = 2000;
  const double step = (hi - lo) / kScanPoints;
  int best = 0;
  double best_loss = std::numeric_limits<double>::infinity();
  for (int i = 0; i <= kScanPoints; ++i) {
    const double loss = loss_at(lo + i * step);
    if (loss < best_loss) best_loss = loss, best = i;
  }
  if (best == 0 || best == kScanPoints)
    throw std::runtime_error(
        "the law has no compute-optimal model size for E = " + std::to_string(experts) +
        " (the loss keeps falling toward the edge of the search; check the fitted exponents)");
  double a = lo + (best - 1) * step, b = lo + (best + 1) * step;
  const double inv_phi = (std::sqrt(5.0) - 1.0) / 2.0;
  double x1 = b - inv_phi * (b - a), x2 = a + inv_phi * (b - a);
  double f1 = loss_at(x1), f2 = loss_at(x2);
  while (b - a > 1e-12) {
    if (f1 < f2) {
      b = x2, x2 = x1, f2 = f1, x1 = b - inv_phi * (b - a), f1 = loss_at(x1);
    } else {
      a = x1, x1 = x2, f1 = f2, x2 = a + inv_phi * (b - a), f2 = loss_at(x2);
    }
  }
  const double n = std::exp((a + b) / 2.0);
  const double d = training_tokens(budget, n);
  return Optimum{experts, n, d, predict_loss(k, n, d, experts)};
}

}  // namespace

std::vector<Optimum> compute_optimal(const Coefficients& k, const Budget& budget) {
  std::vector<Optimum> optima;
  for (const int experts : kPlannerExperts) optima.push_back(compute_optimum_for(k, budget, experts));
  return optima;
}

double active_params(const Shape& shape) {
  const double d = shape.d_model;
  return 13.0 * d * d * shape.n_layers + 2.0 * d * shape.vocabulary;
}

double total_params(const Shape& shape, int experts) {
  const double d = shape.d_model;
  return (4.0 + 9.0 * experts) * d * d * shape.n_layers + 2.0 * d * shape.vocabulary;
}

double memory_bytes(const Shape& shape, int experts, double kv_tokens) {
  const double kv_elements = 2.0 * shape.n_layers * shape.d_model * kv_tokens;
  return kBytesPerElement * (total_params(shape, experts) + kv_elements);
}

std::optional<MemoryOptimum> memory_optimal(const Coefficients& k, const Budget& budget) {
  std::optional<MemoryOptimum> best;
  for (const int experts : kPlannerExperts) {
    for (int step = 1; step <= kMaxWidthSteps; ++step) {
      const Shape shape{step * kLayerWidth, step, budget.vocabulary};
      const double memory = memory_bytes(shape, experts, budget.kv_tokens);
      if (memory > budget.memory_bytes) break;  // memory grows with d_model
      const double n_act = active_params(shape);
      const double tokens = training_tokens(budget, n_act);
      if (!(tokens >= 1)) break;  // larger models leave even fewer tokens
      const double loss = predict_loss(k, n_act, tokens, experts);
      if (!best || loss < best->optimum.loss)
        best = MemoryOptimum{Optimum{experts, n_act, tokens, loss}, shape, total_params(shape, experts),
                             memory, experts == kMaxPlannerExperts};
    }
  }
  return best;
}

double parse_bytes(const std::string& text, const std::string& option) {
  double amount = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  const auto [rest, error] = std::from_chars(begin, end, amount);
  if (error != std::errc() || !std::isfinite(amount) || !(amount > 0))
    throw InputError::at(option, 0, "", "'" + text + "' is not a positive amount of memory (e.g. 80GB)");
  std::string unit(rest, end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  struct Unit {
    const char* name;
    double bytes;
  };
  constexpr Unit kUnits[] = {
      {"", 1},      {"B", 1},        {"KB", 1e3},        {"MB", 1e6},           {"GB", 1e9},
      {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  for (const Unit& u : kUnits)
    if (unit == u.name) return amount * u.bytes;
  throw InputError::at(option, 0, "",
                       "unknown unit '" + unit + "' in '" + text + "' (use B, GB, TB, GiB or TiB)");
}

}  // namespace moesweep::analysis
