// SentencePiece models for prepare-data, through Debian's libsentencepiece. Kept in the
// moesweep_trainer_prepare library: that libsentencepiece carries its own copy of protobuf-lite, which
// crashes at load time next to LibTorch's libprotobuf, so no binary that links LibTorch may link it.
#include <sentencepiece_processor.h>

#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/prepare.h"

namespace moesweep::trainer {
namespace {

// A SentencePiece model through the library (Debian's libsentencepiece). The processor is immutable
// after loading and its Encode is const, so clones share it.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& model) {
    auto processor = std::make_shared<sentencepiece::SentencePieceProcessor>();
    const auto status = processor->Load(model.string());
    if (!status.ok())
      throw InputError(model.string() + ": cannot load the SentencePiece model: " + status.ToString());
    processor_ = std::move(processor);
  }
  explicit SentencePieceTokenizer(std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor)
      : processor_(std::move(processor)) {}

  std::string name() const override { return "sentencepiece"; }
  std::int64_t vocab_size() const override { return processor_->GetPieceSize(); }
  // The model's EOS (</s>, id 2 in the trainer's defaults); a model trained without one (eos_id −1)
  // gets a blank line, as the byte tokenizer does.
  std::vector<TokenId> document_separator() const override {
    if (processor_->eos_id() >= 0) return {static_cast<TokenId>(processor_->eos_id())};
    return encode("\n\n");
  }
  void encode_into(std::string_view text, std::vector<TokenId>& ids) const override {
    std::vector<int> pieces;
    const auto status = processor_->Encode(text, &pieces);
    if (!status.ok()) throw InputError("SentencePiece cannot encode the text: " + status.ToString());
    for (const int id : pieces) ids.push_back(static_cast<TokenId>(id));
  }
  std::string decode(std::span<const TokenId> ids) const override {
    std::vector<int> pieces(ids.begin(), ids.end());
    std::string text;
    processor_->Decode(pieces, &text).IgnoreError();
    return text;
  }
  std::unique_ptr<Tokenizer> clone() const override {
    return std::make_unique<SentencePieceTokenizer>(processor_);
  }

 private:
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& model) {
  return std::make_unique<SentencePieceTokenizer>(model);
}

std::unique_ptr<Tokenizer> make_prepare_tokenizer(const std::string& name) {
  constexpr std::string_view kSentencePiece = "sentencepiece:";
  if (name.rfind(kSentencePiece, 0) == 0 && name.size() > kSentencePiece.size())
    return make_sentencepiece_tokenizer(name.substr(kSentencePiece.size()));
  if (name == "byte" || name == "gpt2") return make_tokenizer(name);
  throw InputError("unknown tokenizer '" + name + "' (expected byte, gpt2 or sentencepiece:MODEL)");
}

}  // namespace moesweep::trainer
