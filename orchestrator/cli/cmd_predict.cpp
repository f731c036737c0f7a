// moesweep predict --coefficients paper|FILE --n-act N --tokens D --experts E [--json]: the law's loss.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "format.h"
#include "moesweep/analysis/law.h"
#include "moesweep/input_error.h"

namespace moesweep::cli {
namespace {

struct PredictOptions {
  std::string coefficients = "paper";
  double n_act = 0;
  double tokens = 0;
  double experts = 1;
  bool json = false;
};

void run_predict(const PredictOptions& opt) {
  if (!(opt.n_act > 0)) throw InputError::at("--n-act", 0, "", "must be positive");
  if (!(opt.tokens > 0)) throw InputError::at("--tokens", 0, "", "must be positive");
  if (!(opt.experts >= 1)) throw InputError::at("--experts", 0, "", "must be at least 1");
  const analysis::Coefficients k = analysis::load_coefficients(opt.coefficients);
  const double loss = analysis::predict_loss(k, opt.n_act, opt.tokens, opt.experts);
  if (opt.json) {
    std::cout << nlohmann::json{{"loss", loss}}.dump() << "\n";
    return;
  }
  std::printf("L(N_act=%s, D=%s, E=%g) = %.5f  (%s coefficients%s)\n", human_count(opt.n_act).c_str(),
              human_count(opt.tokens).c_str(), opt.experts, loss, opt.coefficients.c_str(),
              k.form == analysis::LawForm::dense ? "; a dense-only fit, E has no effect" : "");
}

}  // namespace

void add_predict(CLI::App& app) {
  auto* cmd = app.add_subcommand("predict", "Predict the final loss of a run from the joint scaling law");
  auto opt = std::make_shared<PredictOptions>();
  cmd->add_option("--coefficients", opt->coefficients, "'paper' (the published fit) or a fit.toml")
      ->capture_default_str();
  cmd->add_option("--n-act", opt->n_act, "Active parameters N (embedding and head included)")->required();
  cmd->add_option("--tokens", opt->tokens, "Training tokens D")->required();
  cmd->add_option("--experts", opt->experts, "Experts E (1 = dense)")->required();
  cmd->add_flag("--json", opt->json, "Print {\"loss\": ...}");
  cmd->callback([opt] { run_predict(*opt); });
}

}  // namespace moesweep::cli
