// Sweep and run files: expansion, filters, parameter counts, stable keys, and every class of bad input.
#include "moesweep/orchestrator/sweep_spec.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "moesweep/input_error.h"
#include "sweep_files.h"

namespace fs = std::filesystem;
using moesweep::InputError;
using moesweep::orchestrator::load_run_file;
using moesweep::orchestrator::load_sweep_file;
using moesweep::orchestrator::Sweep;
using moesweep::orchestrator::testing::kData;
using moesweep::orchestrator::testing::TempFiles;

namespace {

const fs::path kSource = MOESWEEP_SOURCE_DIR;

struct CommandResult {
  int status;
  std::string out;
  std::string err;
};

CommandResult run_command(const std::string& args) {
  const fs::path err = fs::temp_directory_path() / ("moesweep_stderr_" + std::to_string(::getpid()));
  const std::string command = std::string(MOESWEEP_BINARY) + " " + args + " 2>" + err.string();
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  const int status = ::pclose(pipe);
  std::ifstream in(err);
  std::stringstream e;
  e << in.rdbuf();
  fs::remove(err);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, e.str()};
}

std::vector<std::string> keys(const Sweep& s) {
  std::vector<std::string> k;
  for (const auto& r : s.runs) k.push_back(r.run_key);
  return k;
}

// The paper's own count: 13·d²·L + 2·d·V, computed here independently of the library.
double paper_active_params(double d, double layers, double vocab) {
  return 13 * d * d * layers + 2 * d * vocab;
}

TEST(PaperGrid, ExpandsToTheBlocksItDocumentsWithinTheIssuesRange) {
  const Sweep paper = load_sweep_file((kSource / "sweeps/paper.toml").string());
  std::size_t grid_points = 0;  // runs that are grid points: the cooldown trunks are not
  for (const auto& r : paper.runs) grid_points += r.kind != moesweep::orchestrator::RunKind::trunk;
  EXPECT_GE(grid_points, 260u);
  EXPECT_LE(grid_points, 310u);

  const std::vector<double> budgets = {0.5e9, 1e9,  2e9,  4e9,  8e9,   16e9, 32e9,
                                       48e9,  64e9, 80e9, 96e9, 112e9, 128e9};
  struct Shape {
    int d, layers, heads, max_experts;
  };
  const std::vector<Shape> shapes = {{512, 8, 8, 32},    {640, 10, 10, 32},  {768, 12, 12, 32},
                                     {1024, 16, 16, 32}, {1280, 16, 10, 32}, {1408, 21, 11, 16},
                                     {1664, 26, 26, 16}, {2304, 36, 36, 1}};
  std::set<std::tuple<std::int64_t, std::int64_t, std::int64_t>> expected;  // (d_model, E, D)
  for (const Shape& s : shapes)
    for (int e = 1; e <= s.max_experts; e *= 2)
      for (double d : budgets)
        if (d / paper_active_params(s.d, s.layers, 50257) <= 100) expected.insert({s.d, e, std::llround(d)});

  std::set<std::tuple<std::int64_t, std::int64_t, std::int64_t>> got;
  for (const auto& r : paper.runs) {
    if (r.kind == moesweep::orchestrator::RunKind::trunk) continue;
    got.insert({r.config.model.d_model, r.config.model.experts, r.config.train.tokens});
    EXPECT_EQ(r.config.data.tokenizer, "gpt2");
    EXPECT_EQ(r.config.model.seq_len, 512);
    EXPECT_EQ(r.config.train.batch_tokens, 512 * 512);
    EXPECT_LE(static_cast<double>(r.config.train.tokens) / static_cast<double>(r.n_act), 100.0);
  }
  EXPECT_EQ(got, expected);
  EXPECT_EQ(got.size(), grid_points);  // no duplicates
}

TEST(ParameterCounts, FollowThePapersFormulaWithTheGpt2Vocabulary) {
  const Sweep paper = load_sweep_file((kSource / "sweeps/paper.toml").string());
  std::map<std::pair<std::int64_t, std::int64_t>, std::pair<std::int64_t, std::int64_t>> counts;
  for (const auto& r : paper.runs)
    counts[{r.config.model.d_model, r.config.model.experts}] = {r.n_act, r.n_total};

  auto active = [&](std::int64_t d, std::int64_t e) { return counts.at(std::make_pair(d, e)).first; };
  auto total = [&](std::int64_t d, std::int64_t e) { return counts.at(std::make_pair(d, e)).second; };

  // 512/8/8 dense: 78.7M active (the issue's figure); the DESIGN's two check shapes.
  EXPECT_EQ(active(512, 1), 78'726'144);
  EXPECT_NEAR(static_cast<double>(active(512, 1)) / 1e6, 78.7, 0.05);
  EXPECT_EQ(active(1664, 1), 1'103'142'144);
  EXPECT_EQ(active(2304, 1), 2'715'922'944);
  // Total parameters grow with E only in the feed-forward: (4 + 9E)·d²·L + 2·d·V.
  EXPECT_EQ(active(512, 8), active(512, 1));
  EXPECT_EQ(total(512, 8), (4 + 9 * 8) * 512LL * 512 * 8 + 2 * 512LL * 50257);
  EXPECT_EQ(total(512, 1), active(512, 1));
}

TEST(AutoLearningRate, FollowsTheRuleInTheDesign) {
  const Sweep paper = load_sweep_file((kSource / "sweeps/paper.toml").string());
  for (const auto& r : paper.runs) {
    const double expected = std::exp(8.3916 - 0.81218 * std::log(static_cast<double>(r.n_act)) -
                                     0.25 * std::log(static_cast<double>(r.config.model.experts)));
    EXPECT_NEAR(r.config.train.lr / expected, 1.0, 1e-12);
  }
}

TEST(RunKeys, AreTheSameInAnotherProcess) {
  const std::string path = (kSource / "sweeps/paper.toml").string();
  const Sweep here = load_sweep_file(path);
  const CommandResult there = run_command("expand --json " + path);
  ASSERT_EQ(there.status, 0) << there.err;
  const auto json = nlohmann::json::parse(there.out);
  ASSERT_EQ(json["runs"].size(), here.runs.size());
  for (std::size_t i = 0; i < here.runs.size(); ++i) {
    EXPECT_EQ(json["runs"][i]["run_key"], here.runs[i].run_key);
    EXPECT_EQ(json["runs"][i]["n_act"], here.runs[i].n_act);
  }
  EXPECT_EQ(here.runs[0].run_key.size(), 64u);  // SHA-256, hex
}

TEST_F(TempFiles, OrderOfKeysListsAndBlocksDoesNotChangeTheSweep) {
  const std::string a = write("a.toml", std::string(kData) + R"(
[model]
seq_len = 64
[train]
batch_tokens = 1024
warmup_tokens = 1024
lr = 0.001
[[grid]]
shape = [{d_model = 32, n_layers = 2, n_heads = 2}, {d_model = 64, n_layers = 2, n_heads = 4}]
experts = [1, 2, 4]
tokens = [10240, 20480]
[[grid]]
shape = [{d_model = 96, n_layers = 3, n_heads = 4}]
experts = [1]
tokens = [40960]
)");
  const std::string b = write("b.toml", R"(
[[grid]]
tokens = [40960]
experts = [1]
shape = [{n_heads = 4, n_layers = 3, d_model = 96}]
[[grid]]
tokens = [20480, 10240]
experts = [4, 1, 2]
shape = [{n_layers = 2, d_model = 64, n_heads = 4}, {n_heads = 2, d_model = 32, n_layers = 2}]
[train]
lr = 0.001
batch_tokens = 1024
warmup_tokens = 1024
[model]
seq_len = 64
)" + std::string(kData));
  const Sweep sa = load_sweep_file(a), sb = load_sweep_file(b);
  EXPECT_EQ(sa.runs.size(), 13u);
  EXPECT_EQ(keys(sa), keys(sb));
  for (std::size_t i = 1; i < sa.runs.size(); ++i) EXPECT_LE(sa.runs[i - 1].flops, sa.runs[i].flops);
}

TEST_F(TempFiles, AGridPointInTwoBlocksIsOneRun) {
  const std::string path = write("u.toml", std::string(kData) + R"(
[train]
batch_tokens = 1024
warmup_tokens = 1024
lr = 0.001
[[grid]]
shape = [{d_model = 32, n_layers = 2, n_heads = 2}]
experts = [1, 2]
tokens = [10240]
[[grid]]
shape = [{d_model = 32, n_layers = 2, n_heads = 2}]
experts = [2, 4]
tokens = [10240]
)");
  EXPECT_EQ(load_sweep_file(path).runs.size(), 3u);
}

// The branching argument of run_key_of that gives a run of this kind its key.
std::string branching_of(moesweep::orchestrator::RunKind kind) {
  using moesweep::orchestrator::RunKind;
  return kind == RunKind::branch ? "cooldown" : kind == RunKind::trunk ? "cooldown-trunk" : "";
}

// Every number anywhere in a JSON value.
void numbers_in(const nlohmann::json& j, std::vector<double>& out) {
  if (j.is_number()) out.push_back(j.get<double>());
  if (j.is_structured())
    for (const auto& v : j) numbers_in(v, out);
}

// A sweep of lr = "auto" runs of every kind: independent runs, and cooldown branches with their trunk.
const char* kAutoSweep = R"(
[train]
batch_tokens = 1024
warmup_tokens = 1024
lr = "auto"
[[grid]]
shape = [{d_model = 32, n_layers = 2, n_heads = 2}, {d_model = 48, n_layers = 2, n_heads = 2}]
experts = [1, 4]
tokens = [10240]
[[grid]]
branching = "cooldown"
shape = [{d_model = 32, n_layers = 2, n_heads = 2}]
experts = [2]
tokens = [10240, 20480]
)";

// Issue 15: with lr = "auto" the computed rate used to be hashed, so a build whose rate differs in the
// last bit (fused multiply-add, another libm) gave every such run a new key and trained it again.
TEST_F(TempFiles, AutoLearningRateKeysHashTheRuleNotTheRateItComputes) {
  const Sweep sweep = load_sweep_file(write("auto.toml", std::string(kData) + kAutoSweep));
  ASSERT_EQ(sweep.runs.size(), 7u);  // 4 independent runs, 2 branches, 1 trunk
  for (const auto& r : sweep.runs) {
    const std::string branching = branching_of(r.kind);
    ASSERT_GT(r.config.train.lr, 0);
    ASSERT_TRUE(r.config.train.lr_auto);
    // The specification names the rule, and the derived rate is nowhere in it.
    const auto spec = nlohmann::json::parse(r.canonical_json);
    EXPECT_EQ(spec["train"]["lr"], "auto (rule v1)") << r.canonical_json;
    std::vector<double> numbers;
    numbers_in(spec, numbers);
    for (const double n : numbers) EXPECT_NE(n, r.config.train.lr) << r.canonical_json;
    EXPECT_EQ(r.run_key, moesweep::orchestrator::run_key_of(r.config, branching));
    // Another build's rate, one ulp either way, or any other rate: the same specification, the same key.
    for (const double other : {std::nextafter(r.config.train.lr, 1.0), std::nextafter(r.config.train.lr, 0.0),
                               2 * r.config.train.lr}) {
      moesweep::trainer::RunConfig elsewhere = r.config;
      elsewhere.train.lr = other;
      EXPECT_EQ(moesweep::orchestrator::canonical_json(elsewhere, branching), r.canonical_json);
      EXPECT_EQ(moesweep::orchestrator::run_key_of(elsewhere, branching), r.run_key);
    }
  }
  // A run file takes the same path (moesweep train names its checkpoint folder by this key).
  const auto run =
      load_run_file(write("run.toml", std::string(kData) + "[train]\ntokens = 10240\nbatch_tokens = 1024\n"
                                                           "warmup_tokens = 1024\nlr = \"auto\"\n"));
  moesweep::trainer::RunConfig elsewhere = run;
  elsewhere.train.lr = std::nextafter(run.train.lr, 1.0);
  EXPECT_EQ(moesweep::orchestrator::run_key_of(elsewhere), moesweep::orchestrator::run_key_of(run));
}

TEST_F(TempFiles, KeysFollowWhatTheUserWroteNotHowItWasSpelled) {
  auto key_with = [&](const std::string& name, const std::string& train) {
    return load_sweep_file(
               write(name, std::string(kData) + "[train]\nbatch_tokens = 1024\nwarmup_tokens = 1024\n" +
                               train + "\n[[grid]]\nshape = [{d_model = 32, n_layers = 2, n_heads = 2}]\n"))
        .runs[0];
  };
  const auto automatic = key_with("auto.toml", "tokens = 10240\nlr = \"auto\"");
  // The same values spelled differently: the same key.
  EXPECT_EQ(key_with("spelled.toml", "tokens = 1.024e4\nlr = \"auto\"").run_key, automatic.run_key);
  EXPECT_EQ(key_with("a.toml", "tokens = 10240\nlr = 0.001").run_key,
            key_with("b.toml", "tokens = 10_240\nlr = 1e-3").run_key);
  // Writing down the rate the rule gives is not writing "auto": a rule version later, it would differ.
  char explicit_lr[64];
  std::snprintf(explicit_lr, sizeof explicit_lr, "tokens = 10240\nlr = %.17g", automatic.config.train.lr);
  const auto written = key_with("explicit.toml", explicit_lr);
  EXPECT_EQ(written.config.train.lr, automatic.config.train.lr);
  EXPECT_NE(written.run_key, automatic.run_key);
  // Any other value written: another key.
  EXPECT_NE(key_with("seed.toml", "tokens = 10240\nlr = \"auto\"\nseed = 1").run_key, automatic.run_key);
  EXPECT_NE(key_with("eval.toml", "tokens = 10240\nlr = \"auto\"\neval_tokens = 4096").run_key,
            automatic.run_key);
  EXPECT_NE(key_with("tokens.toml", "tokens = 11264\nlr = \"auto\"").run_key, automatic.run_key);
}

// Keys are what a user's database holds: a change to the specification's text makes every finished run
// look new. The explicit ones were computed before the learning-rate rule had a version in the key (runs
// written explicitly kept their keys), the others with it (lr = "auto (rule v1)"). Change them only with
// a note to users that their finished runs will train again.
TEST_F(TempFiles, KeysOfAPinnedSweepDoNotChange) {
  const std::string grid = R"(
[[grid]]
shape = [{d_model = 32, n_layers = 2, n_heads = 2}]
experts = [1, 4]
tokens = [10240]
[[grid]]
branching = "cooldown"
shape = [{d_model = 32, n_layers = 2, n_heads = 2}]
experts = [2]
tokens = [10240, 20480]
)";
  auto keys_of = [&](const std::string& name, const std::string& lr) {
    const Sweep sweep = load_sweep_file(write(
        name,
        std::string(kData) + "[train]\nbatch_tokens = 1024\nwarmup_tokens = 1024\n" + lr + "\n" + grid));
    std::map<std::string, std::string> out;  // "kind E D" → key
    for (const auto& r : sweep.runs)
      out[std::string(moesweep::orchestrator::to_string(r.kind)) + " " +
          std::to_string(r.config.model.experts) + " " + std::to_string(r.config.train.tokens)] = r.run_key;
    return out;
  };
  EXPECT_EQ(keys_of("explicit.toml", "lr = 0.001"),
            (std::map<std::string, std::string>{
                {"run 1 10240", "dfa1ffcbf030f08b73bcc7621827ac4c104a136bd487d2397edbddaf089de931"},
                {"run 4 10240", "f45e9f8115b54b018baf992240600de249fcf8f66ebbf25ebc515fd63dc5adb9"},
                {"branch 2 10240", "ec47b3ec6a48d7d66b98ead7c13a7aa1b6ae7b5d352520d6e319102a086e2194"},
                {"branch 2 20480", "72f24e1c9bfa50c2914e984c163a7d11ec39d49b2813464495e57249bf2366db"},
                {"trunk 2 16384", "bceccbd94d4f7318b62bc6b47c1d7185c21cf8befe51d3511c908d71201406b9"}}));
  EXPECT_EQ(keys_of("auto.toml", "lr = \"auto\""),
            (std::map<std::string, std::string>{
                {"run 1 10240", "d3e5afd219213f1eadc1975ee2493ade69ce20d81a4f5d4ad2097f100f5805ac"},
                {"run 4 10240", "7def205de148c16b262e36e73546bb06202903f439709dafe19d5c84ddffdc10"},
                {"branch 2 10240", "6fa5591a09fbb01bf10ef424bf69b36231562357c5c6d0df871824c3bf2de3db"},
                {"branch 2 20480", "ccb861ee7acd28764b4a0bb9b01589743970725969e37023847581c4728e539d"},
                {"trunk 2 16384", "fd58cb0dc01312c21e5249be84133dab9a2decc455852f8f6a433b59c0681258"}}));
}

// Issue 15: tokens = [5e18, 6e18] printed total_tokens −7446744073709551616. Each D fits in int64, their
// sum does not: the file is refused at the value that overflows it; a sum that fits is exact.
TEST_F(TempFiles, TokenTotalsAreExactOrTheFileIsRefused) {
  auto sweep_with = [&](const std::string& name, const std::string& tokens) {
    return write(name, std::string(kData) +
                           "[train]\nbatch_tokens = 1024\nlr = 0.001\n[[grid]]\n"
                           "shape = [{d_model = 32, n_layers = 2, n_heads = 2}]\ntokens = " +
                           tokens + "\n");
  };
  const std::string over = sweep_with("over.toml", "[5e18, 6e18]");
  try {
    load_sweep_file(over);
    FAIL() << "a sweep of 1.1e19 tokens was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(
        std::string(e.what()).find("over.toml:9: grid.tokens: with 6000000000000000000 the sweep's runs add "
                                   "up to more than 9223372036854775807 tokens"),
        std::string::npos)
        << e.what();
  }
  const CommandResult refused = run_command("expand --json " + over);
  EXPECT_EQ(refused.status, 2);
  EXPECT_TRUE(refused.out.empty()) << refused.out;
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;

  const std::string fits = sweep_with("fits.toml", "[4.6e18, 4_600_000_000_000_000_001]");
  const Sweep sweep = load_sweep_file(fits);
  EXPECT_EQ(sweep.total_tokens(), 9'200'000'000'000'000'001);
  EXPECT_EQ(sweep.total_trained_tokens(), 9'200'000'000'000'000'001);
  const CommandResult printed = run_command("expand --json " + fits);
  ASSERT_EQ(printed.status, 0) << printed.err;
  const auto json = nlohmann::json::parse(printed.out);
  EXPECT_EQ(json["total_tokens"].get<std::int64_t>(), 9'200'000'000'000'000'001);
  EXPECT_EQ(json["total_trained_tokens"].get<std::int64_t>(), 9'200'000'000'000'000'001);
}

TEST_F(TempFiles, FiltersDropTheRunsTheyName) {
  const std::string path = write("f.toml", std::string(kData) + R"(
[train]
batch_tokens = 1024
warmup_tokens = 1024
lr = 0.001
[filters]
max_tokens_per_param = 1.0
[[grid]]
shape = [{d_model = 32, n_layers = 2, n_heads = 2}, {d_model = 64, n_layers = 2, n_heads = 4}]
tokens = [10240, 81920]
[[grid]]
shape = [{d_model = 32, n_layers = 1, n_heads = 2}, {d_model = 64, n_layers = 4, n_heads = 4}]
tokens = [10240]
min_non_embedding_params = 100000
)");
  // N_act(32/2) = 26624 + 16384 = 43008; N_act(64/2) = 106496 + 32768 = 139264; N_act(64/4) = 245760.
  // Block 1 keeps D/N ≤ 1: (32, 10240), (64, 10240), (64, 81920). Block 2 keeps 13·d²·L ≥ 1e5: only 64/4.
  const Sweep s = load_sweep_file(path);
  std::set<std::pair<std::int64_t, std::int64_t>> got;
  for (const auto& r : s.runs) got.insert({r.n_act, r.config.train.tokens});
  EXPECT_EQ(got, (std::set<std::pair<std::int64_t, std::int64_t>>{
                     {43008, 10240}, {139264, 10240}, {139264, 81920}, {245760, 10240}}));
}

TEST_F(TempFiles, ARunFileResolvesEveryKeyAndRefusesSweepSections) {
  const auto config = load_run_file(write("run.toml", std::string(kData) + R"(
tokenizer = "gpt2"
[model]
d_model = 64
n_layers = 2
n_heads = 4
experts = 4
seq_len = 128
[train]
tokens = 2_000_000
batch_tokens = 8192
lr = "auto"
warmup_tokens = 100_000
)"));
  EXPECT_EQ(config.model.vocab_size, 50257);
  EXPECT_EQ(config.model.experts, 4);
  EXPECT_TRUE(config.train.lr_auto);
  EXPECT_GT(config.train.lr, 0);
  EXPECT_DOUBLE_EQ(config.train.decay_fraction, 0.2);  // the recipe's default

  try {
    load_run_file(
        write("with_grid.toml", std::string(kData) + "[train]\ntokens = 100000\n[[grid]]\nexperts = [1]\n"));
    FAIL() << "a run file with [[grid]] was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("only sweep files have [grid]"), std::string::npos) << e.what();
  }
}

TEST_F(TempFiles, TheStoreSectionChoosesTheJournal) {
  const std::string base = std::string(kData) + "[train]\ntokens = 1000000\n";
  EXPECT_EQ(load_sweep_file(write("default.toml", base)).journal, moesweep::db::Journal::Auto);
  EXPECT_EQ(load_sweep_file(write("wal.toml", base + "[store]\njournal = \"wal\"\n")).journal,
            moesweep::db::Journal::Wal);
  EXPECT_EQ(load_sweep_file(write("rollback.toml", base + "[store]\njournal = \"rollback\"\n")).journal,
            moesweep::db::Journal::Rollback);
  try {
    load_run_file(write("run_store.toml", base + "[store]\njournal = \"wal\"\n"));
    FAIL() << "a run file with [store] was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("only sweep files have [store]"), std::string::npos) << e.what();
  }
}

// tests/data/bad: each file states the message fragment it must produce on its first line
// ("# expect: ..."); an empty file must say so.
std::vector<std::pair<fs::path, std::string>> bad_inputs() {
  std::vector<std::pair<fs::path, std::string>> cases;
  for (const auto& entry : fs::directory_iterator(kSource / "tests/data/bad")) {
    if (entry.path().extension() != ".toml") continue;
    std::ifstream in(entry.path());
    std::string first;
    std::getline(in, first);
    const std::string marker = "# expect: ";
    cases.push_back({entry.path(), first.rfind(marker, 0) == 0 ? first.substr(marker.size()) : "empty file"});
  }
  std::sort(cases.begin(), cases.end());
  return cases;
}

TEST(BadInput, EveryFileFailsWithItsMessage) {
  const auto cases = bad_inputs();
  ASSERT_GE(cases.size(), 20u);
  for (const auto& [path, fragment] : cases) {
    try {
      load_sweep_file(path.string());
      ADD_FAILURE() << path << " was accepted";
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(fragment), std::string::npos) << path << "\n  got: " << message;
      EXPECT_NE(message.find(path.filename().string()), std::string::npos)
          << "message does not name the file";
    }
  }
}

TEST(BadInput, TheCommandLineExitsTwoWithOneLine) {
  for (const auto& [path, fragment] : bad_inputs()) {
    const CommandResult r = run_command("expand " + path.string());
    EXPECT_EQ(r.status, 2) << path;
    EXPECT_TRUE(r.out.empty()) << path;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << path << ": " << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << path << ": " << r.err;
  }
  const CommandResult missing = run_command("expand /nonexistent/sweep.toml");
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.err.find("/nonexistent/sweep.toml: no such file"), std::string::npos) << missing.err;
  const CommandResult usage = run_command("expand");
  EXPECT_EQ(usage.status, 2);
  EXPECT_EQ(std::count(usage.err.begin(), usage.err.end(), '\n'), 1) << usage.err;
  const CommandResult no_db = run_command("status --db /nonexistent/sweep.db");
  EXPECT_EQ(no_db.status, 2);
  EXPECT_FALSE(fs::exists("/nonexistent/sweep.db"));
}

}  // namespace

namespace {

TEST_F(TempFiles, StatusShowsCountsComputeRunningRunsAndFailures) {
  const Sweep smoke = load_sweep_file((kSource / "sweeps/smoke.toml").string());
  const std::string db_path = (dir_ / "sweep.db").string();
  {
    auto store = moesweep::db::Store::open(db_path);
    std::vector<moesweep::db::RunSpec> specs;
    for (const auto& r : smoke.runs) specs.push_back(moesweep::orchestrator::to_run_spec(r));
    store.register_sweep(smoke.name, "sweeps/smoke.toml", specs);
    const auto running = store.start_attempt(smoke.runs[3].run_key, 2, 1, "node7");
    store.record_heartbeats(
        {{running, 12, smoke.runs[3].config.train.tokens / 2, 4.25, std::nullopt, 5000, 1e-3}});
    const auto failed = store.start_attempt(smoke.runs[0].run_key, 1, 1, "node7");
    store.finish_attempt(failed,
                         {"failed", "exception", std::nullopt, std::nullopt, "shard checksum mismatch"});
  }
  const CommandResult text = run_command("status --db " + db_path);
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("runs: 4 — 1 running 2 pending 1 failed"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("ETA"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(smoke.runs[3].run_key.substr(0, 12)), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("shard checksum mismatch"), std::string::npos) << text.out;

  const CommandResult json = run_command("status --json --db " + db_path);
  ASSERT_EQ(json.status, 0) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["counts"]["pending"], 2);
  EXPECT_EQ(j["runs_total"], 4);
  double total = 0;
  for (const auto& r : smoke.runs) total += r.flops;
  EXPECT_DOUBLE_EQ(j["flops_total"].get<double>(), total);
  EXPECT_NEAR(j["flops_done"].get<double>(), smoke.runs[3].flops / 2, 1.0);
  // ETA = the remaining work at the running run's measured rate.
  const double rate = 6.0 * static_cast<double>(smoke.runs[3].n_act) * 5000;
  EXPECT_NEAR(j["eta_seconds"].get<double>(), (total - smoke.runs[0].flops - smoke.runs[3].flops / 2) / rate,
              1e-6);
}

TEST_F(TempFiles, StatusWarnsWhenAReaderHasPinnedALargeWal) {
  const std::string db_path = (dir_ / "sweep.db").string();
  auto writer = moesweep::db::Store::open(db_path, moesweep::db::Store::Mode::ReadWrite, moesweep::db::Journal::Wal);
  writer.register_sweep("s", "s.toml", {});
  // A forgotten sqlite3 shell holds a read transaction while the coordinator writes 70 MB.
  auto reader = moesweep::db::Store::open(db_path, moesweep::db::Store::Mode::ReadOnly);
  reader.query("BEGIN");
  reader.query("SELECT COUNT(*) FROM events");
  const std::string payload(8000, 'x');
  for (int i = 0; i < 9000; ++i) writer.add_event("beat", payload);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  writer.maintain_wal(now - 590);  // the coordinator first saw the pin ten minutes ago
  writer.maintain_wal(now);

  const CommandResult text = run_command("status --db " + db_path);
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("warning: sweep.db-wal is "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("a reader has held a read transaction for 10 min"), std::string::npos) << text.out;
  const CommandResult json = run_command("status --json --db " + db_path);
  ASSERT_EQ(json.status, 0) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["journal"]["mode"], "wal");
  EXPECT_GT(j["wal"]["bytes"].get<std::int64_t>(), moesweep::db::kWalWarnBytes);
  EXPECT_TRUE(j["wal"]["warning"].is_string());

  reader.query("COMMIT");  // the shell is closed: the next upkeep empties the WAL
  EXPECT_TRUE(writer.maintain_wal(now + 10).truncated);
  const CommandResult after = run_command("status --db " + db_path);
  ASSERT_EQ(after.status, 0) << after.err;
  EXPECT_EQ(after.out.find("warning:"), std::string::npos) << after.out;
}

}  // namespace
