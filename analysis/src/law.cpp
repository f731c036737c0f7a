#include "moesweep/analysis/law.h"

#include <toml++/toml.h>

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "law_terms.h"
#include "moesweep/input_error.h"

namespace moesweep::analysis {

std::array<double, kCoefficientCount> to_array(const Coefficients& k) {
  return {k.a, k.alpha, k.gamma, k.delta, k.b, k.beta, k.zeta, k.omega, k.c, k.e_start, k.e_max};
}

Coefficients from_array(const std::array<double, kCoefficientCount>& v, LawForm form) {
  return Coefficients{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], form};
}

Coefficients paper_coefficients() {
  return Coefficients{35.907456, -0.18893, 0.009798, -0.228513, 35.979302, -0.177532,
                      -0.02585,  0.552916, 1.36374,  2.0732,    290.45,    LawForm::joint};
}

double transformed_experts(double experts, double e_start, double e_max) {
  return std::exp(detail::log_transformed_experts(experts, e_start, e_max));
}

double predict_loss(const Coefficients& k, double n_act, double tokens, double experts) {
  if (!(n_act > 0) || !(tokens > 0) || !(experts >= 1))
    throw std::invalid_argument("the law needs N > 0, D > 0 and E >= 1");
  const double log_ehat = detail::log_transformed_experts(experts, k.e_start, k.e_max);
  // Each power term as the exp of its logarithm, as the fit computes it: the factors a·Ê^δ and
  // N^(α + γ·ln Ê) alone can overflow and underflow (∞·0 = NaN) where their product is ordinary.
  const double params_term =
      std::exp(std::log(k.a) + k.delta * log_ehat + (k.alpha + k.gamma * log_ehat) * std::log(n_act));
  const double data_term =
      std::exp(std::log(k.b) + k.omega * log_ehat + (k.beta + k.zeta * log_ehat) * std::log(tokens));
  return params_term + data_term + k.c;
}

Coefficients load_coefficients(const std::string& spec) {
  if (spec == "paper") return paper_coefficients();
  std::filesystem::path path = spec;
  if (std::filesystem::is_directory(path)) path /= "fit.toml";
  if (!std::filesystem::is_regular_file(path))
    throw InputError::at(path.string(), 0, "", "no such coefficients file (give 'paper' or a fit.toml)");

  toml::table table;
  try {
    table = toml::parse_file(path.string());
  } catch (const toml::parse_error& e) {
    throw InputError::at(path.string(), static_cast<long>(e.source().begin.line), "",
                         std::string(e.description()));
  }
  LawForm form = LawForm::joint;
  if (const toml::node* node = table.get("form")) {
    const std::optional<std::string> text = node->value<std::string>();
    const long line = static_cast<long>(node->source().begin.line);
    if (text == "dense")
      form = LawForm::dense;
    else if (text != "joint")
      throw InputError::at(path.string(), line, "form", "must be \"joint\" or \"dense\"");
  }
  std::array<double, kCoefficientCount> values{};
  for (std::size_t i = 0; i < kCoefficientCount; ++i) {
    const std::string key(kCoefficientNames[i]);
    const toml::node* node = table.get(key);
    if (node == nullptr && form == LawForm::dense && (key == "e_start" || key == "e_max")) {
      values[i] = key == "e_start" ? kDenseEStart : kDenseEMax;  // a dense law has no Ê
      continue;
    }
    if (node == nullptr) throw InputError::at(path.string(), 0, key, "missing coefficient");
    const std::optional<double> value = node->value<double>();  // accepts integers too
    const long line = static_cast<long>(node->source().begin.line);
    if (!value || !std::isfinite(*value))
      throw InputError::at(path.string(), line, key, "not a finite number");
    values[i] = *value;
  }
  Coefficients k = from_array(values, form);
  if (!(k.e_start > 0) || !(k.e_max > k.e_start))
    throw InputError::at(path.string(), 0, "e_max", "needs 0 < e_start < e_max");
  if (!(k.a > 0) || !(k.b > 0)) throw InputError::at(path.string(), 0, "a", "a and b must be positive");
  return k;
}

std::string coefficients_toml(const Coefficients& k) {
  std::ostringstream out;
  out << "# Joint MoE scaling law (Ludziejewski et al., ICML 2025), DESIGN.md's sign convention:\n"
      << "#   L(N,D,E) = a*Ehat^delta*N^(alpha + gamma*ln Ehat) + b*Ehat^omega*D^(beta + zeta*ln Ehat) + c\n"
      << "#   1/Ehat = 1/(E - 0.99 + (1/e_start - 1/e_max)^-1) + 1/e_max\n";
  if (k.form == LawForm::dense)
    out << "# Fitted on dense (E = 1) runs only: the Chinchilla form, gamma = delta = zeta = omega = 0,\n"
        << "# and the law has no e_start or e_max.\n";
  out << "form = \"" << (k.form == LawForm::dense ? "dense" : "joint") << "\"\n";
  const auto values = to_array(k);
  out << std::setprecision(17);
  for (std::size_t i = 0; i < kCoefficientCount; ++i) {
    const bool transform = kCoefficientNames[i] == "e_start" || kCoefficientNames[i] == "e_max";
    if (k.form == LawForm::dense && transform) continue;
    out << kCoefficientNames[i] << " = " << values[i] << "\n";
  }
  return out.str();
}

}  // namespace moesweep::analysis
