// moesweep expand SWEEP.toml [--json]: the runs a sweep makes, fully resolved, with their keys.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "format.h"
#include "moesweep/orchestrator/sweep_spec.h"

namespace moesweep::cli {
namespace {

nlohmann::json run_json(const orchestrator::ExpandedRun& r) {
  const auto& c = r.config;
  return {{"run_key", r.run_key},
          {"n_act", r.n_act},
          {"n_total", r.n_total},
          {"tokens", c.train.tokens},
          {"experts", c.model.experts},
          {"d_model", c.model.d_model},
          {"n_layers", c.model.n_layers},
          {"n_heads", c.model.n_heads},
          {"seq_len", c.model.seq_len},
          {"vocab_size", c.model.vocab_size},
          {"tokenizer", c.data.tokenizer},
          {"lr", c.train.lr},
          {"flops", r.flops},
          {"tokens_per_param", static_cast<double>(c.train.tokens) / static_cast<double>(r.n_act)},
          {"kind", orchestrator::to_string(r.kind)},
          {"trained_tokens", r.trained_tokens},
          {"trained_flops", r.trained_flops},
          {"trunk", r.kind == orchestrator::RunKind::branch ? nlohmann::json(r.trunk_key) : nlohmann::json()},
          {"branch_step",
           r.kind == orchestrator::RunKind::branch ? nlohmann::json(r.branch_point.step) : nlohmann::json()},
          {"branch_tokens", r.kind == orchestrator::RunKind::branch ? nlohmann::json(r.branch_point.tokens)
                                                                    : nlohmann::json()},
          // What the run key hashes: the values as written ("auto" stays symbolic; "lr" above is the rate).
          {"config", nlohmann::json::parse(r.canonical_json)}};
}

void print_table(const orchestrator::Sweep& sweep) {
  std::printf("%-12s %-6s %7s %6s %5s %3s %8s %8s %8s %8s %7s %9s %9s\n", "run_key", "kind", "d_model",
              "layers", "heads", "E", "N_act", "N_total", "tokens", "trained", "D/N", "lr", "FLOPs");
  double total = 0;
  for (const auto& r : sweep.runs) {
    const auto& c = r.config;
    std::printf("%-12s %-6s %7lld %6lld %5lld %3lld %8s %8s %8s %8s %7.1f %9.3g %9s\n",
                r.run_key.substr(0, 12).c_str(), orchestrator::to_string(r.kind),
                static_cast<long long>(c.model.d_model), static_cast<long long>(c.model.n_layers),
                static_cast<long long>(c.model.n_heads), static_cast<long long>(c.model.experts),
                human_count(static_cast<double>(r.n_act)).c_str(),
                human_count(static_cast<double>(r.n_total)).c_str(),
                human_count(static_cast<double>(c.train.tokens)).c_str(),
                human_count(static_cast<double>(r.trained_tokens)).c_str(),
                static_cast<double>(c.train.tokens) / static_cast<double>(r.n_act), c.train.lr,
                scientific(r.flops).c_str());
    total += r.trained_flops;
  }
  std::size_t trunks = 0;
  for (const auto& r : sweep.runs) trunks += r.kind == orchestrator::RunKind::trunk;
  std::printf("sweep '%s': %zu runs, %s training FLOPs in all, %s tokens", sweep.name.c_str(),
              sweep.runs.size(), scientific(total).c_str(),
              human_count(static_cast<double>(sweep.total_trained_tokens())).c_str());
  if (trunks > 0)
    std::printf(" (%zu of the runs are cooldown trunks; as independent runs the grid would train %s tokens)",
                trunks, human_count(static_cast<double>(sweep.total_tokens())).c_str());
  std::printf("\n");
}

}  // namespace

void add_expand(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("expand", "List the runs a sweep file makes (fully resolved, with run keys)");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("sweep", *path, "Sweep file (TOML)")->required();
  cmd->add_flag("--json", *json, "Print {\"runs\": [...]} as JSON");
  cmd->callback([path, json] {
    const orchestrator::Sweep sweep = orchestrator::load_sweep_file(*path);
    if (!*json) return print_table(sweep);
    nlohmann::json out{{"sweep", sweep.name}, {"runs", nlohmann::json::array()}};
    double total = 0, trained = 0;
    for (const auto& r : sweep.runs) {
      out["runs"].push_back(run_json(r));
      if (r.kind != orchestrator::RunKind::trunk) total += r.flops;
      trained += r.trained_flops;
    }
    out["total_flops"] = total;            // 6·N_act·D over the grid points (trunks are not grid points)
    out["total_trained_flops"] = trained;  // what the sweep trains, trunks counted once
    // Exact: load_sweep_file refuses a sweep whose token totals would not fit in int64.
    out["total_tokens"] = sweep.total_tokens();
    out["total_trained_tokens"] = sweep.total_trained_tokens();
    std::cout << out.dump(2) << "\n";
  });
}

}  // namespace moesweep::cli
