#pragma once
// The planner: which N_act, D and E to choose under a compute budget, and under a memory budget,
// with the paper's accounting (DESIGN.md): training FLOPs = 6·N_act·D, inference FLOPs = 2·N_act per
// token, memory = total parameters + KV cache at 2 bytes per element.
#include <optional>
#include <string>
#include <vector>

#include "moesweep/analysis/law.h"

namespace moesweep::analysis {

// The expert counts the planner compares (the paper's grid); memory-optimal answers at the last one
// are printed "≥32" because a larger E might do better still.
inline constexpr int kPlannerExperts[] = {1, 2, 4, 8, 16, 32};
inline constexpr int kMaxPlannerExperts = 32;

// The smallest model (active parameters) the compute-optimal search considers.
inline constexpr double kSmallestModel = 1e3;

// The GPT-2 vocabulary, the paper's. A byte-level study plans with 256.
inline constexpr double kPaperVocabulary = 50257;

struct Budget {
  double flops = 0;             // total compute: training plus, when given, inference
  double inference_tokens = 0;  // tokens served over the model's life, each costing 2·N_act FLOPs
  double memory_bytes = 0;      // 0 = no memory limit
  double kv_tokens = 0;         // tokens of KV cache held in memory at inference
  double vocabulary = kPaperVocabulary;  // V in the shape family's embedding and head (memory_optimal)
};

struct Optimum {
  int experts = 1;
  double n_act = 0;
  double tokens = 0;  // D
  double loss = 0;
};

// For each E in kPlannerExperts: the N_act (continuous) and D minimising L under the compute budget.
// Throws std::runtime_error when the law has no interior optimum (a fitted exponent of the wrong sign).
std::vector<Optimum> compute_optimal(const Coefficients& k, const Budget& budget);

// The paper's shape family: n_layers = d_model / 64, so N_act = 13·d³/64 + 2·d·V and
// N_total = ((4 + 9E)/64)·d³ + 2·d·V (V = 50257 in the paper).
struct Shape {
  int d_model = 0;
  int n_layers = 0;
  double vocabulary = kPaperVocabulary;
};
double active_params(const Shape& shape);
double total_params(const Shape& shape, int experts);
// Total parameters plus KV cache (2·n_layers·d_model elements per cached token), 2 bytes each.
double memory_bytes(const Shape& shape, int experts, double kv_tokens);

struct MemoryOptimum {
  Optimum optimum;
  Shape shape;
  double n_total = 0;
  double memory_bytes = 0;
  bool experts_capped = false;  // the best E is kMaxPlannerExperts: read it as "≥32"
};

// The lowest-loss (E, shape) with memory_bytes ≤ budget.memory_bytes and the compute budget spent on
// tokens; d_model runs over multiples of 64 (whole layers). nullopt when not even the smallest shape fits.
std::optional<MemoryOptimum> memory_optimal(const Coefficients& k, const Budget& budget);

// The grid of the paper's Table 2: memory budgets (rows) × training compute (columns).
inline constexpr const char* kTable2Memories[] = {"24GB", "80GB", "640GB"};
inline constexpr double kTable2Flops[] = {1e21, 1e22, 1e23};

// "24GB", "80 GB", "1.5TB", "16GiB", "1e9": bytes. GB/TB are decimal, GiB/TiB binary. Throws
// InputError naming `option` for anything else or a non-positive amount.
double parse_bytes(const std::string& text, const std::string& option);

}  // namespace moesweep::analysis
