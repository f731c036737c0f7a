#pragma once
// Published fits of the same laws to public run tables (../shared/data/README.md), so a fit of such a
// table can be set beside the authors' own: coefficients, fit quality on the same split, predictions.
#include <optional>
#include <string>
#include <vector>

#include "moesweep/analysis/law.h"
#include "moesweep/analysis/runs.h"

namespace moesweep::analysis {

struct PublishedFit {
  std::string key;            // "ludziejewski2025", "epoch2024-huber", "epoch2024", "hoffmann2022"
  std::string citation;       // who fitted what, and how
  Coefficients coefficients;  // DESIGN.md's sign convention (α, β negative); dense for the Chinchilla form
  // Standard errors the authors report, kCoefficientNames order (NaN where none); empty when none.
  std::vector<double> standard_errors;
};

// Every published fit moesweep knows:
//   ludziejewski2025: the joint law's published coefficients (paper_coefficients(), DESIGN.md);
//   epoch2024-huber: Besiroglu et al. 2024's Huber refit (δ = 1e-3, summed; L-BFGS from Hoffmann's
//     grid) of the 240 points they extracted from Hoffmann et al. 2022's Figure 4;
//   epoch2024: their headline fit of the same points, with bootstrap standard errors;
//   hoffmann2022: Hoffmann et al. 2022's own Approach 3 fit (on their full, unpublished data).
const std::vector<PublishedFit>& published_fits();

// The published fits that describe these runs: the same form (a dense law for dense runs, the joint
// law for runs with E > 1), and a median |ln L̂ − ln L| over `which` of at most 0.02. A plain median, so
// a few outliers (Hoffmann's five high-loss points) do not hide a match.
std::vector<const PublishedFit*> matching_published_fits(const std::vector<Run>& runs,
                                                         const std::vector<std::size_t>& which);

}  // namespace moesweep::analysis
