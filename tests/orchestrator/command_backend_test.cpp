// The command backend's pure halves: placeholders (check, values, expansion), the stdout protocol, the
// announced-checkpoint list and the choice of where to resume; and the sweep loader's [backend] table.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "command_backend_protocol.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/sweep_spec.h"
#include "sweep_files.h"

namespace {

using moesweep::InputError;
using moesweep::orchestrator::ExpandedRun;
using moesweep::orchestrator::load_sweep_file;
using moesweep::orchestrator::RunKind;
using moesweep::orchestrator::testing::TempFiles;
namespace command = moesweep::orchestrator::command;
using command::Event;

const char* kCommandSweep = R"([sweep]
backend = "command"
[backend]
command = ["python3", "train.py", "--d-model", "{d_model}", "--tokens", "{tokens}", "--lr", "{lr}", "--out", "{run_dir}"]
env = { OMP_NUM_THREADS = "{threads}", RUN = "{run_key}" }
[model]
seq_len = 64
[train]
batch_tokens = 1024
lr = "auto"
warmup_tokens = 8192
[[grid]]
shape = [{d_model = 32, n_layers = 2, n_heads = 2}]
experts = [1, 4]
tokens = [65536]
)";

TEST(CommandPlaceholders, EveryRunKeyFieldAndTheAttemptsValuesAreKnown) {
  const auto& names = command::placeholder_names();
  for (const char* name :
       {"d_model", "model.d_model", "n_layers", "n_heads", "experts", "seq_len", "vocab_size", "tokens",
        "train.tokens", "batch_tokens", "lr", "warmup_tokens", "decay_fraction", "seed", "checkpoint_every_tokens",
        "train", "val", "data.train", "tokenizer", "n_act", "n_total", "flops", "kind", "run_key", "trunk_key",
        "branch_points", "branch_tokens", "run_dir", "attempt", "resume_from", "branch_from", "rank", "ranks",
        "master_addr", "master_port", "threads", "device", "devices"})
    EXPECT_TRUE(std::binary_search(names.begin(), names.end(), name)) << name;
}

TEST(CommandPlaceholders, CheckNamesTheUnknownOneAndSuggestTheClosest) {
  EXPECT_FALSE(command::check_template("--d-model={d_model} {run_dir}/x {{literal}}"));
  const auto typo = command::check_template("--d-model={dmodel}");
  ASSERT_TRUE(typo);
  EXPECT_EQ(*typo, "unknown placeholder '{dmodel}'; did you mean '{d_model}'?");
  const auto far = command::check_template("{zzzzzzzzzzzzzz}");
  ASSERT_TRUE(far);
  EXPECT_NE(far->find("unknown placeholder '{zzzzzzzzzzzzzz}'"), std::string::npos) << *far;
  EXPECT_NE(command::check_template("{d_model")->find("a '{' with no '}'"), std::string::npos);
  EXPECT_NE(command::check_template("d_model}")->find("a '}' with no '{'"), std::string::npos);
}

TEST(CommandPlaceholders, ExpandFillsValuesAndUnescapesBraces) {
  const std::map<std::string, std::string> values = {{"d_model", "64"}, {"run_dir", "/r/abc"}};
  EXPECT_EQ(command::expand("--d={d_model} {run_dir}/ckpt {{not}} }}", values), "--d=64 /r/abc/ckpt {not} }");
  EXPECT_EQ(command::expand("", values), "");
  EXPECT_THROW(command::expand("{tokens}", values), std::invalid_argument);
}

class CommandSweep : public TempFiles {};

TEST_F(CommandSweep, RunValuesAreTheResolvedRunKeyFields) {
  const auto sweep = load_sweep_file(write("s.toml", kCommandSweep));
  EXPECT_EQ(sweep.backend, "command");
  ASSERT_EQ(sweep.command.argv.size(), 10u);
  EXPECT_EQ(sweep.command.argv[3], "{d_model}");
  ASSERT_EQ(sweep.command.env.size(), 2u);
  ASSERT_EQ(sweep.runs.size(), 2u);
  for (const ExpandedRun& run : sweep.runs) {
    auto values = command::run_values(run);
    EXPECT_EQ(values.at("d_model"), "32");
    EXPECT_EQ(values.at("model.d_model"), "32");
    EXPECT_EQ(values.at("experts"), std::to_string(run.config.model.experts));
    EXPECT_EQ(values.at("tokens"), "65536");
    EXPECT_EQ(values.at("n_act"), std::to_string(run.n_act));
    EXPECT_EQ(values.at("run_key"), run.run_key);
    EXPECT_EQ(values.at("kind"), "run");
    EXPECT_EQ(values.at("train"), "");  // no [data]: the command backend's trainer reads its own
    // lr = "auto" is the rate the rule computed, as a number that reads back exactly.
    EXPECT_EQ(std::stod(values.at("lr")), run.config.train.lr);
    // Every run-side name has a value; the attempt's are the backend's to add.
    for (const std::string& name : command::placeholder_names()) {
      if (values.count(name)) continue;
      EXPECT_TRUE(name == "run_dir" || name == "attempt" || name == "resume_from" || name == "branch_from" ||
                  name == "rank" || name == "ranks" || name == "master_addr" || name == "master_port" ||
                  name == "threads" || name == "device" || name == "devices")
          << name;
    }
    values["run_dir"] = "/w/" + run.run_key;
    EXPECT_EQ(command::expand(sweep.command.argv[9], values), "/w/" + run.run_key);
  }
}

TEST_F(CommandSweep, TrunksGetTheirBranchPointsAndBranchesTheirStart) {
  std::string text = kCommandSweep;
  text.replace(text.find("tokens = [65536]"), 16, "tokens = [32768, 65536]\nbranching = \"cooldown\"");
  const auto sweep = load_sweep_file(write("s.toml", text));
  int trunks = 0, branches = 0;
  for (const ExpandedRun& run : sweep.runs) {
    const auto values = command::run_values(run);
    if (run.kind == RunKind::trunk) {
      ++trunks;
      EXPECT_EQ(values.at("kind"), "trunk");
      EXPECT_EQ(values.at("branch_points"), "25600,52224");  // 0.8·D rounded down to 1024-token steps
      EXPECT_EQ(values.at("decay_fraction"), "0.0");
    } else if (run.kind == RunKind::branch) {
      ++branches;
      EXPECT_EQ(values.at("branch_points"), "");
      EXPECT_EQ(values.at("branch_tokens"), std::to_string(run.branch_point.tokens));
      EXPECT_EQ(values.at("trunk_key"), run.trunk_key);
    }
  }
  EXPECT_EQ(trunks, 2);  // E = 1 and E = 4
  EXPECT_EQ(branches, 4);
}

TEST_F(CommandSweep, AnUnknownPlaceholderIsRefusedAtLoadWithFileLineAndName) {
  std::string text = kCommandSweep;
  text.replace(text.find("{tokens}"), 8, "{token}");
  const std::string path = write("typo.toml", text);
  try {
    load_sweep_file(path);
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ":4: backend.command: unknown placeholder '{token}'; did you mean '{tokens}'?");
  }
  text = kCommandSweep;
  text.replace(text.find("{threads}"), 9, "{thread_count}");
  try {
    load_sweep_file(write("env.toml", text));
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("env.toml:5: backend.env.OMP_NUM_THREADS: unknown placeholder '{thread_count}'"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(CommandSweep, TheCommandBackendNeedsACommandAndOtherBackendsNeedData) {
  try {
    load_sweep_file(write("no_command.toml", "[sweep]\nbackend = \"command\"\n[train]\ntokens = 65536\n"));
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no_command.toml:2: sweep.backend: \"command\" needs a [backend] table"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(load_sweep_file(write("torch.toml", "[sweep]\nbackend = \"torch\"\n[train]\ntokens = 65536\n")),
               InputError);
  EXPECT_THROW(load_sweep_file(write("k.toml", std::string(kCommandSweep) + "[backend.extra]\n")), InputError);
  try {
    load_sweep_file(write("bad.toml", "[sweep]\nbackend = \"slurm\"\n[train]\ntokens = 65536\n"));
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sweep.backend: must be one of \"torch\", \"simulate\", \"command\""),
              std::string::npos)
        << e.what();
  }
}

TEST(CommandProtocol, OtherLinesAreTheLog) {
  for (const char* line : {"", "step 3 loss 2.5", "[1, 2]", "  plain", "Traceback (most recent call last):"})
    EXPECT_EQ(command::parse_protocol_line(line).kind, Event::Kind::log) << line;
}

TEST(CommandProtocol, TheThreeEventsParse) {
  const Event p = command::parse_protocol_line(R"({"event": "progress", "step": 12, "tokens": 12288, "loss": 3.5})");
  ASSERT_EQ(p.kind, Event::Kind::progress);
  EXPECT_EQ(p.progress.step, 12);
  EXPECT_EQ(p.progress.tokens, 12288);
  EXPECT_EQ(p.progress.loss, 3.5);
  EXPECT_FALSE(p.progress.lr);
  const Event p2 = command::parse_protocol_line(
      R"(  {"event": "progress", "step": 1, "tokens": 1e6, "loss": 3, "lr": 0.001, "tokens_per_s": 5000, "extra": [1]})");
  EXPECT_EQ(p2.progress.tokens, 1000000);
  EXPECT_EQ(*p2.progress.lr, 0.001);
  EXPECT_EQ(*p2.progress.tokens_per_s, 5000);
  const Event c = command::parse_protocol_line(R"({"event": "checkpoint", "tokens": 4096, "path": "ck/4096.pt"})");
  ASSERT_EQ(c.kind, Event::Kind::checkpoint);
  EXPECT_EQ(c.checkpoint.tokens, 4096);
  EXPECT_EQ(c.checkpoint.path, "ck/4096.pt");
  EXPECT_FALSE(c.checkpoint.step);
  const Event r = command::parse_protocol_line(R"({"event": "result", "eval_loss": 2.25, "n_act": 100, "n_total": 400})");
  ASSERT_EQ(r.kind, Event::Kind::result);
  EXPECT_EQ(r.result.eval_loss, 2.25);
  EXPECT_EQ(r.result.n_act, 100);
  EXPECT_EQ(r.result.n_total, 400);
}

TEST(CommandProtocol, MalformedLinesSayWhatIsWrong) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"event": "progress", "step": 1)", "not valid JSON"},
      {R"({not json})", "not valid JSON"},
      {R"({"step": 1})", "missing field 'event'"},
      {R"({"event": 7})", "field 'event' must be a string"},
      {R"({"event": "progres", "step": 1, "tokens": 1, "loss": 1})", "unknown event 'progres'"},
      {R"({"event": "progress", "tokens": 1, "loss": 1})", "missing field 'step'"},
      {R"({"event": "progress", "step": -1, "tokens": 1, "loss": 1})", "field 'step' must be a whole number >= 0"},
      {R"({"event": "progress", "step": 1.5, "tokens": 1, "loss": 1})", "field 'step' must be a whole number"},
      {R"({"event": "progress", "step": 1, "tokens": 1, "loss": "low"})", "field 'loss' must be a finite number"},
      {R"({"event": "checkpoint", "tokens": 1})", "missing field 'path'"},
      {R"({"event": "checkpoint", "tokens": 1, "path": ""})", "field 'path' must be a non-empty string"},
      {R"({"event": "result", "eval_loss": null, "n_act": 1, "n_total": 1})", "field 'eval_loss' must be a finite"},
      {R"({"event": "result", "eval_loss": 2.0, "n_total": 1})", "missing field 'n_act'"},
      // A number beyond a double, in any field, is a protocol error, not an exception out of the worker.
      {R"({"event": "result", "eval_loss": 1e999, "n_act": 1, "n_total": 1})", "a number out of range"},
      {R"({"event": "progress", "step": 1, "tokens": 1, "loss": 1, "tokens_per_s": 1e500})",
       "a number out of range"},
      {R"({"event": "result", "eval_loss": -5, "n_act": 1, "n_total": 1})", "must be a loss in nats (>= 0)"},
  };
  for (const auto& [line, fragment] : cases) {
    try {
      command::parse_protocol_line(line);
      ADD_FAILURE() << "accepted: " << line;
    } catch (const command::ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << line << "\n  got: " << e.what();
    }
  }
}

TEST(CommandAnnouncements, RoundTripAndResumeFromTheNewestThatExists) {
  const std::vector<command::Announcement> list = {
      {1024, 1, "/r/a.pt", 7}, {2048, 2, "/r/b.pt", 7}, {3072, 3, "/r/c.pt", 8}};
  const auto back = command::announcements_from_json(command::announcements_to_json(list));
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[2].tokens, 3072);
  EXPECT_EQ(back[2].step, 3);
  EXPECT_EQ(back[2].path, "/r/c.pt");
  EXPECT_EQ(back[2].attempt, 8);
  EXPECT_THROW(command::announcements_from_json("{\"checkpoints\": [{\"tokens\": 1}]}"), std::runtime_error);
  EXPECT_THROW(command::announcements_from_json("garbage"), std::runtime_error);

  const auto all = [](const std::string&) { return true; };
  const auto not_c = [](const std::string& p) { return p != "/r/c.pt"; };
  EXPECT_EQ(command::newest_checkpoint(list, all)->path, "/r/c.pt");
  EXPECT_EQ(command::newest_checkpoint(list, not_c)->path, "/r/b.pt");  // rotated away: the one before
  EXPECT_EQ(command::newest_checkpoint(list, all, 2047)->path, "/r/a.pt");  // a trunk going back
  EXPECT_FALSE(command::newest_checkpoint(list, all, 1000));
  EXPECT_FALSE(command::newest_checkpoint({}, all));
  // A child that went back announces again from there: the last announced is the newest.
  auto again = list;
  again.push_back({2048, 2, "/r/b2.pt", 9});
  EXPECT_EQ(command::newest_checkpoint(again, all)->path, "/r/b2.pt");
}

}  // namespace
