// Cooldown branches (issue 9): a trunk at constant learning rate keeps checkpoints at its branch points,
// and a branch that starts from one and decays ends bit-identical to the independent run of the same
// budget. A branch never starts from a checkpoint that is missing, torn or fails its checksum.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "moesweep/input_error.h"
#include "moesweep/trainer/trainer.h"
#include "training_fixture.h"

namespace moesweep::trainer {
namespace {

using testing::HasSubstr;

class Cooldown : public TrainingFixture {
 protected:
  static constexpr std::int64_t kBatch = 256;  // the fixture's batch: 8 sequences × 32 tokens

  // Three budgets of one model, decaying over their last 20%: 20 steps, 30 steps less 100 tokens (its
  // (1 − f)·D falls between two step boundaries), 40 steps.
  static std::vector<RunConfig> budgets() {
    std::vector<RunConfig> out;
    for (const std::int64_t tokens : {20 * kBatch, 30 * kBatch - 100, 40 * kBatch}) {
      RunConfig c = config();
      c.train.tokens = tokens;
      c.train.decay_fraction = 0.2;
      out.push_back(c);
    }
    return out;
  }
};

TEST_F(Cooldown, BranchPointsAreTheLastStepBoundariesBeforeTheDecay) {
  const auto runs = budgets();
  EXPECT_EQ(cooldown_branch_point(runs[0]), (StepBoundary{16, 16 * kBatch}));  // 0.8·20 steps
  EXPECT_EQ(cooldown_branch_point(runs[1]), (StepBoundary{23, 23 * kBatch}));  // 0.8·7580 = 6064 tokens
  EXPECT_EQ(cooldown_branch_point(runs[2]), (StepBoundary{32, 32 * kBatch}));
  for (const auto& c : runs) {
    const auto point = cooldown_branch_point(c);
    EXPECT_EQ(decay_factor_at(c.train, point.tokens), 1.0);
    EXPECT_LT(decay_factor_at(c.train, point.tokens + 2 * kBatch), 1.0);  // two steps on, the decay is on
  }
  const RunConfig trunk = cooldown_trunk_config(runs[0], 32 * kBatch);
  EXPECT_EQ(trunk.train.tokens, 32 * kBatch);
  EXPECT_EQ(trunk.train.decay_fraction, 0.0);
  EXPECT_EQ(learning_rate_at(trunk.train, 31 * kBatch, kBatch), trunk.train.lr);  // constant to the end
}

TEST_F(Cooldown, ThreeBranchesOfOneTrunkEndBitIdenticalToIndependentRuns) {
  const auto runs = budgets();
  std::vector<StepBoundary> points;
  for (const auto& c : runs) points.push_back(cooldown_branch_point(c));

  // The trunk: to the largest branch point at constant learning rate, keeping every branch point.
  const RunConfig trunk = cooldown_trunk_config(runs[0], points.back().tokens);
  auto trunk_options = options("trunk");
  trunk_options.keep_dir = dir() / "trunk-branch-points";
  for (const auto& p : points) trunk_options.keep_checkpoints_at_tokens.push_back(p.tokens);
  RecordingObserver trunk_observer;
  const auto trunk_result = train(trunk, trunk_options, trunk_observer);
  ASSERT_EQ(trunk_result.outcome, Outcome::completed) << trunk_result.message;
  EXPECT_EQ(trunk_result.steps, points.back().step);
  for (const auto& p : points)  // kept: the trunk's own rotation (two newest) never removes them
    EXPECT_TRUE(std::filesystem::exists(checkpoint_path(trunk_options.keep_dir, p.step))) << p.step;
  EXPECT_EQ(checkpoint_steps(dir() / "trunk").size(), 2u);

  for (std::size_t i = 0; i < runs.size(); ++i) {
    const RunConfig& c = runs[i];
    RecordingObserver independent_observer;
    const auto independent = train(c, options(), independent_observer);
    ASSERT_EQ(independent.outcome, Outcome::completed);

    auto branch_options = options("branch-" + std::to_string(i));
    branch_options.resume = true;  // as the sweep runs it: its own checkpoints first, else the trunk's
    branch_options.start_from = checkpoint_path(trunk_options.keep_dir, points[i].step);
    branch_options.start_from_config = trunk;
    RecordingObserver branch_observer;
    const auto branch = train(c, branch_options, branch_observer);
    ASSERT_EQ(branch.outcome, Outcome::completed) << branch.message;
    EXPECT_EQ(branch.resumed_from_step, points[i].step);
    EXPECT_EQ(branch.steps, independent.steps);
    EXPECT_EQ(static_cast<std::int64_t>(branch_observer.progress.size()), independent.steps - points[i].step)
        << "a branch trains only its cooldown";
    EXPECT_EQ(std::memcmp(&branch.eval_loss, &independent.eval_loss, sizeof(double)), 0)
        << "D = " << c.train.tokens << ": branch " << branch.eval_loss << " vs independent "
        << independent.eval_loss;
    EXPECT_EQ(branch.train_loss, independent.train_loss);
    std::printf("D = %lld tokens: branch from step %lld, eval loss %.17g (independent %.17g)\n",
                static_cast<long long>(c.train.tokens), static_cast<long long>(points[i].step),
                branch.eval_loss, independent.eval_loss);
  }
}

TEST_F(Cooldown, ABranchNeverStartsFromAnUnusableTrunkCheckpoint) {
  const RunConfig run = budgets()[0];
  const auto point = cooldown_branch_point(run);
  const RunConfig trunk = cooldown_trunk_config(run, point.tokens);
  auto trunk_options = options("corrupt-trunk");
  trunk_options.keep_dir = dir() / "corrupt-trunk-points";
  trunk_options.keep_checkpoints_at_tokens = {point.tokens};
  RecordingObserver trunk_observer;
  ASSERT_EQ(train(trunk, trunk_options, trunk_observer).outcome, Outcome::completed);
  const auto kept = checkpoint_path(trunk_options.keep_dir, point.step);

  auto branch_options = options("corrupt-branch");
  branch_options.resume = true;
  branch_options.start_from = kept;
  branch_options.start_from_config = trunk;

  {  // one flipped byte in the payload: the checksum fails
    std::fstream file(kept, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(std::filesystem::file_size(kept) / 2));
    char byte = 0;
    file.read(&byte, 1);
    file.seekp(-1, std::ios::cur);
    byte = static_cast<char>(byte ^ 0x5a);
    file.write(&byte, 1);
  }
  RecordingObserver observer;
  try {
    train(run, branch_options, observer);
    FAIL() << "a branch started from a corrupt trunk checkpoint";
  } catch (const UnusableCheckpoint& e) {
    EXPECT_THAT(e.what(), HasSubstr("checksum"));
  }
  EXPECT_TRUE(observer.progress.empty());
  EXPECT_TRUE(checkpoint_steps(dir() / "corrupt-branch").empty());

  std::filesystem::remove(kept);
  EXPECT_THROW(train(run, branch_options, observer), UnusableCheckpoint);
  EXPECT_TRUE(observer.progress.empty());
}

TEST_F(Cooldown, AStartCheckpointMustComeFromTheSameRunBeforeItsDecay) {
  const auto runs = budgets();
  const auto last = cooldown_branch_point(runs[2]);
  const RunConfig trunk = cooldown_trunk_config(runs[2], last.tokens);
  auto trunk_options = options("late-trunk");
  trunk_options.keep_dir = dir() / "late-trunk-points";
  trunk_options.keep_checkpoints_at_tokens = {last.tokens};
  RecordingObserver trunk_observer;
  ASSERT_EQ(train(trunk, trunk_options, trunk_observer).outcome, Outcome::completed);

  auto branch_options = options("late-branch");
  branch_options.start_from = checkpoint_path(trunk_options.keep_dir, last.step);
  branch_options.start_from_config = trunk;
  RecordingObserver observer;
  try {  // step 32 lies inside the 20-step run's decay (it starts after step 16)
    train(runs[0], branch_options, observer);
    FAIL() << "started inside the decay";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("decay"));
  }
  RunConfig other = runs[2];
  other.train.lr *= 2;
  try {
    train(other, branch_options, observer);
    FAIL() << "started from another model's trunk";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("differs"));
  }
  EXPECT_TRUE(observer.progress.empty());

  auto bad_keep = options("bad-keep");
  bad_keep.keep_dir = dir() / "bad-keep-points";
  bad_keep.keep_checkpoints_at_tokens = {kBatch + 1};  // not a step boundary
  EXPECT_THROW(train(trunk, bad_keep, observer), InputError);
}

}  // namespace
}  // namespace moesweep::trainer
