// `moesweep prepare-data`: tokenizes text into token shards.
//   without inputs: the embedded Brown corpus (POS tags stripped) → DIR/train.bin and DIR/val.bin;
//   with inputs: files, directories or globs (plain, .gz, .zst; text or JSONL), streamed through a
//   multi-threaded tokenizer → DIR/train-NNNNN.bin and DIR/val-NNNNN.bin (format and naming in data.h).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "commands.h"
#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/prepare.h"

namespace moesweep::cli {
namespace {

struct PrepareDataOptions {
  trainer::StreamOptions stream;
  std::optional<double> val_fraction;
};

void check_tokenizer(const std::string& name) {
  if (name == "byte" || name == "gpt2" || (name.rfind("sentencepiece:", 0) == 0 && name.size() > 14)) return;
  throw InputError("--tokenizer: " + name + " not in {byte,gpt2} and not sentencepiece:MODEL");
}

// The Brown corpus default keeps its single-file layout (train.bin, val.bin; 10% held out), which the
// sweeps and study.sh name.
void prepare_brown(const PrepareDataOptions& options) {
  const auto tokenizer = trainer::make_tokenizer(options.stream.tokenizer);
  const auto documents = trainer::brown_corpus_documents();
  std::cerr << "prepare-data: tokenizing " << documents.size() << " Brown corpus documents with the "
            << tokenizer->name() << " tokenizer\n";
  const auto summary = trainer::prepare_data(documents, *tokenizer, options.stream.out_dir,
                                             options.val_fraction.value_or(0.1));
  const auto out = options.stream.out_dir.string();
  std::cout << "wrote " << out << "/train.bin (" << summary.train_tokens << " tokens) and " << out
            << "/val.bin (" << summary.val_tokens << " tokens";
  if (summary.val_documents > 0) std::cout << ", " << summary.val_documents << " held-out documents";
  std::cout << ")\n";
}

void run_prepare_data(const PrepareDataOptions& options) {
  check_tokenizer(options.stream.tokenizer);
  if (options.stream.inputs.empty()) {
    prepare_brown(options);
    return;
  }
  auto stream = options.stream;
  stream.val_fraction = options.val_fraction.value_or(0.01);
  stream.progress = ::isatty(STDERR_FILENO) != 0;
  const auto summary = trainer::prepare_stream(stream);
  const double tokens = static_cast<double>(summary.train_tokens + summary.val_tokens);
  std::printf(
      "wrote %zu train shards (%zu tokens) and %zu val shards (%zu tokens, %zu of %zu documents held out) to "
      "%s in %.1f s: %.2f M tokens/s, %.1f MB/s of text, threads: %d\n",
      summary.train_shards.size(), summary.train_tokens, summary.val_shards.size(), summary.val_tokens,
      summary.val_documents, summary.documents, stream.out_dir.c_str(), summary.seconds,
      tokens / summary.seconds / 1e6, static_cast<double>(summary.input_bytes) / summary.seconds / 1e6,
      stream.threads);
  // A SentencePiece run names its vocabulary (it sets N_act's 2·d·V and the model's embedding).
  if (stream.tokenizer.rfind("sentencepiece:", 0) == 0) {
    std::printf("train on them with [data] tokenizer = \"sentencepiece:%lld\"\n",
                static_cast<long long>(trainer::make_prepare_tokenizer(stream.tokenizer)->vocab_size()));
  }
}

}  // namespace

void add_prepare_data(CLI::App& app) {
  auto options = std::make_shared<PrepareDataOptions>();
  options->stream.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto* command = app.add_subcommand(
      "prepare-data",
      "Tokenize text into token shards: the embedded Brown corpus (train.bin, val.bin), or INPUTS streamed "
      "into train-NNNNN.bin and val-NNNNN.bin");
  command
      ->add_option("--tokenizer", options->stream.tokenizer,
                   "byte (256 symbols), gpt2 (GPT-2 BPE, 50257) or sentencepiece:MODEL_FILE")
      ->capture_default_str();
  command->add_option("--out", options->stream.out_dir, "output directory")->required();
  command->add_option("--format", options->stream.format, "text: one document per file; jsonl: one per line")
      ->check(CLI::IsMember({"text", "jsonl"}))
      ->capture_default_str();
  command->add_option("--text-key", options->stream.text_key, "the JSONL field holding a document's text")
      ->capture_default_str();
  command
      ->add_option("--val-fraction", options->val_fraction,
                   "fraction of documents held out for val (by a hash of their text; default 0.01, 0.1 for "
                   "the Brown corpus)")
      ->check(CLI::Validator(
          [](const std::string& text) {
            try {
              const double f = std::stod(text);
              if (f > 0.0 && f < 1.0) return std::string();
            } catch (const std::exception&) {
            }
            return "must be in (0, 1), got " + text;
          },
          "in (0, 1)"));
  command
      ->add_option("--shard-tokens", options->stream.shard_tokens, "at most this many tokens per shard file")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command
      ->add_option("--threads", options->stream.threads,
                   "tokenizer threads (the output does not depend on it)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  command->add_option("inputs", options->stream.inputs,
                      "files, directories or globs; .gz and .zst are decompressed (default: the Brown corpus "
                      "in third_party_data)");
  command->callback([options] { run_prepare_data(*options); });
}

}  // namespace moesweep::cli
