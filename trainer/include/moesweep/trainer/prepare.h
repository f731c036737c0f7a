#pragma once
// Streaming `prepare-data` and the SentencePiece tokenizer: library moesweep_trainer_prepare. Debian's
// libsentencepiece carries its own protobuf-lite, which crashes at load time next to LibTorch's
// libprotobuf: link this library only into binaries without LibTorch (the moesweep CLI, its tests).
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "moesweep/trainer/data.h"

namespace moesweep::trainer {

// "sentencepiece": a SentencePiece model file. Its ids are the model's; documents end with its EOS id.
// InputError when the model cannot be loaded.
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& model);
// By name: byte, gpt2 or sentencepiece:MODEL_FILE. InputError for an unknown name.
std::unique_ptr<Tokenizer> make_prepare_tokenizer(const std::string& name);

// --- streaming preparation (prepare-data with input files) ------------------------------------------

struct StreamOptions {
  std::string tokenizer = "byte";  // byte, gpt2, sentencepiece:MODEL
  std::filesystem::path out_dir;
  std::vector<std::string> inputs;  // files, directories (recursed, name order) or globs
  std::string format = "text";      // text: one document per file; jsonl: one per line
  std::string text_key = "text";    // the JSONL field that holds a document's text
  double val_fraction = 0.01;
  std::size_t shard_tokens = 100'000'000;  // at most this many tokens per shard file
  int threads = 1;                         // tokenizer threads; the output does not depend on it
  std::size_t chunk_bytes = 1u << 20;      // input bytes per batch handed to a worker
  bool progress = false;                   // a progress line on stderr (the CLI: when it is a terminal)
};

struct StreamSummary {
  std::size_t documents = 0, val_documents = 0;
  std::size_t train_tokens = 0, val_tokens = 0;
  std::size_t input_bytes = 0;  // decompressed
  std::vector<std::filesystem::path> train_shards, val_shards;
  double seconds = 0;
};

// Streams the inputs into out_dir/train-NNNNN.bin and val-NNNNN.bin. A document goes to val when a
// 64-bit hash of its text (of its first chunk_bytes, for a longer text-format document) falls below
// val_fraction of the hash range: deterministic, independent of every other document, so adding inputs
// never moves an existing document. Documents end with tokenizer.document_separator(). Memory stays
// near (2·threads + 2) × chunk_bytes plus one write buffer, whatever the input size. Output is byte for
// byte the same for any thread count. Shards are written under temporary names and renamed only when
// everything succeeded: on any error no shard is left under a final name. Bad input (unreadable or
// corrupt file, a JSONL line that is not JSON or lacks text_key, invalid UTF-8 for gpt2, an unwritable
// out_dir) is an InputError naming the file and line (lines of the decompressed stream).
StreamSummary prepare_stream(const StreamOptions& options);

}  // namespace moesweep::trainer
