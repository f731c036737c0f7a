// Tokenizers, shards and corpus preparation (no LibTorch).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"

namespace moesweep::trainer {
namespace {

const std::filesystem::path kFixtures = MOESWEEP_TRAINER_FIXTURES;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

std::filesystem::path scratch_dir(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() / ("moesweep-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(ByteTokenizer, RoundTripsArbitraryBytes) {
  const auto tokenizer = make_byte_tokenizer();
  const std::string text = std::string("h\xc3\xa9llo\0\xff", 8);
  const auto ids = tokenizer->encode(text);
  ASSERT_EQ(ids.size(), 8u);
  EXPECT_EQ(ids[1], 0xc3);
  EXPECT_EQ(ids[7], 0xff);
  EXPECT_EQ(tokenizer->decode(ids), text);
  EXPECT_EQ(tokenizer->vocab_size(), 256);
}

// The fixture's ids come from the gpt-3-encoder package's own Encoder.js under node (see fixtures/README).
TEST(Gpt2Tokenizer, MatchesTheReferenceEncoderOnRealText) {
  const auto tokenizer = make_tokenizer("gpt2");
  const auto text = read_text(kFixtures / "gpt2_sample.txt");
  const auto expected =
      nlohmann::json::parse(read_text(kFixtures / "gpt2_sample_ids.json")).get<std::vector<int>>();
  const auto ids = tokenizer->encode(text);
  ASSERT_EQ(ids.size(), expected.size());
  for (std::size_t i = 0; i < ids.size(); ++i)
    ASSERT_EQ(ids[i], static_cast<TokenId>(expected[i])) << "at token " << i;
  EXPECT_EQ(tokenizer->decode(ids), text);
  EXPECT_EQ(tokenizer->vocab_size(), 50257);
}

TEST(Gpt2Tokenizer, RejectsInvalidUtf8) {
  const auto tokenizer = make_tokenizer("gpt2");
  EXPECT_THROW(tokenizer->encode("ok \xff\xfe bad"), InputError);
}

TEST(Brown, StripsPosTags) {
  EXPECT_EQ(
      strip_brown_tags("\n\n\tThe/at Fulton/np-tl County/nn-tl said/vbd ./.\n\n\n\tIt/pps 1/2/cd won/vbd\n"),
      "The Fulton County said .\nIt 1/2 won");
}

TEST(Shard, RoundTripsTokensAndHeader) {
  const auto dir = scratch_dir("shard");
  const std::vector<std::uint16_t> tokens = {1, 2, 3, 50000, 7};
  write_shard(dir / "a.bin", "gpt2", tokens);
  const Shard shard(dir / "a.bin");
  EXPECT_EQ(shard.tokenizer(), "gpt2");
  ASSERT_EQ(shard.size(), tokens.size());
  EXPECT_EQ(shard.token_width(), 2u);
  const auto read = shard.read(0, shard.size());
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), read.begin()));
  EXPECT_FALSE(std::filesystem::exists(dir / "a.bin.tmp"));
  std::filesystem::remove_all(dir);
}

TEST(Shard, RejectsTokensOutsideTheVocabulary) {
  const auto dir = scratch_dir("shard-vocab");
  const std::vector<std::uint16_t> tokens = {1, 300};
  EXPECT_THROW(write_shard(dir / "a.bin", "byte", tokens), InputError);
  std::filesystem::remove_all(dir);
}

// Each corruption must be an InputError whose message names the file and the problem.
void expect_rejected(const std::filesystem::path& path, const std::string& problem) {
  try {
    const Shard shard(path);
    FAIL() << "accepted a bad shard; expected: " << problem;
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(problem), std::string::npos) << message;
  }
}

TEST(Shard, RejectsMissingTruncatedAndCorruptShards) {
  const auto dir = scratch_dir("shard-corrupt");
  std::vector<std::uint16_t> tokens(1000);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::uint16_t>(i % 256);
  write_shard(dir / "good.bin", "byte", tokens);
  const auto good = read_text(dir / "good.bin");

  expect_rejected(dir / "missing.bin", "cannot open");
  std::ofstream(dir / "truncated.bin", std::ios::binary) << good.substr(0, good.size() - 10);
  expect_rejected(dir / "truncated.bin", "truncated");
  std::ofstream(dir / "tiny.bin", std::ios::binary) << good.substr(0, 20);
  expect_rejected(dir / "tiny.bin", "truncated");
  auto flipped = good;
  flipped[500] ^= 0x01;
  std::ofstream(dir / "flipped.bin", std::ios::binary) << flipped;
  expect_rejected(dir / "flipped.bin", "checksum");
  std::ofstream(dir / "text.bin", std::ios::binary)
      << "just some text that is not a shard, but long enough for a header " << std::string(100, 'x');
  expect_rejected(dir / "text.bin", "magic");
  std::filesystem::remove_all(dir);
}

TEST(Shard, TrainingWindowsAreDeterministicAndInRange) {
  std::set<std::size_t> offsets;
  for (int step = 0; step < 50; ++step) {
    for (int sequence = 0; sequence < 4; ++sequence) {
      const auto offset = training_window_offset(7, step, sequence, 1000, 129);
      EXPECT_EQ(offset, training_window_offset(7, step, sequence, 1000, 129));
      EXPECT_LE(offset + 129, 1000u);
      offsets.insert(offset);
    }
  }
  EXPECT_GT(offsets.size(), 150u);  // spread over the shard, not a handful of windows
  EXPECT_NE(training_window_offset(7, 3, 0, 1000, 129), training_window_offset(8, 3, 0, 1000, 129));
}

TEST(PrepareData, HoldsOutWholeDocumentsFromEveryPart) {
  const auto dir = scratch_dir("prepare");
  std::vector<Document> documents;
  for (int i = 0; i < 20; ++i)
    documents.push_back({"doc" + std::to_string(i), std::string(100, static_cast<char>('a' + i))});
  const auto tokenizer = make_byte_tokenizer();
  const auto summary = prepare_data(documents, *tokenizer, dir, 0.1);
  EXPECT_EQ(summary.val_documents, 2u);
  EXPECT_EQ(summary.val_tokens, 2u * 102u);  // each document plus its "\n\n" separator
  EXPECT_EQ(summary.train_tokens, 18u * 102u);
  const Shard val(dir / "val.bin");
  const std::string val_text = tokenizer->decode(val.read(0, val.size()));
  EXPECT_EQ(val_text.find('a'), std::string::npos);  // the first document stays in train
  EXPECT_EQ(Shard(dir / "train.bin").size() + val.size(), 20u * 102u);
  std::filesystem::remove_all(dir);
}

TEST(PrepareData, BrownCorpusIsEmbedded) {
  const auto documents = brown_corpus_documents();
  ASSERT_EQ(documents.size(), 500u);
  EXPECT_EQ(documents.front().name, "ca01");
  EXPECT_EQ(documents.front().text.rfind("The Fulton County Grand Jury said Friday", 0), 0u);
  EXPECT_EQ(documents.front().text.find("/at"), std::string::npos);
}

}  // namespace
}  // namespace moesweep::trainer
