// Fit benchmark: the paper-sized problem (280 runs, the full 3^9 start grid, 200 bootstrap refits)
// on every hardware thread. Prints figures only; a time is never pass/fail.
//
// fit_bench SHARED_DATA (the ../shared/data folder) instead prints the fitting approaches on the real
// tables: for each held-out split of the paper's 270 runs, every approach's training domain, training
// and validation error and held-out error beside the published fit's; then Hoffmann et al.'s points
// as Epoch AI fitted them, coefficients and bootstrap standard errors beside theirs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "../tests/analysis/synthetic_runs.h"
#include "moesweep/analysis/fit.h"
#include "moesweep/analysis/published.h"

namespace {

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

int real_tables(const std::string& shared_data) {
  using namespace moesweep::analysis;
  const std::vector<Run> runs = read_runs_csv(shared_data + "/ludziejewski2025/runs.csv");
  struct Approach {
    const char* name;
    Objective objective;
    std::optional<double> floor;  // nullopt = by forward validation
    double margin;
  };
  const Approach approaches[] = {
      {"huber, every training run (the old default)", Objective::huber, 0.0, kDomainValidationMargin},
      {"huber, D/N floor by validation (default)", Objective::huber, std::nullopt, kDomainValidationMargin},
      {"huber, D/N floor by validation, margin 0", Objective::huber, std::nullopt, 0.0},
      {"paper objective, every training run", Objective::paper, 0.0, kDomainValidationMargin},
      {"paper objective, D/N floor by validation", Objective::paper, std::nullopt, kDomainValidationMargin},
  };
  std::printf("The paper's 270 runs (%s/ludziejewski2025/runs.csv); RMSE of ln L, max |L - L^|\n",
              shared_data.c_str());
  for (const char* split : {"lowest-loss:10", "top-compute:10", "largest-n:10"}) {
    std::printf("\nheld out: %s\n  %-46s %6s %6s %9s %17s %17s\n", split, "approach", "D/N>=", "fitted",
                "train", "validation", "held out");
    for (const Approach& a : approaches) {
      FitOptions options;
      options.heldout = parse_heldout_rule(split);
      options.objective = a.objective;
      options.min_tokens_per_param = a.floor;
      options.domain_choice.margin = a.margin;
      options.bootstrap = 0;
      const FitResult fit = fit_law(runs, options);
      std::string validation = "-";
      for (const FloorCandidate& c : fit.domain.candidates)
        if (fit.domain.by_validation && c.min_tokens_per_param == fit.domain.min_tokens_per_param) {
          char text[64];
          std::snprintf(text, sizeof text, "%.5f / %.4f", c.validation.rmse_log, c.validation.max_abs_error);
          validation = text;
        }
      std::printf("  %-46s %6g %6zu %9.5f %17s %9.5f / %.4f\n", a.name, fit.domain.min_tokens_per_param,
                  fit.fitted_runs.size(), fit.train.rmse_log, validation.c_str(), fit.heldout_errors.rmse_log,
                  fit.heldout_errors.max_abs_error);
      std::fflush(stdout);
    }
    const std::vector<std::size_t> heldout = select_heldout(runs, parse_heldout_rule(split));
    std::vector<std::size_t> training;
    for (std::size_t i = 0; i < runs.size(); ++i)
      if (std::find(heldout.begin(), heldout.end(), i) == heldout.end()) training.push_back(i);
    const ErrorSummary t = error_summary(paper_coefficients(), runs, training),
                       h = error_summary(paper_coefficients(), runs, heldout);
    std::printf("  %-46s %6s %6zu %9.5f %17s %9.5f / %.4f\n",
                "published fit (start chosen with held-out runs)", "-", training.size(), t.rmse_log, "-",
                h.rmse_log, h.max_abs_error);
  }

  const std::vector<Run> chinchilla = read_runs_csv(shared_data + "/chinchilla-epoch/runs.csv");
  FitOptions options;
  options.exclude.highest_loss = 5;
  options.heldout.count = 0;
  options.huber_delta = 1e-3;
  const FitResult fit = fit_law(chinchilla, options);
  const PublishedFit* huber = nullptr;
  const PublishedFit* headline = nullptr;
  for (const PublishedFit& p : published_fits()) {
    if (p.key == "epoch2024-huber") huber = &p;
    if (p.key == "epoch2024") headline = &p;
  }
  std::printf(
      "\nHoffmann et al.'s points (Epoch's extraction, 5 highest-loss excluded, Huber 1e-3, %zu runs fitted, "
      "%zu/%zu bootstrap refits converged)\n  %-6s %12s %12s %25s %10s %10s\n",
      fit.fitted_runs.size(), fit.bootstrap_converged, fit.bootstrap_fits, "", "this fit", "Epoch Huber",
      "90% interval", "SE", "Epoch SE");
  const auto ours = to_array(fit.coefficients), theirs = to_array(huber->coefficients);
  for (const std::size_t i : {0u, 1u, 4u, 5u, 8u})
    std::printf("  %-6s %12.6g %12.6g   [%9.4g, %9.4g] %10.3g %10.3g\n",
                std::string(kCoefficientNames[i]).c_str(), ours[i], theirs[i],
                fit.coefficient_intervals[i].low, fit.coefficient_intervals[i].high, fit.coefficient_se[i],
                headline->standard_errors[i]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moesweep::analysis;
  if (argc > 1) return real_tables(argv[1]);
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
