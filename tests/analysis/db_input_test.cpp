// `fit --db`: the finished runs of a sweep database are what the fit reads.
#include <gtest/gtest.h>

#include <filesystem>

#include "moesweep/analysis/runs.h"
#include "moesweep/db/store.h"
#include "moesweep/input_error.h"

namespace moesweep::analysis {
namespace {

class DbInput : public ::testing::Test {
 protected:
  std::filesystem::path path_ =
      std::filesystem::temp_directory_path() / ("moesweep_analysis_" + std::to_string(::getpid()) + ".db");
  void TearDown() override {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_.string() + suffix);
  }
};

TEST_F(DbInput, ReadsOnlyTheDoneRunsOfTheChosenSweep) {
  {
    db::Store store = db::Store::open(path_.string());
    std::vector<db::RunSpec> specs;
    for (int i = 0; i < 3; ++i) {
      db::RunSpec spec;
      spec.run_key = "run" + std::to_string(i);
      spec.config_json = "{}";
      spec.n_act = 1000000 * (i + 1);
      spec.n_total = spec.n_act;
      spec.tokens = 20000000;
      spec.experts = i == 2 ? 8 : 1;
      spec.flops = 6.0 * static_cast<double>(spec.n_act * spec.tokens);
      specs.push_back(spec);
    }
    store.register_sweep("tiny", "sweeps/tiny.toml", specs);
    for (int i = 0; i < 2; ++i) {  // run2 stays pending
      const auto attempt = store.start_attempt("run" + std::to_string(i), 0, 1, "host");
      db::AttemptEnd end;
      end.state = "done";
      end.exit_reason = "completed";
      end.final_loss = 4.0 - i;
      end.final_train_loss = 4.0 - i;
      store.finish_attempt(attempt, end);
    }
  }
  const std::vector<analysis::Run> runs = read_runs_db(path_.string(), std::string("tiny"));
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_DOUBLE_EQ(runs[0].n_act + runs[1].n_act, 3e6);
  EXPECT_DOUBLE_EQ(runs[0].loss + runs[1].loss, 7.0);
  EXPECT_EQ(read_runs_db(path_.string(), std::nullopt).size(), 2u);
  EXPECT_THROW(read_runs_db(path_.string(), std::string("other")), InputError);
}

TEST_F(DbInput, MissingDatabaseIsBadInput) {
  EXPECT_THROW(read_runs_db(path_.string(), std::nullopt), InputError);
}

}  // namespace
}  // namespace moesweep::analysis
