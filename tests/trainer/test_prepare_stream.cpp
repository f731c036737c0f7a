// The streaming prepare-data (issue 18) and sets of shards: no LibTorch.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/prepare.h"

namespace moesweep::trainer {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::filesystem::path scratch_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("moesweep-test-stream-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void write_gzip(const std::filesystem::path& path, const std::string& data, int level = 6) {
  gzFile out = gzopen(path.c_str(), ("wb" + std::to_string(level)).c_str());
  ASSERT_NE(out, nullptr);
  ASSERT_EQ(gzwrite(out, data.data(), static_cast<unsigned>(data.size())), static_cast<int>(data.size()));
  gzclose(out);
}

void write_zstd(const std::filesystem::path& path, const std::string& data) {
  std::string compressed(ZSTD_compressBound(data.size()), '\0');
  compressed.resize(ZSTD_compress(compressed.data(), compressed.size(), data.data(), data.size(), 3));
  write_text(path, compressed);
}

// Varied documents with newlines, punctuation, quotes and non-ASCII text (the Brown corpus plus some).
std::vector<std::string> sample_documents(std::size_t count) {
  const auto brown = brown_corpus_documents();
  std::vector<std::string> documents;
  for (std::size_t i = 0; i < count; ++i) {
    std::string text = brown[i % brown.size()].text.substr(0, 2000 + 37 * i);
    if (i % 3 == 0) text += "\n  \"Quoted\" — naïve café, 東京 %d.\n\n\tindented line";
    documents.push_back(text);
  }
  return documents;
}

std::string jsonl_of(const std::vector<std::string>& documents) {
  std::string jsonl;
  for (const auto& text : documents) jsonl += nlohmann::json{{"id", 1}, {"text", text}}.dump() + "\n";
  return jsonl;
}

// All tokens of a role's shards, in order.
std::vector<TokenId> tokens_of(const std::filesystem::path& dir, const std::string& role) {
  const ShardSet shards(dir.string(), role);
  std::vector<TokenId> all;
  for (std::size_t i = 0; i < shards.shard_count(); ++i) {
    const auto part = shards.shard(i).read(0, shards.shard(i).size());
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

std::vector<std::filesystem::path> files_in(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files.push_back(entry.path().filename());
  std::sort(files.begin(), files.end());
  return files;
}

StreamOptions options_for(const std::string& tokenizer, const std::filesystem::path& out,
                          std::vector<std::string> inputs, const std::string& format = "text") {
  StreamOptions options;
  options.tokenizer = tokenizer;
  options.out_dir = out;
  options.inputs = std::move(inputs);
  options.format = format;
  options.val_fraction = 0.2;
  return options;
}

TEST(PrepareStream, TextAndJsonlGiveTheSameTokens) {
  const auto dir = scratch_dir("text-jsonl");
  const auto documents = sample_documents(30);
  std::filesystem::create_directories(dir / "text");
  for (std::size_t i = 0; i < documents.size(); ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "doc%03zu.txt", i);
    write_text(dir / "text" / name, documents[i]);
  }
  write_zstd(dir / "docs.jsonl.zst", jsonl_of(documents));
  const auto from_text = prepare_stream(options_for("gpt2", dir / "a", {(dir / "text").string()}));
  const auto from_jsonl =
      prepare_stream(options_for("gpt2", dir / "b", {(dir / "docs.jsonl.zst").string()}, "jsonl"));
  EXPECT_EQ(from_text.documents, 30u);
  EXPECT_EQ(from_jsonl.documents, 30u);
  EXPECT_GT(from_text.val_documents, 0u);
  EXPECT_EQ(from_text.val_documents, from_jsonl.val_documents);
  EXPECT_EQ(tokens_of(dir / "a", "train"), tokens_of(dir / "b", "train"));
  EXPECT_EQ(tokens_of(dir / "a", "val"), tokens_of(dir / "b", "val"));
  std::filesystem::remove_all(dir);
}

// A JSONL file written with a UTF-8 byte order mark gives the same tokens as one without; and a streamed
// run into a directory that holds an older single-file train.bin/val.bin removes them, so that a config
// naming DIR/train.bin loads the new shards, not the old data.
TEST(PrepareStream, ByteOrderMarkAndAnOlderSingleFileLayout) {
  const auto dir = scratch_dir("bom");
  const auto documents = sample_documents(20);
  write_text(dir / "plain.jsonl", jsonl_of(documents));
  write_text(dir / "bom.jsonl", "\xEF\xBB\xBF" + jsonl_of(documents));
  std::filesystem::create_directories(dir / "b");
  write_shard(dir / "b" / "train.bin", "byte", std::vector<std::uint16_t>(100, 7));
  write_shard(dir / "b" / "val.bin", "byte", std::vector<std::uint16_t>(100, 7));
  prepare_stream(options_for("byte", dir / "a", {(dir / "plain.jsonl").string()}, "jsonl"));
  prepare_stream(options_for("byte", dir / "b", {(dir / "bom.jsonl").string()}, "jsonl"));
  EXPECT_EQ(tokens_of(dir / "a", "train"), tokens_of(dir / "b", "train"));
  EXPECT_FALSE(std::filesystem::exists(dir / "b" / "train.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir / "b" / "val.bin"));
  EXPECT_EQ(ShardSet((dir / "b" / "train.bin").string(), "train").size(), tokens_of(dir / "a", "train").size());
  std::filesystem::remove_all(dir);
}

// A text-format document longer than a chunk is tokenized in parts, cut only where GPT-2's
// pre-tokenizer ends a piece: the ids equal those of the whole text at once.
TEST(PrepareStream, LongTextDocumentsCutIntoChunksKeepTheirTokens) {
  const auto dir = scratch_dir("chunks");
  std::string text;
  for (const auto& document : sample_documents(12)) text += document + "\n";
  write_text(dir / "long.txt", text);
  write_text(dir / "other.txt", "A second, short document.");
  auto options =
      options_for("gpt2", dir / "out", {(dir / "long.txt").string(), (dir / "other.txt").string()});
  options.chunk_bytes = 256;  // hundreds of cuts
  options.val_fraction = 0.5;
  const auto summary = prepare_stream(options);
  const auto tokenizer = make_tokenizer("gpt2");
  auto expected = tokenizer->encode(text);
  expected.push_back(50256);
  auto all = tokens_of(dir / "out", "train");
  const auto val = tokens_of(dir / "out", "val");
  all.insert(all.end(), val.begin(), val.end());
  ASSERT_EQ(summary.documents, 2u);
  // The long document is wholly in one split; find it there.
  const auto found = std::search(all.begin(), all.end(), expected.begin(), expected.end());
  EXPECT_NE(found, all.end()) << "the long document's ids differ from tokenizing it whole";
  std::filesystem::remove_all(dir);
}

TEST(PrepareStream, OutputIsIdenticalAtOneAndTwoThreads) {
  const auto dir = scratch_dir("threads");
  write_gzip(dir / "docs.jsonl.gz", jsonl_of(sample_documents(400)));
  std::vector<std::vector<std::filesystem::path>> listings;
  for (const int threads : {1, 2}) {
    auto options = options_for("gpt2", dir / ("out" + std::to_string(threads)),
                               {(dir / "*.jsonl.gz").string()}, "jsonl");
    options.threads = threads;
    options.chunk_bytes = 16 << 10;  // many batches, so the workers really interleave
    options.shard_tokens = 50'000;
    prepare_stream(options);
    listings.push_back(files_in(options.out_dir));
  }
  ASSERT_EQ(listings[0], listings[1]);
  EXPECT_GE(listings[0].size(), 4u);  // several train shards and at least one val shard
  for (const auto& name : listings[0]) {
    EXPECT_EQ(read_text(dir / "out1" / name), read_text(dir / "out2" / name)) << name << " differs";
  }
  std::filesystem::remove_all(dir);
}

TEST(PrepareStream, EveryDocumentEndsWithTheEndOfTextToken) {
  const auto dir = scratch_dir("eot");
  const std::vector<std::string> documents = {"First document.", "Second one,\nwith two lines.", "Third."};
  write_text(dir / "docs.jsonl", jsonl_of(documents) + "\n");  // a trailing blank line is no document
  auto options = options_for("gpt2", dir / "out", {(dir / "docs.jsonl").string()}, "jsonl");
  options.val_fraction = 0.999999;  // everything in val, so the order of documents is the input's
  EXPECT_THROW(prepare_stream(options), InputError);  // ... and train would be empty: refused
  EXPECT_FALSE(std::filesystem::exists(dir / "out")) << "a refused run left its output directory behind";

  options.val_fraction = 0.3;
  const auto summary = prepare_stream(options);
  EXPECT_EQ(summary.documents, 3u);
  const auto tokenizer = make_tokenizer("gpt2");
  std::vector<std::string> decoded;
  for (const auto& role : {"train", "val"}) {
    const auto ids = tokens_of(dir / "out", role);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.back(), 50256u) << role << " does not end with <|endoftext|>";
    std::vector<TokenId> current;
    for (const auto id : ids) {
      if (id == 50256) {
        decoded.push_back(tokenizer->decode(current));
        current.clear();
      } else {
        current.push_back(id);
      }
    }
  }
  std::sort(decoded.begin(), decoded.end());
  auto expected = documents;
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(decoded, expected);  // exactly one <|endoftext|> after each document, none inside

  // The byte tokenizer has no special id: a blank line ends each document instead.
  const auto bytes =
      prepare_stream(options_for("byte", dir / "byte", {(dir / "docs.jsonl").string()}, "jsonl"));
  const auto train = tokens_of(dir / "byte", "train");
  const auto byte = make_byte_tokenizer();
  const std::string text = byte->decode(train);
  EXPECT_EQ(text.substr(text.size() - 2), "\n\n");
  EXPECT_EQ(bytes.documents, 3u);
  std::filesystem::remove_all(dir);
}

// The split is a property of each document: adding inputs never moves an existing document.
TEST(PrepareStream, SplitIsStableWhenInputsAreAdded) {
  const auto dir = scratch_dir("stable");
  const auto documents = sample_documents(60);
  write_text(dir / "a.jsonl", jsonl_of({documents.begin(), documents.begin() + 30}));
  write_text(dir / "b.jsonl", jsonl_of({documents.begin() + 30, documents.end()}));
  const auto small = prepare_stream(options_for("byte", dir / "one", {(dir / "a.jsonl").string()}, "jsonl"));
  const auto large = prepare_stream(
      options_for("byte", dir / "two", {(dir / "a.jsonl").string(), (dir / "b.jsonl").string()}, "jsonl"));
  const auto val_one = tokens_of(dir / "one", "val"), val_two = tokens_of(dir / "two", "val");
  ASSERT_GT(small.val_documents, 0u);
  EXPECT_GT(large.val_documents, small.val_documents);
  // The first file's val documents come first in the larger run's val, unchanged.
  ASSERT_LE(val_one.size(), val_two.size());
  EXPECT_TRUE(std::equal(val_one.begin(), val_one.end(), val_two.begin()));
  std::filesystem::remove_all(dir);
}

// --- bad input: exit 2 in the CLI (InputError), one line naming file and line, no shard left ----------

void expect_bad_input(const StreamOptions& options, const std::string& where, const std::string& problem) {
  try {
    prepare_stream(options);
    FAIL() << "accepted bad input; expected " << where << " " << problem;
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(where), std::string::npos) << message;
    EXPECT_NE(message.find(problem), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
  }
  // The run made its output directory, so a failed run removes it (with every temporary shard).
  EXPECT_FALSE(std::filesystem::exists(options.out_dir)) << "output left behind in " << options.out_dir;
}

TEST(PrepareStream, BadInputNamesFileAndLineAndLeavesNoShard) {
  const auto dir = scratch_dir("bad");
  // Enough good lines before the bad one that earlier batches are written (as temporary files) first.
  std::string good;
  for (int i = 0; i < 2000; ++i)
    good += nlohmann::json{{"text", "document number " + std::to_string(i)}}.dump() + "\n";
  auto jsonl = [&](const std::string& name, const std::string& bad_line) {
    write_gzip(dir / name, good + bad_line + "\n" + good);
    auto options = options_for("gpt2", dir / ("out-" + name), {(dir / name).string()}, "jsonl");
    options.chunk_bytes = 4096;
    options.shard_tokens = 1000;
    options.threads = 2;
    return options;
  };
  expect_bad_input(jsonl("notjson.jsonl.gz", "{\"text\": \"unterminated"),
                   "notjson.jsonl.gz:2001:", "not valid JSON");
  expect_bad_input(jsonl("nokey.jsonl.gz", "{\"body\": \"no text key\"}"),
                   "nokey.jsonl.gz:2001:", "no \"text\" string field");
  expect_bad_input(jsonl("notstring.jsonl.gz", "{\"text\": 42}"),
                   "notstring.jsonl.gz:2001:", "no \"text\" string field");
  expect_bad_input(jsonl("array.jsonl.gz", "[\"text\"]"), "array.jsonl.gz:2001:", "no \"text\" string field");

  // Corrupt and truncated compressed files.
  write_gzip(dir / "corrupt.jsonl.gz", good + good + good);
  auto bytes = read_text(dir / "corrupt.jsonl.gz");
  for (std::size_t i = bytes.size() / 2; i < bytes.size() / 2 + 64; ++i)
    bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
  write_text(dir / "corrupt.jsonl.gz", bytes);
  expect_bad_input(options_for("gpt2", dir / "out-corrupt", {(dir / "corrupt.jsonl.gz").string()}, "jsonl"),
                   "corrupt.jsonl.gz", "corrupt gzip data");
  write_gzip(dir / "short.jsonl.gz", good + good);
  bytes = read_text(dir / "short.jsonl.gz");
  write_text(dir / "short.jsonl.gz", bytes.substr(0, bytes.size() * 2 / 3));
  expect_bad_input(options_for("gpt2", dir / "out-short", {(dir / "short.jsonl.gz").string()}, "jsonl"),
                   "short.jsonl.gz", "corrupt gzip data (truncated)");
  write_zstd(dir / "short.jsonl.zst", good + good);
  bytes = read_text(dir / "short.jsonl.zst");
  write_text(dir / "short.jsonl.zst", bytes.substr(0, bytes.size() / 2));
  expect_bad_input(options_for("gpt2", dir / "out-zst", {(dir / "short.jsonl.zst").string()}, "jsonl"),
                   "short.jsonl.zst", "corrupt zstd data");
  write_text(dir / "garbage.jsonl.zst", good);
  expect_bad_input(options_for("gpt2", dir / "out-garbage", {(dir / "garbage.jsonl.zst").string()}, "jsonl"),
                   "garbage.jsonl.zst", "corrupt zstd data");

  // Invalid UTF-8 in a text file, for gpt2: the line of the bad byte.
  write_text(dir / "latin1.txt", "fine line\nanother fine line\ncaf\xe9 au lait\n");
  expect_bad_input(options_for("gpt2", dir / "out-utf8", {(dir / "latin1.txt").string()}),
                   "latin1.txt:3:", "not valid UTF-8");

  // An existing output directory keeps what it held: the shards of an earlier, successful run.
  const auto earlier = dir / "out-earlier";
  write_text(dir / "good.jsonl", good);
  prepare_stream(options_for("byte", earlier, {(dir / "good.jsonl").string()}, "jsonl"));
  const auto before = files_in(earlier);
  const auto earlier_shard = read_text(earlier / "train-00000.bin");
  auto into_earlier = jsonl("notjson2.jsonl.gz", "{\"text\": \"unterminated");
  into_earlier.out_dir = earlier;
  EXPECT_THROW(prepare_stream(into_earlier), InputError);
  EXPECT_EQ(files_in(earlier), before);
  EXPECT_EQ(read_text(earlier / "train-00000.bin"), earlier_shard);

  // Missing input, and an output directory that cannot be created or written.
  expect_bad_input(options_for("gpt2", dir / "out-missing", {(dir / "nowhere.txt").string()}), "nowhere.txt",
                   "cannot open");
  write_text(dir / "a-file", "x");
  expect_bad_input(options_for("byte", dir / "a-file" / "out", {(dir / "latin1.txt").string()}),
                   (dir / "a-file" / "out").string(), "cannot create the output directory");
  std::filesystem::remove_all(dir);
}

// --- SentencePiece: a model the test trains itself ------------------------------------------------------

TEST(PrepareStream, SentencePieceModelTrainedHere) {
  const auto dir = scratch_dir("spm");
  const auto documents = sample_documents(40);
  std::string corpus;
  for (const auto& text : documents) corpus += text + "\n";
  write_text(dir / "corpus.txt", corpus);
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (dir / "corpus.txt").string() + " --model_prefix=" + (dir / "tiny").string() +
      " --vocab_size=400 --model_type=bpe --byte_fallback=true --character_coverage=1.0 --minloglevel=2"
      " --num_threads=1");
  ASSERT_TRUE(status.ok()) << status.ToString();
  write_text(dir / "docs.jsonl", jsonl_of(documents));
  const std::string name = "sentencepiece:" + (dir / "tiny.model").string();
  const auto summary =
      prepare_stream(options_for(name, dir / "out", {(dir / "docs.jsonl").string()}, "jsonl"));
  EXPECT_EQ(summary.documents, 40u);
  const ShardSet train((dir / "out").string(), "train");
  EXPECT_EQ(train.tokenizer(), "sentencepiece");
  EXPECT_EQ(train.vocab_size(), 400);
  const auto tokenizer = make_prepare_tokenizer(name);
  const auto eos = tokenizer->document_separator();
  ASSERT_EQ(eos.size(), 1u);
  const auto ids = tokens_of(dir / "out", "train");
  const auto val = tokens_of(dir / "out", "val");
  EXPECT_EQ(static_cast<std::size_t>(std::count(ids.begin(), ids.end(), eos[0]) +
                                     std::count(val.begin(), val.end(), eos[0])),
            40u);  // one EOS per document
  // The first train document decodes back to one of the documents, up to whitespace (SentencePiece's
  // default normalization folds newlines and runs of spaces).
  const auto squeeze = [](std::string text) {
    std::erase_if(text, [](unsigned char c) { return std::isspace(c) != 0; });
    return text;
  };
  const auto first_end = std::find(ids.begin(), ids.end(), eos[0]);
  const std::string first = squeeze(tokenizer->decode(std::vector<TokenId>(ids.begin(), first_end)));
  EXPECT_TRUE(std::any_of(documents.begin(), documents.end(), [&](const auto& d) {
    return squeeze(d) == first;
  })) << first.substr(0, 200);
  std::filesystem::remove_all(dir);
}

// --- shards: uint32, version 1, sets ---------------------------------------------------------------------

TEST(ShardFormat, Uint32TokensRoundTrip) {
  const auto dir = scratch_dir("u32");
  std::vector<TokenId> tokens;
  for (TokenId i = 0; i < 1000; ++i) tokens.push_back((i * 7919u) % 128'000u);
  tokens.push_back(127'999);
  write_shard(dir / "big.bin", "sentencepiece", tokens, 128'000);
  const Shard shard(dir / "big.bin");
  EXPECT_EQ(shard.token_width(), 4u);
  EXPECT_EQ(shard.vocab_size(), 128'000);
  EXPECT_EQ(shard.read(0, shard.size()), tokens);
  EXPECT_EQ(std::filesystem::file_size(dir / "big.bin"), 64u + 4u * tokens.size());
  tokens.push_back(128'000);  // outside the vocabulary
  EXPECT_THROW(write_shard(dir / "bad.bin", "sentencepiece", tokens, 128'000), InputError);
  // A small vocabulary keeps two bytes a token.
  write_shard(dir / "small.bin", "sentencepiece", std::vector<TokenId>{1, 2, 299}, 300);
  EXPECT_EQ(Shard(dir / "small.bin").token_width(), 2u);
  std::filesystem::remove_all(dir);
}

TEST(ShardFormat, VersionOneShardsStillRead) {
  const auto dir = scratch_dir("v1");
  const std::vector<std::uint16_t> tokens = {5, 6, 50256, 7};
  write_shard(dir / "v2.bin", "gpt2", tokens);
  // A version-1 file: the same layout with version 1 and zeros where version 2 has width and vocabulary.
  std::string bytes = read_text(dir / "v2.bin");
  const std::uint32_t one = 1;
  bytes.replace(8, 4, reinterpret_cast<const char*>(&one), 4);
  bytes.replace(32, 8, std::string(8, '\0'));
  write_text(dir / "v1.bin", bytes);
  const Shard shard(dir / "v1.bin");
  EXPECT_EQ(shard.version(), 1u);
  EXPECT_EQ(shard.tokenizer(), "gpt2");
  EXPECT_EQ(shard.vocab_size(), 50257);
  EXPECT_EQ(shard.read(0, 4), (std::vector<TokenId>{5, 6, 50256, 7}));
  std::filesystem::remove_all(dir);
}

// Three shards whose tokens say which shard they are: windows must come from all three, never straddle
// two, and be the same on every call.
TEST(ShardSet, WindowsComeFromEveryShardDeterministicallyAndNeverStraddle) {
  const auto dir = scratch_dir("set");
  const std::size_t sizes[] = {3000, 500, 1500};
  for (std::size_t s = 0; s < 3; ++s) {
    char name[32];
    std::snprintf(name, sizeof name, "train-%05zu.bin", s);
    write_shard(dir / name, "byte", std::vector<TokenId>(sizes[s], static_cast<TokenId>(s + 1)));
  }
  write_shard(dir / "val-00000.bin", "byte", std::vector<TokenId>(10, 9));
  const ShardSet set(dir.string(), "train");
  ASSERT_EQ(set.shard_count(), 3u);
  EXPECT_EQ(set.size(), 5000u);
  const std::size_t window = 129;
  std::size_t per_shard[3] = {0, 0, 0};
  for (int step = 0; step < 200; ++step) {
    for (int sequence = 0; sequence < 4; ++sequence) {
      const auto place = set.training_window(11, step, sequence, window);
      const auto again = set.training_window(11, step, sequence, window);
      ASSERT_EQ(place.shard, again.shard);
      ASSERT_EQ(place.offset, again.offset);
      const auto& shard = set.shard(place.shard);
      ASSERT_LE(place.offset + window, shard.size());
      ++per_shard[place.shard];
    }
  }
  // Windows in proportion to each shard's window starts (2872 : 372 : 1372 of 4616), within noise.
  EXPECT_NEAR(per_shard[0] / 800.0, 2872.0 / 4616, 0.06);
  EXPECT_NEAR(per_shard[1] / 800.0, 372.0 / 4616, 0.04);
  EXPECT_NEAR(per_shard[2] / 800.0, 1372.0 / 4616, 0.06);

  // Named by a glob, or by the single-file name prepare-data no longer writes: the same set.
  const ShardSet by_glob((dir / "train-*.bin").string(), "train");
  const ShardSet by_old_name((dir / "train.bin").string(), "train");
  EXPECT_EQ(by_glob.shard_count(), 3u);
  EXPECT_EQ(by_old_name.shard_count(), 3u);
  const auto a = by_glob.training_window(3, 4, 5, window), b = set.training_window(3, 4, 5, window);
  EXPECT_EQ(a.shard, b.shard);
  EXPECT_EQ(a.offset, b.offset);

  // Contiguous eval windows run shard after shard, each inside one shard.
  const std::size_t stride = 128;
  const auto count = set.contiguous_windows(stride, window);
  EXPECT_EQ(count, (3000 - 129) / 128 + 1 + (500 - 129) / 128 + 1 + (1500 - 129) / 128 + 1);
  std::size_t last_shard = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const auto place = set.contiguous_window(i, stride, window);
    EXPECT_GE(place.shard, last_shard);
    EXPECT_LE(place.offset + window, set.shard(place.shard).size());
    last_shard = place.shard;
  }
  EXPECT_EQ(last_shard, 2u);

  // A directory without this role's shards, and a glob matching nothing, are bad input.
  EXPECT_THROW(ShardSet((dir / "none-*.bin").string(), "train"), InputError);
  std::filesystem::create_directories(dir / "empty");
  EXPECT_THROW(ShardSet((dir / "empty").string(), "val"), InputError);
  std::filesystem::remove_all(dir);
}

// One shard: the set reads exactly the windows the single-file trainer read.
TEST(ShardSet, OneShardKeepsTheSingleFileWindows) {
  const auto dir = scratch_dir("one");
  write_shard(dir / "train.bin", "byte", std::vector<TokenId>(1000, 65));
  const ShardSet set((dir / "train.bin").string(), "train");
  for (int step = 0; step < 20; ++step) {
    const auto place = set.training_window(7, step, 1, 129);
    EXPECT_EQ(place.shard, 0u);
    EXPECT_EQ(place.offset, training_window_offset(7, step, 1, 1000, 129));
  }
  std::filesystem::remove_all(dir);
}

// --- bounded memory ---------------------------------------------------------------------------------------

std::size_t peak_rss_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}

// A 300 MB gzip input (random text, so it hardly compresses) streams through in bounded memory. The
// preparation runs in a child process so that its VmHWM is its own.
TEST(PrepareStream, LargeCompressedInputInBoundedMemory) {
  const auto dir = scratch_dir("large");
  const auto input = dir / "big.jsonl.gz";
  {
    gzFile out = gzopen(input.c_str(), "wb1");
    ASSERT_NE(out, nullptr);
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?()-";
    std::uint64_t state = 42;
    std::string line;
    while (static_cast<std::uint64_t>(gzoffset(out)) < (300ull << 20)) {
      for (int l = 0; l < 64; ++l) {
        line = "{\"text\":\"";
        for (int i = 0; i < 8192; ++i) {
          state = state * 6364136223846793005ULL + 1442695040888963407ULL;
          line += alphabet[(state >> 33) % (sizeof alphabet - 1)];
        }
        line += "\"}\n";
        gzwrite(out, line.data(), static_cast<unsigned>(line.size()));
      }
    }
    gzclose(out);
  }
  const auto compressed = std::filesystem::file_size(input);
  ASSERT_GE(compressed, 300ull << 20);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const auto started = std::chrono::steady_clock::now();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    std::size_t result[2] = {0, 0};
    try {
      auto options = options_for("byte", dir / "out", {input.string()}, "jsonl");
      options.threads = 2;
      options.val_fraction = 0.01;
      options.shard_tokens = 100'000'000;
      const auto summary = prepare_stream(options);
      result[0] = summary.input_bytes;
      result[1] = peak_rss_kb();
    } catch (...) {
    }
    if (::write(pipe_fds[1], result, sizeof result) != sizeof result) _exit(2);
    _exit(0);
  }
  ::close(pipe_fds[1]);
  std::size_t result[2] = {0, 0};
  ASSERT_EQ(::read(pipe_fds[0], result, sizeof result), static_cast<ssize_t>(sizeof result));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_GT(result[0], compressed) << "the preparation failed";
  std::printf("300 MB test: %.0f MB compressed, %.0f MB of JSONL, peak RSS %.1f MB, %.1f s\n",
              compressed / 1e6, result[0] / 1e6, result[1] / 1024.0, seconds);
  EXPECT_LT(result[1], 256u * 1024u) << "peak RSS " << result[1] << " kB";
  EXPECT_GE(tokens_of(dir / "out", "val").size(), 8192u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moesweep::trainer
