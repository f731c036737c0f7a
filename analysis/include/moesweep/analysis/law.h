#pragma once
// The joint MoE scaling law of Ludziejewski et al. (ICML 2025), in DESIGN.md's sign convention:
//
//   L(N, D, E) = a·Ê^δ·N^(α + γ·ln Ê) + b·Ê^ω·D^(β + ζ·ln Ê) + c
//   1/Ê = 1 / (E − 0.99 + (1/E_start − 1/E_max)^−1) + 1/E_max      (Clark et al. 2022)
//
// N = active parameters (embedding and head included), D = training tokens, E = experts (1 = dense).
#include <array>
#include <string>
#include <string_view>

namespace moesweep::analysis {

// `joint` is the full law; `dense` is the Chinchilla form a·N^α + b·D^β + c that a fit on E = 1 runs
// alone produces (γ = δ = ζ = ω = 0, so E_start and E_max have no effect).
enum class LawForm { joint, dense };

struct Coefficients {
  double a = 0, alpha = 0, gamma = 0, delta = 0;
  double b = 0, beta = 0, zeta = 0, omega = 0;
  double c = 0;
  double e_start = 0, e_max = 0;
  LawForm form = LawForm::joint;
};

// A dense law's E_start and E_max have no effect on its predictions (γ = δ = ζ = ω = 0); they are kept
// at these values so that Ê stays defined, and are neither printed nor written to fit.toml.
inline constexpr double kDenseEStart = 2.0;
inline constexpr double kDenseEMax = 200.0;

inline constexpr std::size_t kCoefficientCount = 11;
// The coefficient names as fit.toml and the JSON outputs spell them, in Coefficients' field order.
inline constexpr std::array<std::string_view, kCoefficientCount> kCoefficientNames = {
    "a", "alpha", "gamma", "delta", "b", "beta", "zeta", "omega", "c", "e_start", "e_max"};
std::array<double, kCoefficientCount> to_array(const Coefficients& k);
Coefficients from_array(const std::array<double, kCoefficientCount>& values, LawForm form);

// The published fit (DESIGN.md), what `--coefficients paper` selects.
Coefficients paper_coefficients();

// Clark's transformed expert count Ê, with E − 0.99 as the authors' code has it.
double transformed_experts(double experts, double e_start, double e_max);

// L(N, D, E). Throws std::invalid_argument for non-positive N, D or E < 1.
double predict_loss(const Coefficients& k, double n_act, double tokens, double experts);

// "paper", or the path of a coefficients file (fit.toml, or a folder holding one). Throws InputError
// for a missing file, a key that is absent or not a number, or E_max ≤ E_start. A dense file
// (form = "dense") needs neither e_start nor e_max.
Coefficients load_coefficients(const std::string& spec);

// fit.toml's text: every coefficient at full precision, readable back by load_coefficients (a dense
// law's without e_start and e_max, which it does not have).
std::string coefficients_toml(const Coefficients& k);

}  // namespace moesweep::analysis
