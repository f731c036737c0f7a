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

extern char** environ;

namespace moesweep::analysis {
namespace {

constexpr double kPaperTrainRmse = 0.0062, kPaperHeldoutRmse = 0.0039, kPaperHeldoutMaxError = 0.018;

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

// Writes the data files and the gnuplot script for the four plots; returns the script's name.
std::string write_plot_files(const std::filesystem::path& dir, const FitResult& fit,
                             const std::vector<Run>& runs) {
  const Coefficients& k = fit.coefficients;
  const std::set<std::size_t> heldout(fit.heldout.begin(), fit.heldout.end());
  const std::filesystem::path data = dir / "plot-data";
  std::filesystem::create_directories(data);
  std::ofstream script(dir / "plots.gp");
  script << "# Regenerate the plots from this folder: gnuplot plots.gp\n"
         << "set terminal png size 1000,750\nset termoption noenhanced\nset grid\nset key outside right\n";

  // 1. Predicted against observed, held-out runs marked.
  {
    std::ofstream out(data / "predicted_vs_observed.dat");
    for (const bool held : {false, true}) {
      out << "# " << (held ? "held out" : "train") << ": observed predicted\n";
      for (std::size_t i = 0; i < runs.size(); ++i)
        if (heldout.count(i) == (held ? 1u : 0u))
          out << runs[i].loss << " " << predict_loss(k, runs[i].n_act, runs[i].tokens, runs[i].experts)
              << "\n";
      out << "\n\n";
    }
    script << "set output 'predicted_vs_observed.png'\nset title 'Predicted vs observed final loss'\n"
           << "set xlabel 'observed L'\nset ylabel 'predicted L'\nunset logscale\n"
           << "plot x title 'L = L^' lc rgb 'gray', 'plot-data/predicted_vs_observed.dat' index 0 with "
              "points pt 7 ps 0.8 "
              "title 'train', '' index 1 with points pt 5 ps 1.3 lc rgb 'red' title 'held out'\n";
  }

  // 2. Loss against tokens per (N_act, E), one panel per E, with the fitted curves.
  const std::vector<double> experts = distinct(runs, &Run::experts);
  const std::vector<double> sizes = distinct(runs, &Run::n_act);
  const double min_tokens = distinct(runs, &Run::tokens).front(),
               max_tokens = distinct(runs, &Run::tokens).back();
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
        for (const Run& r : runs) any = any || (r.experts == experts[e] && r.n_act == n);
        if (!any) continue;
        out << "# N_act = " << n << ": observed runs, then the fitted curve\n";
        for (const Run& r : runs)
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
    for (const Run& r : runs)
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

}  // namespace

nlohmann::json fit_json(const FitResult& fit, const std::vector<Run>& runs, const FitOptions& options,
                        const std::string& source) {
  nlohmann::json out;
  out["source"] = source;
  out["form"] = fit.coefficients.form == LawForm::dense ? "dense" : "joint";
  const auto values = to_array(fit.coefficients);
  for (std::size_t i = 0; i < kCoefficientCount; ++i)
    out["coefficients"][std::string(kCoefficientNames[i])] = values[i];
  out["train"] = errors_json(fit.train);
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
  out["objective"] = {{"huber_delta", options.huber_delta}, {"value", fit.objective}};
  out["starts"] = {{"grid", fit.starts}, {"polished", fit.polished}, {"converged", fit.converged_starts}};
  out["bootstrap"] = {{"fits", fit.bootstrap_fits}, {"converged", fit.bootstrap_converged}};
  if (!fit.coefficient_intervals.empty())
    for (std::size_t i = 0; i < kCoefficientCount; ++i)
      out["intervals"][std::string(kCoefficientNames[i])] = interval_json(fit.coefficient_intervals[i]);
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
  out["seconds"] = fit.seconds;
  return out;
}

std::vector<std::string> write_fit_report(const std::filesystem::path& dir, const FitResult& fit,
                                          const std::vector<Run>& runs, const FitOptions& options,
                                          const std::string& source) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "fit.toml") << coefficients_toml(fit.coefficients);
  std::vector<std::string> warnings;
  const std::string problem = run_gnuplot(dir, write_plot_files(dir, fit, runs));
  if (!problem.empty()) warnings.push_back(problem);

  const Coefficients& k = fit.coefficients;
  const bool dense = k.form == LawForm::dense;
  std::ostringstream md;
  md << "# Joint MoE scaling-law fit\n\n"
     << "Source: `" << source << "`, " << runs.size() << " runs (" << fit.train.n << " train, "
     << fit.heldout_errors.n << " held out by `" << to_string(options.heldout) << "`).\n\n";
  if (dense)
    md << "**Every training run is dense (E = 1), so this is the Chinchilla form L = a·N^α + b·D^β + c:** γ, "
          "δ, ζ and ω are "
          "fixed at 0 and E_start, E_max have no effect. It says nothing about experts.\n\n";
  md << "L(N, D, E) = a·Ê^δ·N^(α + γ·ln Ê) + b·Ê^ω·D^(β + ζ·ln Ê) + c, with 1/Ê = 1/(E − 0.99 + (1/E_start − "
        "1/E_max)^−1) + 1/E_max.\n\n"
     << "## Coefficients\n\n| coefficient | fit | 90% bootstrap interval | paper |\n|---|---|---|---|\n";
  const auto values = to_array(k), paper = to_array(paper_coefficients());
  for (std::size_t i = 0; i < kCoefficientCount; ++i)
    md << "| " << kCoefficientNames[i] << " | " << format("%.6g", values[i]) << " | "
       << (fit.coefficient_intervals.empty() ? "–" : interval_text(fit.coefficient_intervals[i], "%.4g"))
       << " | " << format("%.6g", paper[i]) << " |\n";
  if (!dense) {
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
  md << "\n## Extrapolation check\n\nThe held-out runs took no part in choosing the fit: the winner is the "
        "start with the "
        "lowest training objective.\n\n| set | runs | RMSE(ln L) | max abs(L − L̂) | paper "
        "|\n|---|---|---|---|---|\n"
     << "| train | " << fit.train.n << " | " << format("%.5f", fit.train.rmse_log) << " | "
     << format("%.4f", fit.train.max_abs_error) << " | RMSE " << kPaperTrainRmse << " |\n";
  if (fit.heldout_errors.n > 0)
    md << "| held out | " << fit.heldout_errors.n << " | " << format("%.5f", fit.heldout_errors.rmse_log)
       << " | " << format("%.4f", fit.heldout_errors.max_abs_error) << " | RMSE " << kPaperHeldoutRmse
       << ", max " << kPaperHeldoutMaxError << " |\n";
  else
    md << "| held out | 0 | – | – | |\n";
  if (!fit.heldout.empty()) {
    md << "\n| held-out run | N_act | D | E | observed L | predicted L |\n|---|---|---|---|---|---|\n";
    for (const std::size_t i : fit.heldout) {
      const Run& r = runs[i];
      md << "| " << r.label << " | " << count(r.n_act) << " | " << count(r.tokens) << " | " << r.experts
         << " | " << format("%.4f", r.loss) << " | "
         << format("%.4f", predict_loss(k, r.n_act, r.tokens, r.experts)) << " |\n";
    }
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
  md << "## How it was fitted\n\n"
     << "Huber loss (δ = " << options.huber_delta
     << ") on ln L − ln L̂, summed over the training runs; objective at the "
     << "chosen fit " << format("%.6g", fit.objective)
     << ". Ceres Levenberg–Marquardt with automatic derivatives from " << fit.starts
     << " grid starts: every start screened by its objective, the best given 20 iterations, the "
     << fit.polished << " best of those solved to convergence (" << fit.converged_starts
     << " converged). E_start ≥ " << format("%g", kMinEStart) << " and E_max ≤ " << format("%g", kMaxEMax)
     << " are enforced. Bootstrap: " << fit.bootstrap_converged << " of " << fit.bootstrap_fits
     << " refits on resampled training runs converged. "
     << "Took " << format("%.1f", fit.seconds) << " s.\n";
  std::ofstream(dir / "report.md") << md.str();
  return warnings;
}

}  // namespace moesweep::analysis
