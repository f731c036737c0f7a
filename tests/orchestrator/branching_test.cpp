// Cooldown branching (issue 9) in the sweep expansion: a trunk per model and a branch per budget, their
// keys, branch points on step boundaries (with the paper's batch ramp too), bad input, what the store
// keeps of them, and the paper grid's token saving.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "moesweep/db/store.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/sweep_spec.h"
#include "sweep_files.h"

namespace fs = std::filesystem;
using moesweep::InputError;
using moesweep::orchestrator::ExpandedRun;
using moesweep::orchestrator::load_sweep_file;
using moesweep::orchestrator::RunKind;
using moesweep::orchestrator::Sweep;
using moesweep::orchestrator::testing::kData;
using moesweep::orchestrator::testing::TempFiles;
using moesweep::trainer::StepBoundary;

namespace {

const fs::path kSourceDir = MOESWEEP_SOURCE_DIR;

class Branching : public TempFiles {
 protected:
  // The sweep file NAME of one shape (d_model 32, two layers) at 64-token sequences in 1024-token batches
  // and lr 0.003, with TRAIN's further [train] lines: one [[grid]] block of that shape per entry of BLOCKS.
  std::string one_shape_sweep(const std::string& name, const std::string& train,
                              const std::vector<std::string>& blocks) {
    std::string text = std::string(kData) +
                       "[model]\nseq_len = 64\n[train]\nbatch_tokens = 1024\nlr = 0.003\n" + train + "\n";
    for (const std::string& block : blocks)
      text += "[[grid]]\nshape = [{d_model = 32, n_layers = 2, n_heads = 2}]\n" + block + "\n";
    return write(name, text);
  }
  // Two models (E = 1, 4) × three budgets of 16, 24 and 32 batches of 1024 tokens.
  std::string sweep(const std::string& name, const std::string& branching) {
    return one_shape_sweep(name, "warmup_tokens = 1024\ndecay_fraction = 0.2",
                           {branching + "\nexperts = [1, 4]\ntokens = [16384, 24576, 32768]"});
  }
};

std::vector<const ExpandedRun*> of_kind(const Sweep& s, RunKind kind) {
  std::vector<const ExpandedRun*> out;
  for (const auto& r : s.runs)
    if (r.kind == kind) out.push_back(&r);
  return out;
}

TEST_F(Branching, AModelGetsOneTrunkAndABranchPerBudget) {
  const Sweep branched = load_sweep_file(sweep("branched.toml", "branching = \"cooldown\""));
  const Sweep independent = load_sweep_file(sweep("independent.toml", ""));
  ASSERT_EQ(independent.runs.size(), 6u);
  ASSERT_EQ(branched.runs.size(), 8u);
  const auto trunks = of_kind(branched, RunKind::trunk);
  const auto branches = of_kind(branched, RunKind::branch);
  ASSERT_EQ(trunks.size(), 2u);
  ASSERT_EQ(branches.size(), 6u);

  // (1 − 0.2)·D = 13107.2, 19660.8, 26214.4 tokens → the step boundaries at or before them.
  const std::map<std::int64_t, StepBoundary> expected_point = {
      {16384, {12, 12288}}, {24576, {19, 19456}}, {32768, {25, 25600}}};
  std::map<std::string, const ExpandedRun*> trunk_by_key;
  for (const auto* t : trunks) {
    trunk_by_key[t->run_key] = t;
    EXPECT_EQ(t->config.train.tokens, 25600);  // to the largest branch point
    EXPECT_EQ(t->config.train.decay_fraction, 0.0);
    EXPECT_EQ(t->trained_tokens, 25600);
    EXPECT_EQ(t->branch_points, (std::vector<StepBoundary>{{12, 12288}, {19, 19456}, {25, 25600}}));
    EXPECT_NE(t->canonical_json.find("\"branching\":\"cooldown-trunk\""), std::string::npos);
  }
  std::map<std::string, std::string> independent_key;  // canonical config → key
  for (const auto& r : independent.runs) independent_key[r.canonical_json] = r.run_key;
  for (const auto* b : branches) {
    const auto D = b->config.train.tokens;
    EXPECT_EQ(b->branch_point, expected_point.at(D));
    EXPECT_EQ(b->trained_tokens, D - expected_point.at(D).tokens);
    ASSERT_TRUE(trunk_by_key.count(b->trunk_key));
    const ExpandedRun& trunk = *trunk_by_key[b->trunk_key];
    EXPECT_EQ(trunk.config.model.experts, b->config.model.experts);
    EXPECT_EQ(b->trunk_config.train.tokens, trunk.config.train.tokens);
    // The branch's config is the independent run's; its key adds the branching mode.
    const std::string plain = moesweep::orchestrator::canonical_json(b->config);
    ASSERT_TRUE(independent_key.count(plain)) << plain;
    EXPECT_NE(b->run_key, independent_key[plain]);
    EXPECT_EQ(b->run_key, moesweep::orchestrator::run_key_of(b->config, "cooldown"));
    EXPECT_NE(b->canonical_json.find("\"branching\":\"cooldown\""), std::string::npos);
  }
  // Independent runs are keyed exactly as before branching existed: no "branching" key at all.
  for (const auto& r : independent.runs) EXPECT_EQ(r.canonical_json.find("branching"), std::string::npos);

  EXPECT_EQ(branched.total_tokens(), independent.total_tokens());
  EXPECT_EQ(branched.total_tokens(), 2 * (16384 + 24576 + 32768));
  EXPECT_EQ(branched.total_trained_tokens(), 2 * (25600 + 4096 + 5120 + 7168));
  EXPECT_EQ(independent.total_trained_tokens(), independent.total_tokens());
}

TEST_F(Branching, BudgetsOfOneModelFromTwoBlocksShareATrunk) {
  const std::string path = one_shape_sweep(
      "two.toml", "warmup_tokens = 1024",
      {"branching = \"cooldown\"\ntokens = [16384, 32768]",
       "branching = \"cooldown\"\ntokens = [32768, 65536]", "branching = \"none\"\ntokens = [16384]"});
  const Sweep s = load_sweep_file(path);
  ASSERT_EQ(of_kind(s, RunKind::trunk).size(), 1u);
  EXPECT_EQ(of_kind(s, RunKind::branch).size(), 3u);  // 32768 listed twice is one branch
  EXPECT_EQ(of_kind(s, RunKind::independent).size(), 1u);
  EXPECT_EQ(of_kind(s, RunKind::trunk)[0]->config.train.tokens, 52224);  // 0.8·65536 = 52428.8 → 51 batches
}

TEST_F(Branching, BadBranchingSettingsNameTheirLine) {
  auto message = [&](const std::string& name, const std::string& branching, const std::string& train = "") {
    try {
      load_sweep_file(
          one_shape_sweep(name, "warmup_tokens = 0\n" + train, {branching + "\ntokens = [2048, 16384]"}));
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message("mode.toml", "branching = \"sometimes\"").find("grid.branching"), std::string::npos);
  EXPECT_NE(message("mode.toml", "branching = \"sometimes\"").find("\"cooldown\" or \"none\""),
            std::string::npos);
  EXPECT_NE(message("list.toml", "branching = [\"cooldown\"]").find("expected a string"), std::string::npos);
  EXPECT_NE(
      message("nodecay.toml", "branching = \"cooldown\"", "decay_fraction = 0").find("decay_fraction is 0"),
      std::string::npos);
  // With decay_fraction 0.9, the 2048-token budget's branch point (1 − 0.9)·2048 = 204.8 tokens is less
  // than one 1024-token batch: there is no trunk to share.
  const std::string short_trunk = message("short.toml", "branching = \"cooldown\"", "decay_fraction = 0.9");
  EXPECT_NE(short_trunk.find("less than one batch"), std::string::npos) << short_trunk;
  EXPECT_NE(short_trunk.find("short.toml:"), std::string::npos) << short_trunk;
  EXPECT_NE(message("train.toml", "", "branching = \"cooldown\"").find("unknown key 'branching'"),
            std::string::npos);
}

// With the paper's batch ramp (128 → 256 → 512 sequences at 0.5B and 1B tokens) branch points are
// still step boundaries, found by walking the steps one by one here.
TEST(BranchPoints, FollowTheBatchRampStepByStep) {
  moesweep::trainer::RunConfig c;
  c.model.seq_len = 512;
  c.train.batch_tokens = 512 * 512;
  c.train.batch_ramp = true;
  c.train.decay_fraction = 0.2;
  for (const std::int64_t D : {500'000'000LL, 1'000'000'000LL, 2'000'000'000LL, 4'000'000'000LL}) {
    c.train.tokens = D;
    const StepBoundary got = moesweep::trainer::cooldown_branch_point(c);
    StepBoundary walk;
    while (true) {
      const std::int64_t next = walk.tokens + moesweep::trainer::batch_sequences_at(c, walk.tokens) * 512;
      if (static_cast<double>(next) > 0.8 * static_cast<double>(D)) break;
      walk = {walk.step + 1, next};
    }
    EXPECT_EQ(got, walk) << "D = " << D;
    EXPECT_EQ(moesweep::trainer::decay_factor_at(c.train, got.tokens), 1.0);
    const StepBoundary after = moesweep::trainer::step_boundary_at_or_after(c, D);
    EXPECT_GE(after.tokens, D);
    EXPECT_EQ(moesweep::trainer::step_boundary_at_or_before(c, after.tokens), after);
  }
}

TEST_F(Branching, TheStoreKeepsTrunksBranchPointsAndCountsTrunkWorkOnce) {
  const Sweep s = load_sweep_file(sweep("store.toml", "branching = \"cooldown\""));
  auto store = moesweep::db::Store::open((dir_ / "sweep.db").string());
  std::vector<moesweep::db::RunSpec> specs;
  for (const auto& r : s.runs) specs.push_back(moesweep::orchestrator::to_run_spec(r));
  EXPECT_EQ(store.register_sweep("b", "store.toml", specs), 8);
  EXPECT_EQ(store.register_sweep("b", "store.toml", specs), 0);

  const auto rows = store.query(
      "SELECT b.run_key, t.run_key, b.branch_step, b.branch_tokens, b.trained_tokens FROM runs b "
      "JOIN runs t ON t.id = b.trunk_id WHERE b.kind = 'branch' ORDER BY b.run_key");
  ASSERT_EQ(rows.size(), 6u);
  for (const auto& row : rows) {
    const auto& run =
        *std::find_if(s.runs.begin(), s.runs.end(), [&](const auto& r) { return r.run_key == row[0]; });
    EXPECT_EQ(row[1], run.trunk_key);
    EXPECT_EQ(row[2], std::to_string(run.branch_point.step));
    EXPECT_EQ(row[3], std::to_string(run.branch_point.tokens));
    EXPECT_EQ(row[4], std::to_string(run.trained_tokens));
  }
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM runs WHERE kind = 'trunk' AND trunk_id IS NULL")[0][0], "2");

  double trained_flops = 0;
  for (const auto& r : s.runs) trained_flops += r.trained_flops;
  const auto summary = store.summary("b");
  ASSERT_EQ(summary.size(), 1u);
  EXPECT_EQ(summary[0].runs, 8);
  EXPECT_DOUBLE_EQ(summary[0].flops_total, trained_flops);
  EXPECT_EQ(
      store.query("SELECT COUNT(*), COUNT(DISTINCT trunk) FROM branches WHERE trunk_state = 'pending'")[0],
      (std::vector<std::string>{"6", "2"}));

  // A branch halfway through its cooldown: progress and FLOPs count its own tokens only.
  const ExpandedRun* branch = of_kind(s, RunKind::branch)[0];
  const auto attempt = store.start_attempt(branch->run_key, 1, 1, "node");
  store.record_heartbeats(
      {{attempt, branch->branch_point.step + 1, branch->branch_point.tokens + branch->trained_tokens / 2, 3.0,
        std::nullopt, 100, 1e-3}});
  for (const auto& row : store.status("b")) {
    if (row.run_key != branch->run_key) continue;
    EXPECT_EQ(row.kind, "branch");
    EXPECT_EQ(row.trunk_key, branch->trunk_key);
    EXPECT_EQ(row.branch_step, branch->branch_point.step);
    EXPECT_DOUBLE_EQ(row.progress, 0.5);
    EXPECT_DOUBLE_EQ(row.flops, branch->trained_flops);
  }
  // Trunks are never fitted: a done trunk is not a finished run, a done branch is.
  const ExpandedRun* trunk = of_kind(s, RunKind::trunk)[0];
  store.finish_attempt(attempt, {"done", "completed", 3.5, 3.4, ""});
  const auto trunk_attempt = store.start_attempt(trunk->run_key, 1, 1, "node");
  store.finish_attempt(trunk_attempt, {"done", "completed", 3.9, 3.8, ""});
  const auto finished = store.finished_runs("b");
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].run_key, branch->run_key);
  // A done trunk can be reopened to write a branch point again; a pending one is not "reopened".
  EXPECT_TRUE(store.reopen_run(trunk->run_key, "branch point missing"));
  EXPECT_FALSE(store.reopen_run(trunk->run_key, "again"));
  EXPECT_EQ(store.query("SELECT state FROM runs WHERE run_key = '" + trunk->run_key + "'")[0][0], "pending");
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM events WHERE kind = 'reopen'")[0][0], "1");
}

// The acceptance figure: the paper grid with cooldown branches trains at most half the tokens
// of the same grid as independent runs.
TEST_F(Branching, ThePaperGridTrainsAtMostHalfTheTokensOfIndependentRuns) {
  const std::string paper_path = (kSourceDir / "sweeps/paper.toml").string();
  std::ifstream in(paper_path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string independent_text =
      std::regex_replace(text.str(), std::regex("branching = \"cooldown\""), "branching = \"none\"");
  ASSERT_NE(independent_text, text.str()) << "sweeps/paper.toml no longer branches";
  const Sweep branched = load_sweep_file(paper_path);
  const Sweep independent = load_sweep_file(write("paper_independent.toml", independent_text));

  EXPECT_EQ(of_kind(independent, RunKind::trunk).size(), 0u);
  EXPECT_EQ(of_kind(branched, RunKind::branch).size(), independent.runs.size());
  EXPECT_EQ(branched.total_tokens(), independent.total_tokens());
  const double ratio = static_cast<double>(branched.total_trained_tokens()) /
                       static_cast<double>(independent.total_trained_tokens());
  std::printf(
      "paper grid: %zu grid points, %zu trunks; independent runs train %.4g tokens, cooldown "
      "branches %.4g tokens: ratio %.4f\n",
      of_kind(branched, RunKind::branch).size(), of_kind(branched, RunKind::trunk).size(),
      static_cast<double>(independent.total_trained_tokens()),
      static_cast<double>(branched.total_trained_tokens()), ratio);
  EXPECT_LE(ratio, 0.5);
  RecordProperty("trained_tokens_ratio", std::to_string(ratio));
}

// `moesweep expand --json` reports per run what it trains beside its D, and both totals.
TEST_F(Branching, ExpandJsonReportsTrainedTokensAndTheirTotals) {
  const std::string path = sweep("cli.toml", "branching = \"cooldown\"");
  const std::string out_path = (dir_ / "out.json").string();
  const int status =
      std::system((std::string(MOESWEEP_BINARY) + " expand --json " + path + " > " + out_path).c_str());
  ASSERT_EQ(WEXITSTATUS(status), 0);
  std::ifstream in(out_path);
  const auto j = nlohmann::json::parse(in);
  const Sweep s = load_sweep_file(path);
  ASSERT_EQ(j["runs"].size(), s.runs.size());
  std::int64_t tokens = 0, trained = 0;
  for (std::size_t i = 0; i < s.runs.size(); ++i) {
    const auto& r = j["runs"][i];
    EXPECT_EQ(r["run_key"], s.runs[i].run_key);
    EXPECT_EQ(r["kind"], moesweep::orchestrator::to_string(s.runs[i].kind));
    EXPECT_EQ(r["tokens"], s.runs[i].config.train.tokens);
    EXPECT_EQ(r["trained_tokens"], s.runs[i].trained_tokens);
    if (s.runs[i].kind == RunKind::branch) {
      EXPECT_EQ(r["trunk"], s.runs[i].trunk_key);
      EXPECT_EQ(r["branch_step"], s.runs[i].branch_point.step);
    } else {
      EXPECT_TRUE(r["trunk"].is_null());
    }
    if (s.runs[i].kind != RunKind::trunk) tokens += r["tokens"].get<std::int64_t>();
    trained += r["trained_tokens"].get<std::int64_t>();
  }
  EXPECT_EQ(j["total_tokens"], tokens);
  EXPECT_EQ(j["total_trained_tokens"], trained);
  EXPECT_EQ(j["total_trained_tokens"], s.total_trained_tokens());
}

}  // namespace
