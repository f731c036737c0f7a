// Fit benchmark: the paper-sized problem (280 runs, the full 3^9 start grid, 200 bootstrap refits)
// on every hardware thread. Prints figures only; a time is never pass/fail.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "../tests/analysis/synthetic_runs.h"
#include "moesweep/analysis/fit.h"

namespace {

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

}  // namespace

int main() {
  using namespace moesweep::analysis;
  const Coefficients truth = paper_coefficients();
  const std::vector<Run> runs = testing::synthetic_runs(truth, 0.005, 1);
  FitOptions options;  // defaults: 3^9 starts, 200 bootstraps, lowest-loss:10 held out
  std::printf("machine: %s, %u hardware threads\n", cpu_model().c_str(), std::thread::hardware_concurrency());
  std::printf("problem: %zu runs (noise 0.005 in ln L), %zu starts, %zu bootstrap fits\n", runs.size(),
              options.starts, options.bootstrap);
  std::fflush(stdout);
  const FitResult fit = fit_law(runs, options);
  std::printf(
      "fit: %.2f s total; %zu grid starts screened, %zu/%zu polished starts converged; %zu/%zu bootstrap "
      "fits "
      "converged\n",
      fit.seconds, fit.starts, fit.converged_starts, fit.polished, fit.bootstrap_converged,
      fit.bootstrap_fits);
  std::printf("train RMSE(ln L) %.5f, held-out RMSE(ln L) %.5f, held-out max |L - L^| %.5f\n",
              fit.train.rmse_log, fit.heldout_errors.rmse_log, fit.heldout_errors.max_abs_error);
  const auto fitted = to_array(fit.coefficients), true_values = to_array(truth);
  for (std::size_t i = 0; i < kCoefficientCount; ++i)
    std::printf("  %-8s true %12.6g  fitted %12.6g  90%% [%12.6g, %12.6g]\n",
                std::string(kCoefficientNames[i]).c_str(), true_values[i], fitted[i],
                fit.coefficient_intervals[i].low, fit.coefficient_intervals[i].high);
  std::printf("compute-optimal at %.0e FLOPs (true law | fit | bootstrap 90%%):\n", options.headline_flops);
  const std::vector<Optimum> true_optima = compute_optimal(truth, Budget{options.headline_flops});
  for (std::size_t e = 0; e < fit.headline.size(); ++e) {
    const HeadlineInterval& h = fit.headline[e];
    std::printf("  E=%-2d N_act %6.2fB | %6.2fB [%6.2fB, %6.2fB]   loss %.4f | %.4f [%.4f, %.4f]\n",
                h.point.experts, true_optima[e].n_act / 1e9, h.point.n_act / 1e9, h.n_act.low / 1e9,
                h.n_act.high / 1e9, true_optima[e].loss, h.point.loss, h.loss.low, h.loss.high);
  }
  return 0;
}
