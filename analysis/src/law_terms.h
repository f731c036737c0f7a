#pragma once
// The law as templates over the scalar type, so the fit's Ceres autodiff (Jets) and plain doubles
// share one formula. Internal to the analysis library.
#include <cmath>

namespace moesweep::analysis::detail {

// The authors' code uses E − 0.99 rather than E − 1 (DESIGN.md); the check values depend on it.
inline constexpr double kExpertOffset = 0.99;

// ln Ê from E_start and 1/E_max. Requires E_start > 0 and 0 ≤ 1/E_max < 1/E_start, so that
// (1/E_start − 1/E_max)^−1 is positive and finite; 1/E_max = 0 is the no-saturation limit E_max → ∞.
template <typename T>
T log_transformed_experts_inv(double experts, const T& e_start, const T& inverse_e_max) {
  using std::log;
  const T saturation_shift = T(1.0) / (T(1.0) / e_start - inverse_e_max);
  return -log(T(1.0) / (T(experts - kExpertOffset) + saturation_shift) + inverse_e_max);
}

// ln Ê. Requires 0 < e_start < e_max.
template <typename T>
T log_transformed_experts(double experts, const T& e_start, const T& e_max) {
  return log_transformed_experts_inv(experts, e_start, T(1.0) / e_max);
}

// ln L̂ as a log-sum-exp of the three terms, stable however large or small each term is.
// The scales enter as logarithms: ln a, ln b, ln c.
template <typename T>
T log_predicted_loss(const T& log_a, const T& alpha, const T& gamma, const T& delta, const T& log_b,
                     const T& beta, const T& zeta, const T& omega, const T& log_c, const T& log_ehat,
                     double log_n, double log_d) {
  using std::exp;
  using std::log;
  const T params_term = log_a + delta * log_ehat + (alpha + gamma * log_ehat) * log_n;
  const T data_term = log_b + omega * log_ehat + (beta + zeta * log_ehat) * log_d;
  T largest = params_term;
  if (data_term > largest) largest = data_term;
  if (log_c > largest) largest = log_c;
  return largest + log(exp(params_term - largest) + exp(data_term - largest) + exp(log_c - largest));
}

}  // namespace moesweep::analysis::detail
