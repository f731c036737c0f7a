#pragma once
// A tiny byte-level run on synthetic text, shared by the training tests and the data-parallel test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "moesweep/trainer/data.h"
#include "moesweep/trainer/trainer.h"

namespace moesweep::trainer {

// Sentences drawn from a small vocabulary: far below ln 256 nats/byte once learned.
inline std::string synthetic_text(std::size_t bytes, std::uint64_t seed) {
  static const char* words[] = {"the", "cat", "sat", "on",    "a",    "mat",   "and",   "dog",  "ran",
                                "to",  "big", "red", "house", "with", "small", "green", "door", "."};
  std::string text;
  std::uint64_t state = seed;
  while (text.size() < bytes) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    text += words[(state >> 33) % std::size(words)];
    text += ' ';
  }
  text.resize(bytes);
  return text;
}

class RecordingObserver : public TrainingObserver {
 public:
  void on_progress(const Progress& p) override { progress.push_back(p); }
  void on_checkpoint(std::int64_t step, std::int64_t, const std::filesystem::path&) override {
    checkpoints.push_back(step);
  }
  void on_warning(const std::string& message) override { warnings.push_back(message); }
  bool stop_requested() override {
    return stop_at_step >= 0 && static_cast<std::int64_t>(progress.size()) + 1 >= stop_at_step;
  }

  std::int64_t stop_at_step = -1;  // ask to stop during this step (1-based)
  std::vector<Progress> progress;
  std::vector<std::int64_t> checkpoints;
  std::vector<std::string> warnings;
};

class TrainingFixture : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("moesweep-trainer-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    const auto byte = make_byte_tokenizer();
    write_shard(dir_ / "train.bin", "byte", byte->encode(synthetic_text(100'000, 1)));
    write_shard(dir_ / "val.bin", "byte", byte->encode(synthetic_text(10'000, 2)));
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  // 40 steps of 8 sequences × 32 tokens, checkpoints every 10 steps.
  static RunConfig config() {
    RunConfig c;
    c.data.train = (dir_ / "train.bin").string();
    c.data.val = (dir_ / "val.bin").string();
    c.data.tokenizer = "byte";
    c.model.d_model = 32;
    c.model.n_layers = 2;
    c.model.n_heads = 4;
    c.model.experts = 4;
    c.model.seq_len = 32;
    c.model.vocab_size = 256;
    c.train.tokens = 40 * 256;
    c.train.batch_tokens = 256;
    c.train.lr = 1e-2;
    c.train.warmup_tokens = 1024;
    c.train.eval_tokens = 2048;
    c.train.checkpoint_every_tokens = 10 * 256;
    return c;
  }

  static TrainOptions options(const std::string& checkpoint_subdir = "") {
    TrainOptions o;
    if (!checkpoint_subdir.empty()) o.checkpoint_dir = dir_ / checkpoint_subdir;
    o.threads = 1;
    return o;
  }

  static const std::filesystem::path& dir() { return dir_; }

 private:
  static inline std::filesystem::path dir_;
};

}  // namespace moesweep::trainer
