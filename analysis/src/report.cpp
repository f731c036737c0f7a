#include "moesweep/analysis/report.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "moesweep/analysis/published.h"

extern char** environ;

namespace moesweep::analysis {
namespace {

nlohmann::json errors_json(const ErrorSummary& e) {
  if (e.n == 0) return {{"rmse_log", nullptr}, {"max_abs_error", nullptr}, {"n", 0}};
  return {{"rmse_log", e.rmse_log}, {"max_abs_error", e.max_abs_error}, {"n", e.n}};
}

nlohmann::json interval_json(const Interval& i) {
  if (std::isnan(i.low)) return nullptr;
  return nlohmann::json::array({i.low, i.high});
}

std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

// 18836490894 → "18.84B".
std::string count(double v) {
  const char* suffix[] = {"", "K", "M", "B", "T"};
  int i = 0;
  while (std::fabs(v) >= 1000 && i < 4) v /= 1000, ++i;
  return format("%.2f", v) + suffix[i];
}

std::string interval_text(const Interval& i, const char* pattern) {
  if (std::isnan(i.low)) return "–";
  return "[" + format(pattern, i.low) + ", " + format(pattern, i.high) + "]";
}

std::string count_interval(const Interval& i) {
  if (std::isnan(i.low)) return "–";
  return "[" + count(i.low) + ", " + count(i.high) + "]";
}

std::vector<double> distinct(const std::vector<Run>& runs, double Run::*field) {
  std::set<double> values;
  for (const Run& r : runs) values.insert(r.*field);
  return {values.begin(), values.end()};
}

// Which runs a plot shows as what: fitted, in the training set but below the floor (not fitted), held
// out. Excluded runs are not plotted.
struct RunSets {
  std::vector<std::size_t> fitted, below_floor, heldout;
};

RunSets run_sets(const FitResult& fit) { return RunSets{fit.fitted_runs, fit.below_floor, fit.heldout}; }

// Writes one "observed predicted" block per set of runs, each ended by two blank lines (a gnuplot index).
void write_prediction_blocks(std::ofstream& out, const Coefficients& k, const std::vector<Run>& runs,
                             const RunSets& sets) {
  const std::pair<const char*, const std::vector<std::size_t>*> blocks[] = {
      {"fitted", &sets.fitted},
      {"below the D/N floor (not fitted)", &sets.below_floor},
      {"held out", &sets.heldout}};
  for (const auto& [name, which] : blocks) {
    out << "# " << name << ": observed predicted\n";
    for (const std::size_t i : *which)
      out << runs[i].loss << " " << predict_loss(k, runs[i].n_act, runs[i].tokens, runs[i].experts) << "\n";
    if (which->empty()) out << "NaN NaN\n";  // gnuplot refuses an empty index
    out << "\n\n";
  }
}

// Writes the data files and the gnuplot script for the plots; returns the script's name.
std::string write_plot_files(const std::filesystem::path& dir, const FitResult& fit,
                             const std::vector<Run>& runs,
                             const std::vector<const PublishedFit*>& published) {
  const Coefficients& k = fit.coefficients;
  const RunSets sets = run_sets(fit);
  std::vector<Run> plotted;  // every run but the excluded ones, for the per-E panels
  {
    std::vector<std::size_t> all = fit.training;
    all.insert(all.end(), fit.heldout.begin(), fit.heldout.end());
    std::sort(all.begin(), all.end());
    for (const std::size_t i : all) plotted.push_back(runs[i]);
  }
  const std::filesystem::path data = dir / "plot-data";
  std::filesystem::create_directories(data);
  std::ofstream script(dir / "plots.gp");
  script << "# Regenerate the plots from this folder: gnuplot plots.gp\n"
         << "set terminal png size 1000,750\nset termoption noenhanced\nset grid\nset key outside right\n";

  // 1. Predicted against observed: fitted, below the floor, held out.
  {
    std::ofstream out(data / "predicted_vs_observed.dat");
    write_prediction_blocks(out, k, runs, sets);
    script
        << "set output 'predicted_vs_observed.png'\nset title 'Predicted vs observed final loss'\n"
        << "set xlabel 'observed L'\nset ylabel 'predicted L'\nunset logscale\n"
        << "plot x title 'L = L^' lc rgb 'gray', 'plot-data/predicted_vs_observed.dat' index 0 with "
           "points pt 7 ps 0.8 title 'fitted', '' index 1 with points pt 6 ps 0.8 lc rgb 'dark-grey' title "
           "'below the D/N floor (not fitted)', '' index 2 with points pt 5 ps 1.3 lc rgb 'red' title 'held "
           "out'\n";
  }
  // 1b. The same for each published fit of these runs, beside ours.
  if (!published.empty()) {
    std::ofstream out(data / "published_vs_observed.dat");
    const RunSets training_and_heldout{fit.training, {}, fit.heldout};
    write_prediction_blocks(out, k, runs, training_and_heldout);
    for (const PublishedFit* p : published)
      write_prediction_blocks(out, p->coefficients, runs, training_and_heldout);
    script << "set output 'published_vs_observed.png'\nset title 'Predicted vs observed: this fit and the "
              "published ones'\n"
           << "set xlabel 'observed L'\nset ylabel 'predicted L'\nunset logscale\n"
           << "plot x title 'L = L^' lc rgb 'gray'";
    for (std::size_t law = published.size() + 1; law-- > 0;) {  // this fit last, on top
      const std::string name = law == 0 ? "this fit" : published[law - 1]->key;
      script << ", 'plot-data/published_vs_observed.dat' index " << 3 * law << " with points pt " << 6 + law
             << " ps 0.7 lc " << law + 1 << " title '" << name << ": training runs', '' index " << 3 * law + 2
             << " with points pt " << 4 + law << " ps 1.4 lc " << law + 1 << " title '" << name
             << ": held out'";
    }
    script << "\n";
  }

  // 2. Loss against tokens per (N_act, E), one panel per E, with the fitted curves.
  const std::vector<double> experts = distinct(plotted, &Run::experts);
  const std::vector<double> sizes = distinct(plotted, &Run::n_act);
  const double min_tokens = distinct(plotted, &Run::tokens).front(),
               max_tokens = distinct(plotted, &Run::tokens).back();
  {
    const auto columns = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(experts.size()))));
    const auto rows = static_cast<int>((experts.size() + static_cast<std::size_t>(columns) - 1) /
                                       static_cast<std::size_t>(columns));
    script << "set output 'loss_vs_tokens.png'\nset terminal png size " << 500 * columns << "," << 400 * rows
           << "\nset termoption noenhanced\n"
           << "set multiplot layout " << rows << "," << columns
           << " title 'Loss vs tokens per (N_act, E): runs and fitted law'\n"
           << "set logscale x\nset format x '1e%L'\nset xlabel 'tokens D'\nset ylabel 'L'\nset key inside "
              "top right font ',8'\n";
    for (std::size_t e = 0; e < experts.size(); ++e) {
      const std::string name = "loss_vs_tokens_E" + std::to_string(e) + ".dat";
      std::ofstream out(data / name);
      script << "set title 'E = " << experts[e] << "'\n";
      std::size_t blocks = 0;
      for (const double n : sizes) {
        bool any = false;
        for (const Run& r : plotted) any = any || (r.experts == experts[e] && r.n_act == n);
        if (!any) continue;
        out << "# N_act = " << n << ": observed runs, then the fitted curve\n";
        for (const Run& r : plotted)
          if (r.experts == experts[e] && r.n_act == n) out << r.tokens << " " << r.loss << "\n";
        out << "\n\n";
        for (int j = 0; j <= 60; ++j) {
          const double d = min_tokens * std::pow(max_tokens / min_tokens, j / 60.0);
          out << d << " " << predict_loss(k, n, d, experts[e]) << "\n";
        }
        out << "\n\n";
        script << (blocks == 0 ? "plot " : ", ") << "'plot-data/" << name << "' index " << 2 * blocks
               << " with points pt 7 lc " << blocks + 1 << " title 'N=" << count(n) << "', '' index "
               << 2 * blocks + 1 << " with lines lc " << blocks + 1 << " notitle";
        ++blocks;
      }
      script << "\n";
    }
    script << "unset multiplot\nset terminal png size 1000,750\nset key outside right font ''\n";
  }

  // 3. IsoFLOP profiles: loss against N_act at fixed 6·N·D, one panel per E.
  {
    double min_flops = INFINITY, max_flops = 0;
    for (const Run& r : plotted)
      min_flops = std::min(min_flops, 6 * r.n_act * r.tokens),
      max_flops = std::max(max_flops, 6 * r.n_act * r.tokens);
    // Up to four of the data's expert counts, spread from the smallest to the largest.
    std::vector<double> panels;
    for (std::size_t p = 0; p < std::min<std::size_t>(4, experts.size()); ++p)
      panels.push_back(experts[p * (experts.size() - 1) /
                               std::max<std::size_t>(1, std::min<std::size_t>(4, experts.size()) - 1)]);
    script << "set output 'isoflop_profiles.png'\nset terminal png size 1000,800\nset termoption noenhanced\n"
           << "set multiplot layout 2,2 title 'IsoFLOP profiles of the fitted law (6 N D = const)'\n"
           << "set logscale x\nset format x '1e%L'\nset xlabel 'active parameters N'\nset ylabel 'L'\nset "
              "key inside top right font ',8'\n";
    for (std::size_t e = 0; e < panels.size(); ++e) {
      const std::string name = "isoflop_E" + std::to_string(e) + ".dat";
      std::ofstream out(data / name);
      script << "set title 'E = " << panels[e] << "'\nplot ";
      for (int f = 0; f < 5; ++f) {
        const double flops = min_flops * std::pow(max_flops * 100 / min_flops, f / 4.0);
        out << "# " << flops << " FLOPs: N L\n";
        // Centred on 20 tokens per parameter, a factor 30 either way: wide enough to show each minimum.
        const double centre = std::sqrt(flops / (6 * 20));
        for (int j = 0; j <= 80; ++j) {
          const double n = centre / 30 * std::pow(900, j / 80.0);
          out << n << " " << predict_loss(k, n, flops / (6 * n), panels[e]) << "\n";
        }
        out << "\n\n";
        script << (f ? ", " : "") << "'plot-data/" << name << "' index " << f << " with lines lw 2 title '"
               << format("%.1e", flops) << " FLOPs'";
      }
      script << "\n";
    }
    script << "unset multiplot\nset key outside right font ''\n";
  }

  // 4. The memory-optimal E over (training FLOPs, memory), parameters only (no KV cache).
  if (k.form == LawForm::joint) {
    std::ofstream out(data / "optimal_experts.dat");
    out << "# log10 FLOPs, log10 memory bytes, log2 of the best E (capped at " << kMaxPlannerExperts << ")\n";
    constexpr int kSteps = 24;
    for (int i = 0; i <= kSteps; ++i) {
      const double log_flops = 19 + 6.0 * i / kSteps;
      for (int j = 0; j <= kSteps; ++j) {
        const double log_memory = 9 + 3.0 * j / kSteps;
        Budget budget{std::pow(10, log_flops)};
        budget.memory_bytes = std::pow(10, log_memory);
        const auto best = memory_optimal(k, budget);
        // NaN (nothing fits) leaves the cell blank.
        out << log_flops << " " << log_memory << " " << (best ? std::log2(best->optimum.experts) : NAN)
            << "\n";
      }
      out << "\n";
    }
    script << "set output 'optimal_experts_map.png'\nset terminal png size 1000,750\nunset logscale\nset "
              "format x '%g'\n"
           << "set title 'Memory-optimal E (log2 E; 5 = E >= 32) by training compute and memory'\n"
           << "set xlabel 'log10 training FLOPs'\nset ylabel 'log10 memory (bytes, 2 per parameter)'\n"
           << "set view map\nset cbrange [0:5]\nset cblabel 'log2 E'\nset palette maxcolors 6\n"
           << "plot 'plot-data/optimal_experts.dat' using 1:2:3 with image notitle\n";
  }
  return "plots.gp";
}

// Runs gnuplot on the script; "" on success, else why not.
std::string run_gnuplot(const std::filesystem::path& dir, const std::string& script) {
  // Absolute: the spawn changes into the folder before it opens the log.
  const std::filesystem::path absolute = std::filesystem::absolute(dir);
  const std::string folder = absolute.string(), log_path = (absolute / "gnuplot.log").string();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addchdir_np(&actions, folder.c_str());  // the script's paths are relative
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::string program = "gnuplot";
  std::string script_name = script;
  char* argv[] = {program.data(), script_name.data(), nullptr};
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0)
    return "gnuplot not found on PATH: no plots drawn (install gnuplot, then run gnuplot " + script + " in " +
           folder + ")";
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "gnuplot failed (see " + log_path + ")";
  std::filesystem::remove(log_path);
  return "";
}

// Whether a coefficient belongs in what the fit prints: a dense law has no E_start or E_max.
bool printed(const FitResult& fit, std::size_t i) {
  const bool transform = kCoefficientNames[i] == "e_start" || kCoefficientNames[i] == "e_max";
  return !(fit.coefficients.form == LawForm::dense && transform);
}

nlohmann::json domain_json(const TrainingDomain& d) {
  nlohmann::json out{{"min_tokens_per_param", d.min_tokens_per_param},
                     {"by_validation", d.by_validation},
                     {"validation_rule", to_string(d.validation_rule)},
                     {"validation_runs", d.validation.size()},
                     {"reason", d.reason},
                     {"candidates", nlohmann::json::array()}};
  for (const FloorCandidate& c : d.candidates)
    out["candidates"].push_back({{"min_tokens_per_param", c.min_tokens_per_param},
                                 {"fitted_runs", c.fitted_runs},
                                 {"eligible", c.eligible},
                                 {"converged", c.converged},
                                 {"validation", errors_json(c.validation)}});
  return out;
}

}  // namespace

nlohmann::json fit_json(const FitResult& fit, const std::vector<Run>& runs, const FitOptions& options,
                        const std::string& source) {
  nlohmann::json out;
  out["source"] = source;
  out["form"] = fit.coefficients.form == LawForm::dense ? "dense" : "joint";
  out["expert_transform_fixed"] = fit.expert_transform_fixed;
  const auto values = to_array(fit.coefficients);
  for (std::size_t i = 0; i < kCoefficientCount; ++i)
    if (printed(fit, i)) out["coefficients"][std::string(kCoefficientNames[i])] = values[i];
  out["fitted_coefficients"] = nlohmann::json::array();
  for (std::size_t i = 0; i < kCoefficientCount; ++i)
    if (fit.fitted[i]) out["fitted_coefficients"].push_back(std::string(kCoefficientNames[i]));
  out["excluded"] = {{"rule", to_string(options.exclude)}, {"n", fit.excluded.size()}};
  out["train"] = errors_json(fit.train);
  out["below_floor"] = errors_json(fit.below_floor_errors);
  out["heldout"] = errors_json(fit.heldout_errors);
  out["heldout_rule"] = to_string(options.heldout);
  out["heldout_runs"] = nlohmann::json::array();
  for (const std::size_t i : fit.heldout) {
    const Run& r = runs[i];
    out["heldout_runs"].push_back(
        {{"label", r.label},
         {"n_act", r.n_act},
         {"tokens", r.tokens},
         {"experts", r.experts},
         {"loss", r.loss},
         {"predicted", predict_loss(fit.coefficients, r.n_act, r.tokens, r.experts)}});
  }
  out["domain"] = domain_json(fit.domain);
  out["objective"] = {
      {"kind", to_string(options.objective)}, {"huber_delta", options.huber_delta}, {"value", fit.objective}};
  out["starts"] = {{"grid", fit.starts}, {"polished", fit.polished}, {"converged", fit.converged_starts}};
  out["bootstrap"] = {{"fits", fit.bootstrap_fits},
                      {"converged", fit.bootstrap_converged},
                      {"underdetermined", fit.bootstrap_underdetermined},
                      {"failed", fit.bootstrap_failed},
                      {"starts", options.bootstrap_starts},
                      {"reliable", fit.intervals_reliable}};
  if (!fit.coefficient_intervals.empty())
    for (std::size_t i = 0; i < kCoefficientCount; ++i) {
      if (!fit.fitted[i]) continue;
      out["intervals"][std::string(kCoefficientNames[i])] = interval_json(fit.coefficient_intervals[i]);
      out["standard_errors"][std::string(kCoefficientNames[i])] =
          std::isnan(fit.coefficient_se[i]) ? nlohmann::json(nullptr) : nlohmann::json(fit.coefficient_se[i]);
    }
  out["compute_optimal"] = {{"flops", options.headline_flops}, {"optima", nlohmann::json::array()}};
  for (const HeadlineInterval& h : fit.headline) {
    nlohmann::json o{{"experts", h.point.experts},
                     {"n_act", h.point.n_act},
                     {"tokens", h.point.tokens},
                     {"loss", h.point.loss}};
    if (fit.bootstrap_fits > 0) {
      o["n_act_90"] = interval_json(h.n_act);
      o["tokens_90"] = interval_json(h.tokens);
      o["loss_90"] = interval_json(h.loss);
    }
    out["compute_optimal"]["optima"].push_back(o);
  }
  out["bounds"] = {{"e_start_min", kMinEStart}, {"e_max_max", kMaxEMax}};
  out["at_bound"] = coefficients_at_bounds(fit.coefficients);
  out["warnings"] = fit.warnings;
  out["published"] = nlohmann::json::array();
  for (const PublishedFit* p : matching_published_fits(runs, fit.training)) {
    nlohmann::json coefficients;
    const auto published = to_array(p->coefficients);
    for (std::size_t i = 0; i < kCoefficientCount; ++i)
      if (printed(fit, i)) coefficients[std::string(kCoefficientNames[i])] = published[i];
    out["published"].push_back({{"key", p->key},
                                {"citation", p->citation},
                                {"coefficients", coefficients},
                                {"train", errors_json(error_summary(p->coefficients, runs, fit.fitted_runs))},
                                {"heldout", errors_json(error_summary(p->coefficients, runs, fit.heldout))}});
  }
  out["seconds"] = fit.seconds;
  return out;
}

std::vector<std::string> write_fit_report(const std::filesystem::path& dir, const FitResult& fit,
                                          const std::vector<Run>& runs, const FitOptions& options,
                                          const std::string& source) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "fit.toml") << coefficients_toml(fit.coefficients);
  const std::vector<const PublishedFit*> published = matching_published_fits(runs, fit.training);
  std::vector<std::string> warnings;
  const std::string problem = run_gnuplot(dir, write_plot_files(dir, fit, runs, published));
  if (!problem.empty()) warnings.push_back(problem);

  const Coefficients& k = fit.coefficients;
  const bool dense = k.form == LawForm::dense;
  std::ostringstream md;
  md << "# Joint MoE scaling-law fit\n\n"
     << "Source: `" << source << "`, " << runs.size() << " runs";
  if (!fit.excluded.empty())
    md << ", " << fit.excluded.size() << " excluded by `--exclude " << to_string(options.exclude) << "`";
  md << ": " << fit.training.size() << " training runs (" << fit.fitted_runs.size() << " fitted";
  if (!fit.below_floor.empty())
    md << ", " << fit.below_floor.size() << " below the D/N floor of "
       << format("%g", fit.domain.min_tokens_per_param);
  md << "), " << fit.heldout.size() << " held out by `" << to_string(options.heldout) << "`.\n\n";
  if (dense)
    md << "**Every training run is dense (E = 1), so this is the Chinchilla form L = a·N^α + b·D^β + c:** γ, "
          "δ, ζ and ω are "
          "fixed at 0, and the law has no E_start or E_max. It says nothing about experts.\n\n";
  for (const std::string& warning : fit.warnings) md << "**Warning: " << warning << ".**\n\n";
  if (dense)
    md << "L(N, D) = a·N^α + b·D^β + c.\n\n";
  else
    md << "L(N, D, E) = a·Ê^δ·N^(α + γ·ln Ê) + b·Ê^ω·D^(β + ζ·ln Ê) + c, with 1/Ê = 1/(E − 0.99 + (1/E_start "
          "− 1/E_max)^−1) + 1/E_max.\n\n";
  md << "## Coefficients\n\n| coefficient | fit | 90% bootstrap interval | bootstrap SE "
        "|\n|---|---|---|---|\n";
  const auto values = to_array(k);
  for (std::size_t i = 0; i < kCoefficientCount; ++i) {
    if (!printed(fit, i) || (dense && !fit.fitted[i])) continue;
    md << "| " << kCoefficientNames[i] << " | " << format("%.6g", values[i]) << " | ";
    if (!fit.fitted[i])
      md << "held at the published value (not identified) | – |\n";
    else if (fit.coefficient_intervals.empty())
      md << "– | – |\n";
    else
      md << interval_text(fit.coefficient_intervals[i], "%.4g")
         << (fit.intervals_reliable ? "" : " (unreliable)") << " | "
         << (std::isnan(fit.coefficient_se[i]) ? "–" : format("%.3g", fit.coefficient_se[i])) << " |\n";
  }
  if (dense) md << "\nγ = δ = ζ = ω = 0 (no expert terms).\n";
  if (fit.expert_transform_fixed)
    md << "\nE_start and E_max are held, not fitted: fewer than " << kMinExpertCountsForTransform
       << " expert counts cannot place Clark's transform.\n";
  if (!dense && !fit.expert_transform_fixed) {
    md << "\nBounds: E_start ≥ " << format("%g", kMinEStart) << " and E_max ≤ " << format("%g", kMaxEMax)
       << " are enforced in the fit and in every bootstrap refit.\n";
    const double largest_experts = distinct(runs, &Run::experts).back();  // sorted ascending
    for (const std::string& name : coefficients_at_bounds(k)) {
      if (name == "e_max")
        md << "\n**E_max is at its bound " << format("%g", kMaxEMax)
           << ": the runs show no saturation of the benefit of experts up to E = " << largest_experts
           << ", so E_max is not identified.** Read it as \"larger than these runs can tell\", not as a "
              "measurement; predictions beyond E = "
           << largest_experts << " assume no saturation.\n";
      else if (name == "e_start")
        md << "\n**E_start is at its bound " << format("%g", kMinEStart)
           << ": the fit wanted a smaller value, where Clark's transform stops meaning an expert count.** "
              "Check the dense (E = 1) runs against the MoE runs.\n";
    }
  }

  const TrainingDomain& domain = fit.domain;
  md << "\n## Training domain\n\n"
     << "Runs with fewer tokens per active parameter (D/N) than a floor are not fitted: the law's separable "
        "form does not fit the whole range of D/N at once, and the runs far below the extrapolation target "
        "bend the fit there. Floor: **D/N ≥ "
     << format("%g", domain.min_tokens_per_param) << "**: " << domain.reason << ".\n";
  if (!domain.candidates.empty()) {
    md << "\nForward validation: the " << domain.validation.size() << " training runs that `"
       << to_string(domain.validation_rule)
       << "` picks next were set aside; each floor's fit of the rest predicted them. The held-out runs took "
          "no part.\n\n| D/N ≥ | fitted runs | validation RMSE(ln L) | validation max abs(L − L̂) | |\n"
          "|---|---|---|---|---|\n";
    for (const FloorCandidate& c : domain.candidates) {
      md << "| " << format("%g", c.min_tokens_per_param) << " | " << c.fitted_runs << " | ";
      if (!c.eligible)
        md << "– | – | too few runs or expert counts |\n";
      else if (!c.converged)
        md << "– | – | did not converge |\n";
      else
        md << format("%.5f", c.validation.rmse_log) << " | " << format("%.4f", c.validation.max_abs_error)
           << " | "
           << (c.min_tokens_per_param == domain.min_tokens_per_param && domain.by_validation ? "**chosen**"
                                                                                             : "")
           << " |\n";
    }
  }

  md << "\n## Extrapolation check\n\nThe held-out runs took no part in choosing the fit: the training domain "
     << (domain.by_validation ? "was chosen on validation runs carved from the training runs"
         : domain.candidates.empty() && domain.min_tokens_per_param > 0 ? "was given"
                                                                        : "is every training run")
     << ", and the winner within it is the start with the lowest training objective.\n\n| set | runs | "
        "RMSE(ln L) | max abs(L − L̂) |\n|---|---|---|---|\n"
     << "| fitted | " << fit.train.n << " | " << format("%.5f", fit.train.rmse_log) << " | "
     << format("%.4f", fit.train.max_abs_error) << " |\n";
  if (fit.below_floor_errors.n > 0)
    md << "| below the floor (not fitted) | " << fit.below_floor_errors.n << " | "
       << format("%.5f", fit.below_floor_errors.rmse_log) << " | "
       << format("%.4f", fit.below_floor_errors.max_abs_error) << " |\n";
  if (fit.heldout_errors.n > 0)
    md << "| held out | " << fit.heldout_errors.n << " | " << format("%.5f", fit.heldout_errors.rmse_log)
       << " | " << format("%.4f", fit.heldout_errors.max_abs_error) << " |\n";
  else
    md << "| held out | 0 | – | – |\n";
  if (!fit.heldout.empty()) {
    md << "\n| held-out run | N_act | D | E | observed L | predicted L |\n|---|---|---|---|---|---|\n";
    for (const std::size_t i : fit.heldout) {
      const Run& r = runs[i];
      md << "| " << r.label << " | " << count(r.n_act) << " | " << count(r.tokens) << " | " << r.experts
         << " | " << format("%.4f", r.loss) << " | "
         << format("%.4f", predict_loss(k, r.n_act, r.tokens, r.experts)) << " |\n";
    }
  }

  if (!published.empty()) {
    md << "\n## Comparison with the published fits\n\n"
       << "These runs have published fits (a median abs(ln L̂ − ln L) of at most 0.02 on the training "
          "runs):\n\n";
    for (const PublishedFit* p : published) md << "- `" << p->key << "`: " << p->citation << ".\n";
    md << "\n| coefficient | this fit | 90% | bootstrap SE |";
    for (const PublishedFit* p : published) md << " " << p->key << " |";
    md << "\n|---|---|---|---|";
    for (std::size_t j = 0; j < published.size(); ++j) md << "---|";
    md << "\n";
    for (std::size_t i = 0; i < kCoefficientCount; ++i) {
      if (!printed(fit, i) || (dense && !fit.fitted[i])) continue;
      md << "| " << kCoefficientNames[i] << " | " << format("%.6g", values[i]) << " | "
         << (fit.coefficient_intervals.empty() || !fit.fitted[i]
                 ? "–"
                 : interval_text(fit.coefficient_intervals[i], "%.4g"))
         << " | "
         << (fit.coefficient_se.empty() || std::isnan(fit.coefficient_se[i])
                 ? "–"
                 : format("%.3g", fit.coefficient_se[i]))
         << " |";
      for (const PublishedFit* p : published) {
        md << " " << format("%.6g", to_array(p->coefficients)[i]);
        if (!p->standard_errors.empty() && !std::isnan(p->standard_errors[i]))
          md << " (SE " << format("%.3g", p->standard_errors[i]) << ")";
        md << " |";
      }
      md << "\n";
    }
    md << "\nFit quality on the same split (RMSE(ln L) / max abs(L − L̂)):\n\n| law | fitted runs ("
       << fit.train.n << ") | training runs below the floor (" << fit.below_floor_errors.n << ") | held out ("
       << fit.heldout_errors.n << ") |\n|---|---|---|---|\n";
    auto quality = [&](const std::string& name, const Coefficients& law) {
      auto cell = [&](const std::vector<std::size_t>& which) {
        if (which.empty()) return std::string("–");
        const ErrorSummary e = error_summary(law, runs, which);
        return format("%.5f", e.rmse_log) + " / " + format("%.4f", e.max_abs_error);
      };
      md << "| " << name << " | " << cell(fit.fitted_runs) << " | " << cell(fit.below_floor) << " | "
         << cell(fit.heldout) << " |\n";
    };
    quality("this fit", k);
    for (const PublishedFit* p : published) quality(p->key, p->coefficients);
    if (problem.empty()) md << "\n![published vs observed](published_vs_observed.png)\n";
  }

  md << "\n## Compute-optimal models at " << format("%.0e", options.headline_flops) << " FLOPs\n\n"
     << "N_act and D minimising L at 6·N_act·D = budget, with 90% bootstrap intervals.\n\n"
     << "| E | N_act | 90% | D | 90% | loss | 90% |\n|---|---|---|---|---|---|---|\n";
  for (const HeadlineInterval& h : fit.headline)
    md << "| " << h.point.experts << " | " << count(h.point.n_act) << " | " << count_interval(h.n_act)
       << " | " << count(h.point.tokens) << " | " << count_interval(h.tokens) << " | "
       << format("%.4f", h.point.loss) << " | " << interval_text(h.loss, "%.4f") << " |\n";
  if (fit.headline.empty())
    md << "\nThe fitted law has no interior compute optimum (an exponent has the wrong sign).\n";
  if (!dense) {
    md << "\n## Memory-optimal models (the paper's Table 2 layout)\n\n"
       << "The lowest-loss E and shape (n_layers = d_model/64) whose parameters fit in memory at 2 bytes "
          "each, "
       << "no KV cache; E is capped at " << kMaxPlannerExperts << " (\"≥" << kMaxPlannerExperts
       << "\").\n\n| memory |";
    for (const double flops : kTable2Flops) md << " " << format("%.0e", flops) << " FLOPs |";
    md << "\n|---|---|---|---|\n";
    for (const char* memory : kTable2Memories) {
      md << "| " << memory << " |";
      for (const double flops : kTable2Flops) {
        Budget budget{flops};
        budget.memory_bytes = parse_bytes(memory, "table");
        const auto best = memory_optimal(k, budget);
        if (!best) {
          md << " nothing fits |";
          continue;
        }
        md << " E=" << (best->experts_capped ? "≥" : "") << best->optimum.experts << ", N_act "
           << count(best->optimum.n_act) << ", D " << count(best->optimum.tokens) << ", L "
           << format("%.3f", best->optimum.loss) << " |";
      }
      md << "\n";
    }
  }
  md << "\n## Plots\n\n";
  if (problem.empty()) {
    md << "![predicted vs observed](predicted_vs_observed.png)\n\n![loss vs tokens](loss_vs_tokens.png)\n\n"
       << "![IsoFLOP profiles](isoflop_profiles.png)\n\n";
    if (!dense) md << "![memory-optimal E](optimal_experts_map.png)\n\n";
  } else {
    md << "Not drawn: " << problem << ". The data and the script are in `plot-data/` and `plots.gp`.\n\n";
  }
  md << "## How it was fitted\n\n";
  if (options.objective == Objective::paper)
    md << "The authors' objective: Huber loss (δ = " << options.huber_delta
       << ") on ln L − ln L̂ with per-run weights (ln L)^−30 rescaled to mean 1, plus 1e-5·Σp² over the raw "
          "parameters; ";
  else
    md << "Huber loss (δ = " << options.huber_delta << ") on ln L − ln L̂, summed over the fitted runs; ";
  md << "objective at the chosen fit " << format("%.6g", fit.objective)
     << ". Ceres Levenberg–Marquardt with automatic derivatives from " << fit.starts
     << " grid starts: every start screened by its objective, the best given 20 iterations, the "
     << fit.polished << " best of those solved to convergence (" << fit.converged_starts << " converged)";
  if (!dense)
    md << "; E_start ≥ " << format("%g", kMinEStart) << " and E_max ≤ " << format("%g", kMaxEMax)
       << " enforced";
  md << ". Bootstrap: " << fit.bootstrap_fits << " resamples of the fitted runs, each refitted from up to "
     << options.bootstrap_starts
     << " starts (the chosen fit and the next-best distinct solutions) keeping its "
     << "lowest converged objective: " << fit.bootstrap_converged << " converged, "
     << fit.bootstrap_underdetermined << " had fewer distinct points than coefficients, "
     << fit.bootstrap_failed << " converged from none of their starts"
     << (fit.intervals_reliable ? "" : " (**the intervals are not reliable**)")
     << ". The intervals hold the training domain fixed at the chosen floor. Took "
     << format("%.1f", fit.seconds) << " s.\n";
  std::ofstream(dir / "report.md") << md.str();
  return warnings;
}

}  // namespace moesweep::analysis
