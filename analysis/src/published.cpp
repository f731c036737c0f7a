#include "moesweep/analysis/published.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moesweep::analysis {
namespace {

constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
constexpr double kMatchingMedianLogError = 0.02;

// L = E + A/N^α + B/D^β in this project's form: a = A, alpha = −α, b = B, beta = −β, c = E.
Coefficients chinchilla_form(double a, double alpha, double b, double beta, double e) {
  Coefficients k;
  k.a = a;
  k.alpha = -alpha;
  k.b = b;
  k.beta = -beta;
  k.c = e;
  k.e_start = kDenseEStart;
  k.e_max = kDenseEMax;
  k.form = LawForm::dense;
  return k;
}

}  // namespace

const std::vector<PublishedFit>& published_fits() {
  static const std::vector<PublishedFit> fits = {
      {"ludziejewski2025",
       "Ludziejewski et al. 2025 (ICML), the published joint fit; its start was chosen by train and "
       "held-out error together",
       paper_coefficients(),
       {}},
      {"epoch2024-huber",
       "Besiroglu et al. 2024 (Epoch AI), Huber refit (delta 1e-3, summed, L-BFGS) of the 240 points "
       "extracted from Hoffmann et al. 2022",
       chinchilla_form(477.84, 0.347313, 2143.9, 0.367183, 1.81724),
       {}},
      {"epoch2024",
       "Besiroglu et al. 2024 (Epoch AI), headline fit of the same 240 points, with bootstrap standard "
       "errors",
       chinchilla_form(482.01, 0.3478, 2085.43, 0.3658, 1.8172),
       // kCoefficientNames order: a, alpha, gamma, delta, b, beta, zeta, omega, c, e_start, e_max.
       {124.5, 0.015, kNone, kNone, 1293, 0.021, kNone, kNone, 0.026, kNone, kNone}},
      {"hoffmann2022",
       "Hoffmann et al. 2022 (Chinchilla), Approach 3 on their full data",
       chinchilla_form(406.4, 0.34, 410.7, 0.28, 1.69),
       {}},
  };
  return fits;
}

std::vector<const PublishedFit*> matching_published_fits(const std::vector<Run>& runs,
                                                         const std::vector<std::size_t>& which) {
  std::vector<const PublishedFit*> matches;
  if (which.empty()) return matches;
  const bool dense =
      std::all_of(which.begin(), which.end(), [&](std::size_t i) { return runs[i].experts == 1; });
  for (const PublishedFit& fit : published_fits()) {
    if ((fit.coefficients.form == LawForm::dense) != dense) continue;
    std::vector<double> errors;
    for (const std::size_t i : which) {
      const Run& r = runs[i];
      errors.push_back(
          std::abs(std::log(predict_loss(fit.coefficients, r.n_act, r.tokens, r.experts) / r.loss)));
    }
    std::nth_element(errors.begin(), errors.begin() + static_cast<std::ptrdiff_t>(errors.size() / 2),
                     errors.end());
    if (errors[errors.size() / 2] <= kMatchingMedianLogError) matches.push_back(&fit);
  }
  return matches;
}

}  // namespace moesweep::analysis
