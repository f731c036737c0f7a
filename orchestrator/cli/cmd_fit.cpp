// moesweep fit (--csv FILE | --db FILE [--sweep NAME]) [--out DIR] [--heldout lowest-loss:10] [--json] ...:
// fit the joint law to finished runs, choose its training domain on validation runs carved from the
// training runs, check it on held-out runs, write fit.toml, report.md and plots.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>

#include "commands.h"
#include "moesweep/analysis/fit.h"
#include "moesweep/analysis/report.h"
#include "moesweep/input_error.h"

namespace moesweep::cli {
namespace {

struct FitCommandOptions {
  std::string csv;
  std::string db;
  std::string sweep;
  std::string out;
  std::string heldout = "lowest-loss:10";
  std::string validation = "auto";
  std::string min_tokens_per_param = "auto";
  std::string exclude;
  std::string objective = "huber";
  analysis::FitOptions fit;
  bool json = false;
};

// Progress on stderr: redrawn in place on a terminal, one line per finished stage otherwise.
void show_progress(std::string_view stage, std::size_t done, std::size_t total) {
  static const bool terminal = isatty(STDERR_FILENO) != 0;
  if (terminal) {
    std::fprintf(stderr, "\rfit: %-13.*s %zu/%zu%s", static_cast<int>(stage.size()), stage.data(), done,
                 total, done == total ? "\n" : "");
  } else if (done == total) {
    std::fprintf(stderr, "fit: %.*s %zu/%zu done\n", static_cast<int>(stage.size()), stage.data(), done,
                 total);
  }
}

void print_summary(const analysis::FitResult& fit, const std::string& out) {
  const bool dense = fit.coefficients.form == analysis::LawForm::dense;
  std::printf(
      "%s fit, %zu train runs (%zu fitted), %zu held out; %zu/%zu polished starts converged; %.1f s\n",
      dense ? "Dense-only (Chinchilla form: no expert terms)" : "Joint", fit.training.size(),
      fit.fitted_runs.size(), fit.heldout_errors.n, fit.converged_starts, fit.polished, fit.seconds);
  if (!fit.excluded.empty()) std::printf("excluded: %zu runs\n", fit.excluded.size());
  std::printf("training domain: D/N >= %g: %s\n", fit.domain.min_tokens_per_param, fit.domain.reason.c_str());
  for (const std::string& warning : fit.warnings) std::printf("warning: %s\n", warning.c_str());
  const auto values = analysis::to_array(fit.coefficients);
  for (std::size_t i = 0; i < analysis::kCoefficientCount; ++i) {
    const std::string name(analysis::kCoefficientNames[i]);
    if (dense && !fit.fitted[i]) continue;  // γ = δ = ζ = ω = 0 and no E_start, E_max: said above
    std::printf("  %-8s %12.6g", name.c_str(), values[i]);
    if (!fit.fitted[i])
      std::printf("   held (not identified)");
    else if (!fit.coefficient_intervals.empty())
      std::printf("   90%% [%.4g, %.4g]%s", fit.coefficient_intervals[i].low,
                  fit.coefficient_intervals[i].high, fit.intervals_reliable ? "" : " (unreliable)");
    std::printf("\n");
  }
  for (const std::string& name : analysis::coefficients_at_bounds(fit.coefficients))
    std::printf("note: %s is at its bound (%s): the runs do not identify it; see report.md\n", name.c_str(),
                name == "e_max" ? "E_max <= 1e6: no saturation of the benefit of experts in these runs"
                                : "E_start >= 1");
  if (fit.bootstrap_fits > 0)
    std::printf("bootstrap: %zu/%zu refits converged (%zu underdetermined resamples, %zu failed)\n",
                fit.bootstrap_converged, fit.bootstrap_fits, fit.bootstrap_underdetermined,
                fit.bootstrap_failed);
  std::printf("train:    RMSE(ln L) %.5f, max |L - L^| %.4f (n = %zu fitted)\n", fit.train.rmse_log,
              fit.train.max_abs_error, fit.train.n);
  if (fit.below_floor_errors.n > 0)
    std::printf("below floor (not fitted): RMSE(ln L) %.5f, max |L - L^| %.4f (n = %zu)\n",
                fit.below_floor_errors.rmse_log, fit.below_floor_errors.max_abs_error,
                fit.below_floor_errors.n);
  if (fit.heldout_errors.n > 0)
    std::printf("held out: RMSE(ln L) %.5f, max |L - L^| %.4f (n = %zu)\n", fit.heldout_errors.rmse_log,
                fit.heldout_errors.max_abs_error, fit.heldout_errors.n);
  if (!out.empty()) std::printf("wrote %s/fit.toml and %s/report.md\n", out.c_str(), out.c_str());
}

void run_fit(FitCommandOptions& opt) {
  if (opt.csv.empty() == opt.db.empty()) throw InputError("fit: give exactly one of --csv FILE or --db FILE");
  if (!opt.sweep.empty() && opt.db.empty()) throw InputError::at("--sweep", 0, "", "only applies to --db");
  opt.fit.heldout = analysis::parse_heldout_rule(opt.heldout);
  if (opt.validation != "auto")
    opt.fit.validation = analysis::parse_heldout_rule(opt.validation, "--validation");
  if (!opt.exclude.empty()) opt.fit.exclude = analysis::parse_exclude_rule(opt.exclude);
  opt.fit.objective = analysis::parse_objective(opt.objective);
  if (opt.min_tokens_per_param != "auto") {
    char* end = nullptr;
    const double floor = std::strtod(opt.min_tokens_per_param.c_str(), &end);
    if (opt.min_tokens_per_param.empty() || *end != '\0' || !(floor >= 0) || !std::isfinite(floor))
      throw InputError::at("--min-tokens-per-param", 0, "",
                           "'" + opt.min_tokens_per_param + "': use auto or a number >= 0");
    opt.fit.min_tokens_per_param = floor;
  }
  const std::string source = opt.csv.empty() ? opt.db : opt.csv;
  const std::vector<analysis::Run> runs =
      opt.csv.empty()
          ? analysis::read_runs_db(opt.db, opt.sweep.empty() ? std::nullopt : std::optional(opt.sweep))
          : analysis::read_runs_csv(opt.csv);
  opt.fit.progress = show_progress;
  analysis::FitResult fit;
  try {
    fit = analysis::fit_law(runs, opt.fit);
  } catch (const InputError& e) {
    throw InputError(source + ": " + e.what());
  }
  // Only a converged fit reaches this point, so a report on disk is always a real one.
  if (!opt.out.empty())
    for (const std::string& warning : analysis::write_fit_report(opt.out, fit, runs, opt.fit, source))
      std::fprintf(stderr, "moesweep: warning: %s\n", warning.c_str());
  if (opt.json)
    std::cout << analysis::fit_json(fit, runs, opt.fit, source).dump(2) << "\n";
  else
    print_summary(fit, opt.out);
}

}  // namespace

void add_fit(CLI::App& app) {
  auto* cmd = app.add_subcommand("fit", kFitDescription);
  auto opt = std::make_shared<FitCommandOptions>();
  cmd->add_option("--csv", opt->csv, "Runs as CSV with the header n_act,tokens,experts,loss");
  cmd->add_option("--db", opt->db, "Sweep database: fit its finished runs");
  cmd->add_option("--sweep", opt->sweep, "With --db: only this sweep's runs");
  cmd->add_option("--out", opt->out, "Write fit.toml, report.md and the plots here");
  cmd->add_option("--heldout", opt->heldout, "Held-out runs: lowest-loss:K, top-compute:K or largest-n:K")
      ->capture_default_str();
  cmd->add_option("--validation", opt->validation,
                  "Validation runs carved from the training runs to choose the training domain: a rule like "
                  "--heldout's, or auto (the --heldout rule again: its next K runs)")
      ->capture_default_str();
  cmd->add_option(
         "--min-tokens-per-param", opt->min_tokens_per_param,
         "Fit only training runs with D/N at or above this floor; auto chooses it by validation among "
         "0,1,2,3,5,7,10,15,20")
      ->capture_default_str();
  cmd->add_option("--exclude", opt->exclude,
                  "Drop runs before anything else: highest-loss:K (Epoch's rule for Hoffmann's points: 5)");
  cmd->add_option(
         "--objective", opt->objective,
         "huber (sum of Huber losses on ln L) or paper (the authors' weighted, regularised objective)")
      ->capture_default_str();
  cmd->add_option("--huber-delta", opt->fit.huber_delta, "Huber loss threshold on ln L")
      ->capture_default_str();
  cmd->add_option("--starts", opt->fit.starts,
                  "Grid starting points (all 3^9 = 19683 by default; fewer = a spread subset)")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--bootstrap", opt->fit.bootstrap, "Bootstrap refits for the 90% intervals (0 = none)")
      ->capture_default_str();
  cmd->add_option("--bootstrap-starts", opt->fit.bootstrap_starts,
                  "Starts per bootstrap refit: the chosen fit, then the next-best distinct solutions")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--seed", opt->fit.seed, "Bootstrap resampling seed")->capture_default_str();
  cmd->add_option("--max-iterations", opt->fit.max_iterations,
                  "Solver iterations per solve (start or bootstrap refit); a solve that needs more has not "
                  "converged, and when no start converges the fit exits 1")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--threads", opt->fit.threads, "Threads (default: every hardware thread)");
  cmd->add_option("--headline-flops", opt->fit.headline_flops,
                  "Budget of the compute-optimal answers in the report")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_flag("--json", opt->json, "Print the fit as JSON on stdout");
  cmd->footer(
      "The fit keeps E_start >= 1 (below one expert's worth Clark's transform has no meaning) and\n"
      "E_max <= 1e6 (a fit at that bound means the runs show no saturation: E_max is not identified);\n"
      "report.md, the summary and --json (\"at_bound\") say when a coefficient ends on a bound.\n"
      "Training domain: runs with D/N below a floor are not fitted; by default the floor is the lowest\n"
      "whose fit predicts validation runs carved from the training runs by the --heldout rule (its next K\n"
      "runs) within 10% of the best floor's RMSE. The held-out runs never influence the fit. With fewer\n"
      "than 3 expert counts E_start and E_max are held at the published values and flagged.\n"
      "Exit status: 0 fitted; 1 no start converged (nothing written); 2 bad input.");
  cmd->callback([opt] { run_fit(*opt); });
}

}  // namespace moesweep::cli
