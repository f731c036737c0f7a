// moesweep plan --coefficients paper|FILE --flops F [--memory M] [--kv-tokens T] [--inference-tokens T]
//               [--table] [--json]: which E, N_act and D to choose under a compute (and memory) budget.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "format.h"
#include "moesweep/analysis/plan.h"
#include "moesweep/input_error.h"

namespace moesweep::cli {
namespace {

struct PlanOptions {
  std::string coefficients = "paper";
  double flops = 0;
  std::string memory;
  double kv_tokens = 0;
  double inference_tokens = 0;
  double vocabulary = analysis::kPaperVocabulary;
  bool table = false;
  bool json = false;
};

// 1e+21 → "1e21 FLOPs", as the paper's Table 2 heads its columns.
std::string human_flops(double flops) {
  char text[32];
  std::snprintf(text, sizeof text, "%.0e", flops);
  std::string out = text;
  const auto plus = out.find("e+");
  if (plus != std::string::npos) out.erase(plus + 1, 1);
  return out + " FLOPs";
}

std::string experts_label(const analysis::MemoryOptimum& m) {
  return m.experts_capped ? "≥" + std::to_string(m.optimum.experts) : std::to_string(m.optimum.experts);
}

nlohmann::json memory_json(const std::optional<analysis::MemoryOptimum>& m) {
  if (!m) return nullptr;
  return {{"experts", m->optimum.experts},
          {"experts_label", experts_label(*m)},
          {"experts_capped", m->experts_capped},
          {"d_model", m->shape.d_model},
          {"n_layers", m->shape.n_layers},
          {"n_act", m->optimum.n_act},
          {"n_total", m->n_total},
          {"tokens", m->optimum.tokens},
          {"loss", m->optimum.loss},
          {"memory_bytes", m->memory_bytes}};
}

std::string memory_text(const std::optional<analysis::MemoryOptimum>& m) {
  if (!m) return "no model of the paper's shape family fits";
  char line[256];
  std::snprintf(line, sizeof line, "E=%s d_model=%d n_layers=%d N_act=%s N_total=%s D=%s loss=%.4f",
                experts_label(*m).c_str(), m->shape.d_model, m->shape.n_layers,
                human_count(m->optimum.n_act).c_str(), human_count(m->n_total).c_str(),
                human_count(m->optimum.tokens).c_str(), m->optimum.loss);
  return line;
}

void run_table(const analysis::Coefficients& k, const PlanOptions& opt) {
  nlohmann::json rows = nlohmann::json::array();
  std::vector<std::string> details;
  if (!opt.json) {
    std::printf(
        "Memory-optimal E (paper's Table 2 layout: rows memory, columns training FLOPs; KV cache %s tokens, "
        "inference %s tokens)\n",
        human_count(opt.kv_tokens).c_str(), human_count(opt.inference_tokens).c_str());
    std::printf("  %-8s", "memory");
    for (const double flops : analysis::kTable2Flops)
      std::printf(flops == analysis::kTable2Flops[std::size(analysis::kTable2Flops) - 1] ? "  %s" : "  %-13s",
                  human_flops(flops).c_str());
    std::printf("\n");
  }
  for (const char* memory : analysis::kTable2Memories) {
    if (!opt.json) std::printf("  %-8s", memory);
    for (const double flops : analysis::kTable2Flops) {
      analysis::Budget budget{flops, opt.inference_tokens, analysis::parse_bytes(memory, "--table"),
                              opt.kv_tokens, opt.vocabulary};
      const auto m = analysis::memory_optimal(k, budget);
      if (opt.json) {
        rows.push_back({{"memory", memory},
                        {"memory_bytes", budget.memory_bytes},
                        {"flops", flops},
                        {"memory_optimal", memory_json(m)}});
        continue;
      }
      // "E=≥32" is 5 characters but 7 bytes: pad by hand so the columns line up.
      const std::string cell = m ? "E=" + experts_label(*m) : "none fits";
      const std::size_t width = cell.find("≥") == std::string::npos ? cell.size() : cell.size() - 2;
      const bool last = flops == analysis::kTable2Flops[std::size(analysis::kTable2Flops) - 1];
      std::printf("  %s%s", cell.c_str(), last ? "" : std::string(width < 13 ? 13 - width : 0, ' ').c_str());
      char line[320];
      std::snprintf(line, sizeof line, "  %-6s %.0e FLOPs: %s", memory, flops, memory_text(m).c_str());
      details.emplace_back(line);
    }
    if (!opt.json) std::printf("\n");
  }
  if (opt.json) {
    std::cout << nlohmann::json{{"table", rows}}.dump(2) << "\n";
    return;
  }
  std::printf("Each cell's shape, size and tokens:\n");
  for (const std::string& line : details) std::printf("%s\n", line.c_str());
}

void run_plan(const PlanOptions& opt) {
  if (opt.kv_tokens < 0) throw InputError::at("--kv-tokens", 0, "", "must not be negative");
  if (opt.inference_tokens < 0) throw InputError::at("--inference-tokens", 0, "", "must not be negative");
  const analysis::Coefficients k = analysis::load_coefficients(opt.coefficients);
  if (opt.table) return run_table(k, opt);
  if (!(opt.flops > 0))
    throw InputError::at("--flops", 0, "", "required (a positive FLOP budget) unless --table");

  analysis::Budget budget{opt.flops, opt.inference_tokens, 0, opt.kv_tokens, opt.vocabulary};
  if (!opt.memory.empty()) budget.memory_bytes = analysis::parse_bytes(opt.memory, "--memory");
  if (2.0 * opt.inference_tokens * analysis::kSmallestModel >= opt.flops)
    throw InputError::at("--inference-tokens", 0, "",
                         "serving these tokens would spend the whole --flops budget");
  // A law without a compute optimum (a fitted exponent of the wrong sign, often from a small study) may
  // still answer the memory question: print what it answers, say why the rest is missing, exit 1.
  std::vector<analysis::Optimum> compute;
  std::string no_compute_optimum;
  try {
    compute = analysis::compute_optimal(k, budget);
  } catch (const std::runtime_error& e) {
    no_compute_optimum = e.what();
  }
  if (k.form == analysis::LawForm::dense && !compute.empty()) compute.resize(1);  // says nothing about E > 1
  std::optional<analysis::MemoryOptimum> memory;
  if (budget.memory_bytes > 0) memory = analysis::memory_optimal(k, budget);
  const auto finish = [&] {
    if (no_compute_optimum.empty()) return;
    std::cerr << "moesweep: error: " << no_compute_optimum << "\n";
    throw ExitStatus{1};
  };

  if (opt.json) {
    nlohmann::json out{{"coefficients", opt.coefficients},
                       {"flops", opt.flops},
                       {"inference_tokens", opt.inference_tokens},
                       {"kv_tokens", opt.kv_tokens},
                       {"vocabulary", opt.vocabulary}};
    out["compute_optimal"] = nlohmann::json::array();
    if (!no_compute_optimum.empty()) out["compute_optimal_error"] = no_compute_optimum;
    for (const auto& o : compute)
      out["compute_optimal"].push_back(
          {{"experts", o.experts}, {"n_act", o.n_act}, {"tokens", o.tokens}, {"loss", o.loss}});
    if (budget.memory_bytes > 0) {
      out["memory_bytes"] = budget.memory_bytes;
      out["memory_optimal"] = memory_json(memory);
    }
    std::cout << out.dump(2) << "\n";
    return finish();
  }
  std::printf("Compute-optimal at %.3g FLOPs%s (%s coefficients):\n", opt.flops,
              opt.inference_tokens > 0
                  ? (" including " + human_count(opt.inference_tokens) + " inference tokens").c_str()
                  : "",
              opt.coefficients.c_str());
  if (!no_compute_optimum.empty()) std::printf("  none (below)\n");
  else std::printf("  %4s  %10s  %10s  %8s\n", "E", "N_act", "D", "loss");
  for (const auto& o : compute)
    std::printf("  %4d  %10s  %10s  %8.4f\n", o.experts, human_count(o.n_act).c_str(),
                human_count(o.tokens).c_str(), o.loss);
  if (k.form == analysis::LawForm::dense) std::printf("  (a dense-only fit: it cannot rank E > 1)\n");
  if (budget.memory_bytes > 0)
    std::printf(
        "Memory-optimal within %s (shapes n_layers = d_model/64, V = %.0f; KV cache %s tokens, 2 bytes per "
        "element):\n  %s\n",
        opt.memory.c_str(), opt.vocabulary, human_count(opt.kv_tokens).c_str(), memory_text(memory).c_str());
  finish();
}

}  // namespace

void add_plan(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("plan", "Compute- and memory-optimal E, N_act and D from the joint scaling law");
  auto opt = std::make_shared<PlanOptions>();
  cmd->add_option("--coefficients", opt->coefficients, "'paper' (the published fit) or a fit.toml")
      ->capture_default_str();
  cmd->add_option("--flops", opt->flops, "Compute budget in FLOPs (6·N_act·D for training)");
  cmd->add_option("--memory", opt->memory,
                  "Memory budget: parameters + KV cache at 2 bytes (e.g. 80GB, 16GiB)");
  cmd->add_option("--kv-tokens", opt->kv_tokens, "Tokens of KV cache held in memory (default 0)");
  cmd->add_option("--inference-tokens", opt->inference_tokens,
                  "Tokens to serve; each costs 2·N_act FLOPs from the same budget (default 0)");
  cmd->add_option("--vocab", opt->vocabulary,
                  "Vocabulary of the memory search's shapes (embedding and head count 2·d·V): 50257 for "
                  "GPT-2 as in the paper, 256 for a byte-level study")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_flag("--table", opt->table, "The paper's Table 2: memory 24GB/80GB/640GB × 1e21/1e22/1e23 FLOPs");
  cmd->add_flag("--json", opt->json, "Machine-readable output");
  cmd->callback([opt] { run_plan(*opt); });
}

}  // namespace moesweep::cli
