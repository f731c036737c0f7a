// `moesweep prepare-data --tokenizer byte|gpt2 --out DIR [FILES...]`: tokenizes text files (by default
// the embedded Brown corpus, POS tags stripped) into DIR/train.bin and DIR/val.bin token shards.
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"

namespace moesweep::cli {
namespace {

struct PrepareDataOptions {
  std::string tokenizer = "byte";
  std::string out;
  std::vector<std::string> files;
  double val_fraction = 0.1;
};

std::vector<trainer::Document> read_documents(const std::vector<std::string>& files) {
  std::vector<trainer::Document> documents;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw InputError(file + ": cannot open the text file");
    std::ostringstream content;
    content << in.rdbuf();
    documents.push_back({file, content.str()});
  }
  return documents;
}

void run_prepare_data(const PrepareDataOptions& options) {
  const auto tokenizer = trainer::make_tokenizer(options.tokenizer);
  const bool brown = options.files.empty();
  const auto documents = brown ? trainer::brown_corpus_documents() : read_documents(options.files);
  std::cerr << "prepare-data: tokenizing " << documents.size() << (brown ? " Brown corpus" : "")
            << " documents with the " << tokenizer->name() << " tokenizer\n";
  const auto summary = trainer::prepare_data(documents, *tokenizer, options.out, options.val_fraction);
  std::cout << "wrote " << options.out << "/train.bin (" << summary.train_tokens << " tokens) and "
            << options.out << "/val.bin (" << summary.val_tokens << " tokens";
  if (summary.val_documents > 0) std::cout << ", " << summary.val_documents << " held-out documents";
  std::cout << ")\n";
}

}  // namespace

void add_prepare_data(CLI::App& app) {
  auto options = std::make_shared<PrepareDataOptions>();
  auto* command = app.add_subcommand(
      "prepare-data",
      "Tokenize text files (default: the embedded Brown corpus) into train.bin and val.bin shards");
  command->add_option("--tokenizer", options->tokenizer, "byte (256 symbols) or gpt2 (GPT-2 BPE, 50257)")
      ->check(CLI::IsMember({"byte", "gpt2"}))
      ->capture_default_str();
  command->add_option("--out", options->out, "output directory")->required();
  command
      ->add_option("--val-fraction", options->val_fraction, "fraction held out for val.bin (whole documents)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  command->add_option("files", options->files,
                      "UTF-8 text files (default: the Brown corpus in third_party_data)");
  command->callback([options] { run_prepare_data(*options); });
}

}  // namespace moesweep::cli
