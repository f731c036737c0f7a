// The model, the schedule and the training loop: parameter counts, capacity dropping, learning-rate
// shape, training, bit-identical resume, torn and foreign checkpoints, divergence, bad shards.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include "checkpoint.h"
#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/model.h"
#include "moesweep/trainer/trainer.h"
#include "training_fixture.h"

namespace moesweep::trainer {
namespace {

using testing::HasSubstr;

TEST(Model, ParameterCountsMatchThePapersFormula) {
  for (const auto& [d, layers, experts, tokenizer] : std::vector<std::tuple<int, int, int, std::string>>{
           {32, 2, 1, "byte"}, {64, 2, 8, "byte"}, {64, 1, 4, "gpt2"}}) {
    ModelConfig m;
    m.d_model = d;
    m.n_layers = layers;
    m.n_heads = 4;
    m.experts = experts;
    m.seq_len = 16;
    m.vocab_size = vocab_size_of(tokenizer);
    MoeTransformer model(m);
    EXPECT_EQ(counted_total_params(*model), total_params(m)) << "d=" << d << " E=" << experts;
    EXPECT_EQ(counted_active_params(*model), active_params(m)) << "d=" << d << " E=" << experts;
  }
}

TEST(Model, DroppedTokensChangeTheOutputAndAmpleCapacityDropsNone) {
  ModelConfig m;
  m.d_model = 32;
  m.experts = 4;
  m.seq_len = 32;
  torch::manual_seed(0);
  MoeTransformer model(m);
  torch::NoGradGuard no_grad;
  const auto tokens = torch::randint(0, 256, {3, 32}, torch::kLong);
  // The 3 sequences are one routing group of 96 tokens; capacity is capped at the group, so factors E
  // and 2E both keep every token: identical outputs.
  const auto ample = model->forward(tokens, 4.0).logits;
  EXPECT_TRUE(torch::equal(ample, model->forward(tokens, 8.0).logits));
  EXPECT_EQ(model->forward(tokens, 4.0).dropped.sum().item<std::int64_t>(), 0);
  // A factor of 0.25 holds floor(0.25 · 96 / 4) = 6 tokens per expert: most tokens skip the feed-forward.
  const auto scarce = model->forward(tokens, 0.25);
  EXPECT_FALSE(torch::allclose(ample, scarce.logits));
  EXPECT_GE(scarce.dropped.sum().item<std::int64_t>(), 2 * (96 - 4 * 6));  // in each of the 2 layers
}

TEST(Model, AuxiliaryLossesHaveTheSwitchScale) {
  ModelConfig m;
  m.d_model = 32;
  m.n_layers = 3;
  m.experts = 4;
  torch::manual_seed(0);
  MoeTransformer model(m);
  const auto out = model->forward(torch::randint(0, 256, {2, 16}, torch::kLong), 1.0);
  // Balance loss per layer is ≥ 1 (1 when perfectly balanced); near-uniform routers at init give ≈ 1.
  EXPECT_GE(out.balance_loss.item<double>(), 3.0 - 1e-4);
  EXPECT_LT(out.balance_loss.item<double>(), 3.0 * 1.5);
  // Router logits start small (std ≈ 0.3), so logsumexp is a little above ln E in each layer.
  EXPECT_GT(out.z_loss.item<double>(), 0.8 * 3.0 * std::pow(std::log(4.0), 2));
  EXPECT_LT(out.z_loss.item<double>(), 3.0 * std::pow(std::log(4.0) + 0.3, 2));
}

TEST(Schedule, WarmsUpHoldsAndDecaysLinearlyToZero) {
  TrainConfig t;
  t.tokens = 1000;
  t.lr = 1e-3;
  t.warmup_tokens = 100;
  t.decay_fraction = 0.2;
  EXPECT_NEAR(learning_rate_at(t, 0, 10), 1e-4, 1e-12);  // 10 of 100 warm-up tokens
  EXPECT_NEAR(learning_rate_at(t, 40, 10), 5e-4, 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate_at(t, 90, 10), 1e-3);     // warm-up done
  EXPECT_DOUBLE_EQ(learning_rate_at(t, 500, 10), 1e-3);    // constant
  EXPECT_DOUBLE_EQ(learning_rate_at(t, 800, 10), 1e-3);    // decay starts at 80%
  EXPECT_NEAR(learning_rate_at(t, 900, 10), 5e-4, 1e-12);  // halfway down
  EXPECT_NEAR(learning_rate_at(t, 990, 10), 5e-5, 1e-12);  // last step still moves
  EXPECT_DOUBLE_EQ(learning_rate_at(t, 1000, 10), 0.0);
}

TEST(Schedule, BatchRampFollowsThePaper) {
  RunConfig c;
  c.model.seq_len = 512;
  c.train.batch_tokens = 512 * 512;
  EXPECT_EQ(batch_sequences_at(c, 0), 512);
  c.train.batch_ramp = true;
  EXPECT_EQ(batch_sequences_at(c, 0), 128);
  EXPECT_EQ(batch_sequences_at(c, 499'999'999), 128);
  EXPECT_EQ(batch_sequences_at(c, 500'000'000), 256);
  EXPECT_EQ(batch_sequences_at(c, 1'000'000'000), 512);
}

class Training : public TrainingFixture {};

TEST_F(Training, LearnsAndReportsWhatTheCommandPrints) {
  RecordingObserver observer;
  const auto result = train(config(), options("learns"), observer);
  ASSERT_EQ(result.outcome, Outcome::completed) << result.message;
  EXPECT_EQ(result.steps, 40);
  EXPECT_EQ(result.tokens, 40 * 256);
  EXPECT_EQ(result.n_act, active_params(config().model));
  EXPECT_EQ(result.n_total, total_params(config().model));
  ASSERT_EQ(observer.progress.size(), 40u);
  EXPECT_GT(observer.progress.front().train_loss, 5.0);  // ≈ ln 256 at init
  EXPECT_LT(result.eval_loss, 2.5);                      // the synthetic text is very predictable
  EXPECT_LT(result.train_loss, 2.5);
  EXPECT_GT(result.tokens_per_s, 0.0);
  EXPECT_EQ(observer.checkpoints, (std::vector<std::int64_t>{10, 20, 30, 40}));
}

TEST_F(Training, ResumedRunEndsBitIdenticalToAnUninterruptedOne) {
  RecordingObserver straight_observer;
  const auto straight = train(config(), options("straight"), straight_observer);
  ASSERT_EQ(straight.outcome, Outcome::completed);

  RecordingObserver interrupted_observer;
  interrupted_observer.stop_at_step = 13;  // between two periodic checkpoints
  const auto interrupted = train(config(), options("resumed"), interrupted_observer);
  ASSERT_EQ(interrupted.outcome, Outcome::stopped);
  EXPECT_EQ(interrupted.steps, 13);
  EXPECT_EQ(interrupted_observer.checkpoints, (std::vector<std::int64_t>{10, 13}));

  RecordingObserver resumed_observer;
  auto resume = options("resumed");
  resume.resume = true;
  const auto resumed = train(config(), resume, resumed_observer);
  ASSERT_EQ(resumed.outcome, Outcome::completed);
  EXPECT_EQ(resumed.resumed_from_step, 13);
  EXPECT_EQ(resumed.steps, 40);
  EXPECT_EQ(std::memcmp(&resumed.eval_loss, &straight.eval_loss, sizeof(double)), 0)
      << resumed.eval_loss << " vs " << straight.eval_loss;
  EXPECT_EQ(resumed.train_loss, straight.train_loss);
}

TEST_F(Training, TornNewestCheckpointFallsBackToThePreviousOneWithAWarning) {
  RecordingObserver first;
  const auto straight = train(config(), options("torn"), first);
  ASSERT_EQ(straight.outcome, Outcome::completed);
  const auto newest = dir() / "torn" / "ckpt-000000000040.pt";
  ASSERT_TRUE(std::filesystem::exists(newest));
  EXPECT_FALSE(std::filesystem::exists(dir() / "torn" / "ckpt-000000000020.pt"));  // only two are kept
  std::filesystem::resize_file(newest, std::filesystem::file_size(newest) / 2);

  RecordingObserver observer;
  auto resume = options("torn");
  resume.resume = true;
  const auto resumed = train(config(), resume, observer);
  EXPECT_EQ(resumed.resumed_from_step, 30);
  ASSERT_EQ(observer.warnings.size(), 1u);
  EXPECT_THAT(observer.warnings[0], HasSubstr("torn"));
  EXPECT_EQ(resumed.eval_loss, straight.eval_loss);
}

TEST_F(Training, CheckpointOfAnotherConfigIsRejected) {
  RecordingObserver observer;
  observer.stop_at_step = 2;
  ASSERT_EQ(train(config(), options("foreign"), observer).outcome, Outcome::stopped);
  auto other = config();
  other.train.lr *= 2;
  auto resume = options("foreign");
  resume.resume = true;
  RecordingObserver second;
  try {
    train(other, resume, second);
    FAIL() << "resumed from another config's checkpoint";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("another run config"));
    EXPECT_THAT(e.what(), HasSubstr("train.lr"));
  }
}

TEST_F(Training, CheckpointOfTheOlderRecipeIsRefusedForResume) {
  // Checkpoints written before routing groups and the authors' recipe carry a config text without the
  // recipe line; resuming one would continue a different model.
  MoeTransformer model(config().model);
  auto optimizer = make_optimizer(*model, config().train);
  save_checkpoint(dir() / "old-recipe", {5, 5 * 256}, "data.tokenizer = byte\nmodel.d_model = 32\n", *model,
                  *optimizer);
  auto resume = options("old-recipe");
  resume.resume = true;
  RecordingObserver observer;
  try {
    train(config(), resume, observer);
    FAIL() << "resumed from a checkpoint of the older recipe";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("older training recipe"));
    EXPECT_THAT(e.what(), HasSubstr("ckpt-000000000005.pt"));
  }
}

TEST_F(Training, TheBlasPoolFollowsTheTrainersThreadCount) {
  // OpenBLAS (setup.sh installs it as libblas.so.3) keeps its own pool, sized from
  // OPENBLAS_NUM_THREADS or the cores; the trainer must size it to its intra-op threads. With 2 BLAS
  // threads per worker, K workers on K cores ran up to 18× slower here.
  auto* get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  auto* set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (get == nullptr || set == nullptr) GTEST_SKIP() << "LibTorch's BLAS here is not OpenBLAS";
  set(2);
  auto c = config();
  c.train.tokens = 2 * c.train.batch_tokens;
  RecordingObserver observer;
  ASSERT_EQ(train(c, options(), observer).outcome, Outcome::completed);  // options(): threads = 1
  EXPECT_EQ(get(), 1);
}

TEST_F(Training, HugeLearningRateDivergesAsAnOutcome) {
  auto c = config();
  c.train.lr = 1e30;
  c.train.warmup_tokens = 0;
  RecordingObserver observer;
  const auto result = train(c, options(), observer);
  EXPECT_EQ(result.outcome, Outcome::diverged);
  EXPECT_THAT(result.message, HasSubstr("at step"));
  EXPECT_LT(result.steps, 40);
  EXPECT_TRUE(std::isnan(result.eval_loss));
}

TEST_F(Training, ShardOfAnotherTokenizerOrMissingIsBadInput) {
  auto c = config();
  c.data.tokenizer = "gpt2";
  c.model.vocab_size = 50257;
  RecordingObserver observer;
  try {
    train(c, options(), observer);
    FAIL() << "trained a gpt2 run on a byte shard";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("byte tokenizer"));
  }
  c = config();
  c.data.val = (dir() / "missing.bin").string();
  EXPECT_THROW(train(c, options(), observer), InputError);
  c = config();
  c.model.vocab_size = 1000;  // larger than the byte tokenizer's vocabulary
  EXPECT_THROW(train(c, options(), observer), InputError);
}

// prepare-data's numbered shards (issue 18): a directory, or the old single-file name, trains on every
// shard, reproducibly, and evaluates across val shards.
TEST_F(Training, ShardedDataTrainsOnEveryShardReproducibly) {
  const auto sharded = dir() / "sharded";
  std::filesystem::create_directories(sharded);
  const auto byte = make_byte_tokenizer();
  const auto train_ids = byte->encode(synthetic_text(100'000, 1));
  const auto val_ids = byte->encode(synthetic_text(10'000, 2));
  const auto half = [](const std::vector<TokenId>& ids, int part) {
    const auto middle = ids.begin() + static_cast<std::ptrdiff_t>(ids.size() / 2);
    return part == 0 ? std::vector<TokenId>(ids.begin(), middle) : std::vector<TokenId>(middle, ids.end());
  };
  for (int part = 0; part < 2; ++part) {
    write_shard(sharded / ("train-0000" + std::to_string(part) + ".bin"), "byte", half(train_ids, part));
    write_shard(sharded / ("val-0000" + std::to_string(part) + ".bin"), "byte", half(val_ids, part));
  }
  auto c = config();
  c.data.train = sharded.string();
  c.data.val = sharded.string();
  c.train.eval_tokens = 8192;  // 256 windows of 32: more than the first val shard holds
  RecordingObserver first, second, by_old_name;
  const auto a = train(c, options(), first);
  const auto b = train(c, options(), second);
  c.data.train = (sharded / "train.bin").string();  // absent: names train-00000.bin, train-00001.bin
  c.data.val = (sharded / "val.bin").string();
  const auto old = train(c, options(), by_old_name);
  EXPECT_TRUE(std::isfinite(a.eval_loss));
  EXPECT_LT(a.eval_loss, std::log(256.0));  // it learned from the shards
  EXPECT_EQ(a.eval_loss, b.eval_loss);
  EXPECT_EQ(a.eval_loss, old.eval_loss);
  ASSERT_EQ(first.progress.size(), second.progress.size());
  for (std::size_t i = 0; i < first.progress.size(); ++i)
    EXPECT_EQ(first.progress[i].train_loss, second.progress[i].train_loss);
  // The run's windows (40 steps × 8 sequences) come from both train shards.
  const ShardSet set(sharded.string(), "train");
  std::set<std::size_t> shards_used;
  for (int step = 0; step < 40; ++step) {
    for (int sequence = 0; sequence < 8; ++sequence)
      shards_used.insert(set.training_window(c.train.seed, step, sequence, 33).shard);
  }
  EXPECT_EQ(shards_used.size(), 2u);
}

// A SentencePiece-sized vocabulary: ids above 65,535 are stored as uint32 and reach the model whole. The
// byte text's ids are moved to 65,536 + b, so a model that saw them cut to 16 bits would read other ids.
TEST_F(Training, Uint32ShardsOfALargeVocabularyTrain) {
  const auto large = dir() / "large-vocabulary";
  std::filesystem::create_directories(large);
  constexpr std::int64_t kVocab = 65536 + 256;
  const auto byte = make_byte_tokenizer();
  const auto shifted = [&](const std::string& text) {
    std::vector<TokenId> ids;
    for (const TokenId id : byte->encode(text)) ids.push_back(65536 + id);
    return ids;
  };
  write_shard(large / "train-00000.bin", "sentencepiece", shifted(synthetic_text(100'000, 1)), kVocab);
  write_shard(large / "val-00000.bin", "sentencepiece", shifted(synthetic_text(10'000, 2)), kVocab);
  ASSERT_EQ(Shard(large / "train-00000.bin").token(0), 65536 + byte->encode(synthetic_text(100'000, 1))[0]);
  auto c = config();
  c.data.train = large.string();
  c.data.val = large.string();
  c.data.tokenizer = "sentencepiece:" + std::to_string(kVocab);
  c.model.vocab_size = vocab_size_of(c.data.tokenizer);
  ASSERT_EQ(c.model.vocab_size, kVocab);
  RecordingObserver observer;
  const auto result = train(c, options(), observer);
  // Uniform over the vocabulary is ln 65,792 = 11.1 nats; the run learns that only 256 ids occur, and
  // more: below ln 256 = 5.5 once the sentences' structure is seen.
  EXPECT_LT(result.eval_loss, std::log(256.0));
  // A run that names another vocabulary is refused with one line naming the shards.
  c.data.tokenizer = "sentencepiece:70000";
  c.model.vocab_size = 70000;
  try {
    train(c, options(), observer);
    FAIL() << "a vocabulary mismatch was accepted";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("vocabulary 65792"));
    EXPECT_THAT(e.what(), HasSubstr(large.string()));
  }
}

}  // namespace
}  // namespace moesweep::trainer
