// Streaming `prepare-data`: inputs (plain, .gz, .zst; text or JSONL) → numbered token shards.
//
// One ordered pipeline, so the output never depends on the thread count:
//   reader (1 thread)   decompresses, cuts documents into batches of about chunk_bytes, numbers them,
//                       decides each document's split (train/val) from its text's hash;
//   workers (N threads) tokenize batches, each with its own tokenizer clone;
//   writer (caller)     takes batches strictly by number and appends their tokens to the shards.
// At most 2·N + 2 batches (about chunk_bytes of text each) exist at once: the reader waits for the
// writer, which bounds memory whatever the input size.
#include <fcntl.h>
#include <glob.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/file_io.h"
#include "moesweep/trainer/prepare.h"
#include "shard_format.h"

namespace moesweep::trainer {
namespace {

// --- inputs ------------------------------------------------------------------------------------------

bool has_glob_characters(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

// Each input in the order given; a directory's regular files (recursively) and a glob's matches in name
// order, so the same command always reads the same bytes in the same order.
std::vector<std::filesystem::path> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::filesystem::path> files;
  for (const auto& input : inputs) {
    std::error_code error;
    if (std::filesystem::is_directory(input, error)) {
      std::vector<std::filesystem::path> found;
      for (const auto& entry : std::filesystem::recursive_directory_iterator(input, error)) {
        if (entry.is_regular_file()) found.push_back(entry.path());
      }
      if (error) throw InputError(input + ": cannot list the directory: " + error.message());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw InputError(input + ": the directory holds no files");
      files.insert(files.end(), found.begin(), found.end());
    } else if (!std::filesystem::exists(input, error) && has_glob_characters(input)) {
      glob_t matches{};
      const int rc = ::glob(input.c_str(), 0, nullptr, &matches);
      std::vector<std::filesystem::path> found;
      for (std::size_t i = 0; rc == 0 && i < matches.gl_pathc; ++i) found.emplace_back(matches.gl_pathv[i]);
      ::globfree(&matches);
      if (found.empty()) throw InputError(input + ": no file matches this pattern");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.emplace_back(input);
    }
  }
  if (files.empty()) throw InputError("prepare-data: no input files");
  return files;
}

// A file's decompressed bytes, read in pieces: plain, gzip (.gz, concatenated members too) or
// Zstandard (.zst), by the file name's extension.
class InputStream {
 public:
  explicit InputStream(const std::filesystem::path& path) : path_(path) {
    const auto extension = path.extension().string();
    kind_ = extension == ".gz" ? Kind::gzip : extension == ".zst" ? Kind::zstd : Kind::plain;
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr)
      throw InputError(path.string() + ": cannot open the text file: " + std::strerror(errno));
    if (kind_ == Kind::gzip) {
      zlib_ = std::make_unique<z_stream>();
      std::memset(zlib_.get(), 0, sizeof(z_stream));
      if (inflateInit2(zlib_.get(), 15 + 32) != Z_OK) throw std::runtime_error("zlib: inflateInit2 failed");
    } else if (kind_ == Kind::zstd) {
      zstd_ = ZSTD_createDStream();
      if (zstd_ == nullptr) throw std::runtime_error("zstd: cannot create a decompression stream");
    }
    raw_.resize(kRawBuffer);
  }
  ~InputStream() {
    if (zlib_) inflateEnd(zlib_.get());
    if (zstd_ != nullptr) ZSTD_freeDStream(zstd_);
    if (file_ != nullptr) std::fclose(file_);
  }
  InputStream(const InputStream&) = delete;
  InputStream& operator=(const InputStream&) = delete;

  // Up to `size` decompressed bytes into `out`; 0 at the end. InputError for corrupt or truncated data.
  std::size_t read(char* out, std::size_t size) {
    if (kind_ == Kind::plain) {
      const std::size_t n = std::fread(out, 1, size, file_);
      if (n < size && std::ferror(file_)) fail(std::string("read error: ") + std::strerror(errno));
      compressed_read_ += n;
      return n;
    }
    std::size_t produced = 0;
    while (produced < size) {
      if (raw_begin_ == raw_end_ && !raw_eof_) refill();
      if (kind_ == Kind::gzip) {
        if (raw_begin_ == raw_end_ && raw_eof_) {
          if (!member_done_) fail("corrupt gzip data (truncated)");
          break;
        }
        if (member_done_) {  // another gzip member follows the last one
          inflateReset(zlib_.get());
          member_done_ = false;
        }
        zlib_->next_in = reinterpret_cast<Bytef*>(raw_.data() + raw_begin_);
        zlib_->avail_in = static_cast<uInt>(raw_end_ - raw_begin_);
        zlib_->next_out = reinterpret_cast<Bytef*>(out + produced);
        zlib_->avail_out = static_cast<uInt>(size - produced);
        const int rc = inflate(zlib_.get(), Z_NO_FLUSH);
        const std::size_t consumed = (raw_end_ - raw_begin_) - zlib_->avail_in;
        raw_begin_ += consumed;
        produced = size - zlib_->avail_out;
        if (rc == Z_STREAM_END) {
          member_done_ = true;
        } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && consumed == 0 && produced == size)) {
          fail(std::string("corrupt gzip data (") + (zlib_->msg != nullptr ? zlib_->msg : zError(rc)) + ")");
        }
      } else {
        if (raw_begin_ == raw_end_ && raw_eof_) {
          if (zstd_pending_ != 0) fail("corrupt zstd data (truncated)");
          break;
        }
        ZSTD_inBuffer in{raw_.data() + raw_begin_, raw_end_ - raw_begin_, 0};
        ZSTD_outBuffer outbuf{out + produced, size - produced, 0};
        const std::size_t rc = ZSTD_decompressStream(zstd_, &outbuf, &in);
        if (ZSTD_isError(rc)) fail(std::string("corrupt zstd data (") + ZSTD_getErrorName(rc) + ")");
        zstd_pending_ = rc;
        raw_begin_ += in.pos;
        produced += outbuf.pos;
      }
    }
    return produced;
  }

  std::uint64_t compressed_read() const { return compressed_read_; }

 private:
  enum class Kind { plain, gzip, zstd };
  static constexpr std::size_t kRawBuffer = 1u << 20;

  [[noreturn]] void fail(const std::string& what) const { throw InputError(path_.string() + ": " + what); }

  void refill() {
    raw_begin_ = 0;
    raw_end_ = std::fread(raw_.data(), 1, raw_.size(), file_);
    if (raw_end_ < raw_.size()) {
      if (std::ferror(file_)) fail(std::string("read error: ") + std::strerror(errno));
      raw_eof_ = true;
    }
    compressed_read_ += raw_end_;
  }

  std::filesystem::path path_;
  Kind kind_ = Kind::plain;
  std::FILE* file_ = nullptr;
  std::vector<char> raw_;
  std::size_t raw_begin_ = 0, raw_end_ = 0;
  bool raw_eof_ = false;
  std::unique_ptr<z_stream> zlib_;
  bool member_done_ = false;
  ZSTD_DStream* zstd_ = nullptr;
  std::size_t zstd_pending_ = 0;
  std::uint64_t compressed_read_ = 0;
};

// --- batches ------------------------------------------------------------------------------------------

// A piece of one document's text: a whole JSONL document, or a part of a text-format file.
struct Fragment {
  std::size_t begin = 0, size = 0;  // in Batch::text
  std::uint32_t file = 0;           // index into the input files
  std::uint64_t line = 0;           // 1-based line of the fragment's first byte in the decompressed stream
  bool val = false;                 // the document's split
  bool ends_document = false;       // the separator follows this fragment
};

struct Batch {
  std::uint64_t number = 0;
  std::string text;
  std::vector<Fragment> fragments;
  std::string error;                    // set: the pipeline stops with this message at this batch
  std::vector<TokenId> tokens;          // the workers' output, fragment after fragment
  std::vector<std::size_t> token_ends;  // per fragment, the end of its ids in `tokens`
  std::uint64_t input_bytes = 0;        // decompressed bytes behind this batch (progress)
  std::size_t documents = 0, val_documents = 0;
};

// A document goes to val when its hash falls in the lowest val_fraction of the 64-bit range.
bool held_out(std::string_view text, double val_fraction) {
  const std::uint64_t hash = checksum64(text.data(), text.size());
  return static_cast<double>(hash >> 11) * 0x1p-53 < val_fraction;
}

// Where a text-format document may be cut without changing its tokens: just after a '\n' that is
// followed by a non-space byte. Every pre-tokenizer of GPT-2 ends a piece there (no pattern continues
// a whitespace run into a non-space, and ` ?\p{L}+` takes only a literal space), and the byte tokenizer
// does not care. SentencePiece encodes the parts separately, which the README states.
std::size_t safe_cut(std::string_view text) {
  for (std::size_t i = text.size(); i >= 2; --i) {
    const char next = text[i - 1];
    if (text[i - 2] == '\n' && next != ' ' && next != '\n' && next != '\t' && next != '\r' && next != '\f' &&
        next != '\v')
      return i - 1;
  }
  return 0;
}

std::size_t count_lines(std::string_view text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

// Offset of the first byte that breaks UTF-8 in `text`, or npos.
std::size_t first_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (std::size_t i = 0; i < text.size();) {
    const unsigned c = s[i];
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return i;
    }
    for (std::size_t k = 1; k <= n; ++k) {
      if (i + k >= text.size() || (s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    const std::uint32_t minimum[] = {0, 0x80, 0x800, 0x10000};
    if (cp < minimum[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return std::string_view::npos;
}

// Thrown into the reader when the writer has stopped the pipeline (an error elsewhere).
struct Stopped {};

// --- the reader ------------------------------------------------------------------------------------------

class Reader {
 public:
  Reader(const StreamOptions& options, const std::vector<std::filesystem::path>& files,
         std::function<void(Batch&&)> emit, std::atomic<std::uint64_t>& compressed_read)
      : options_(options), files_(files), emit_(std::move(emit)), compressed_read_(compressed_read) {}

  void run() {
    try {
      for (std::uint32_t f = 0; f < files_.size(); ++f) {
        InputStream stream(files_[f]);
        if (options_.format == "jsonl") {
          read_jsonl(f, stream);
        } else {
          read_text(f, stream);
        }
        compressed_done_ += stream.compressed_read();
        compressed_read_ = compressed_done_;
      }
      flush();
    } catch (const Stopped&) {
      return;
    } catch (const std::exception& e) {
      try {
        flush();
        batch_.error = e.what();
        emit_(std::move(batch_));
      } catch (const Stopped&) {
      }
    }
  }

 private:
  void add(std::string_view text, std::uint32_t file, std::uint64_t line, bool val, bool ends_document,
           bool starts_document) {
    Fragment fragment{batch_.text.size(), text.size(), file, line, val, ends_document};
    batch_.text.append(text);
    batch_.fragments.push_back(fragment);
    if (starts_document) {
      ++batch_.documents;
      batch_.val_documents += val ? 1 : 0;
    }
    if (batch_.text.size() >= options_.chunk_bytes) flush();
  }

  void flush() {
    if (batch_.fragments.empty()) return;
    batch_.number = next_number_++;
    emit_(std::move(batch_));
    batch_ = Batch{};
  }

  // Refills `buffer` from `stream` after keeping its unconsumed tail; false at the end of the stream.
  bool refill(InputStream& stream, std::string& buffer, std::size_t& begin, std::uint64_t& decompressed) {
    buffer.erase(0, begin);
    begin = 0;
    const std::size_t old = buffer.size();
    buffer.resize(old + kReadPiece);
    const std::size_t n = stream.read(buffer.data() + old, kReadPiece);
    buffer.resize(old + n);
    batch_.input_bytes += n;
    decompressed += n;
    compressed_read_ = compressed_done_ + stream.compressed_read();
    return n > 0;
  }

  void read_jsonl(std::uint32_t file, InputStream& stream) {
    const std::string name = files_[file].string();
    std::string buffer;
    std::size_t begin = 0;
    std::uint64_t line = 0, decompressed = 0;
    bool more = true;
    while (true) {
      const auto newline = buffer.find('\n', begin);
      std::string_view text;
      if (newline == std::string::npos) {
        if (more) {
          more = refill(stream, buffer, begin, decompressed);
          continue;
        }
        if (begin == buffer.size()) break;
        text = std::string_view(buffer).substr(begin);  // a last line without a newline
        begin = buffer.size();
      } else {
        text = std::string_view(buffer).substr(begin, newline - begin);
        begin = newline + 1;
      }
      ++line;
      // A UTF-8 byte order mark (Windows tools write one) is not part of the first object.
      if (line == 1 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
      if (text.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank lines carry nothing
      const std::string where = name + ":" + std::to_string(line) + ": ";
      simdjson::dom::element document;
      if (const auto error = parser_.parse(text.data(), text.size(), true).get(document)) {
        throw InputError(where + "not valid JSON (" + simdjson::error_message(error) + ")");
      }
      std::string_view value;
      if (document.type() != simdjson::dom::element_type::OBJECT ||
          document[options_.text_key].get_string().get(value) != simdjson::SUCCESS) {
        throw InputError(where + "no \"" + options_.text_key + "\" string field");
      }
      if (value.empty()) continue;
      add(value, file, line, held_out(value, options_.val_fraction), true, true);
    }
  }

  void read_text(std::uint32_t file, InputStream& stream) {
    std::string buffer;
    std::size_t begin = 0;
    std::uint64_t line = 1, decompressed = 0;
    bool more = true, first = true, val = false;
    while (more || begin < buffer.size()) {
      if (more && buffer.size() - begin < options_.chunk_bytes) {
        more = refill(stream, buffer, begin, decompressed);
        continue;
      }
      std::string_view rest = std::string_view(buffer).substr(begin);
      std::size_t cut = rest.size();
      if (more) {
        // Cut at a safe place in the first chunk; without one, look further (a few chunks), then cut
        // at a UTF-8 character boundary as a last resort.
        cut = safe_cut(rest.substr(0, options_.chunk_bytes));
        if (cut == 0 && rest.size() < 4 * options_.chunk_bytes) {
          more = refill(stream, buffer, begin, decompressed);
          continue;
        }
        if (cut == 0) cut = safe_cut(rest);
        if (cut == 0) {  // no newline at all: cut before a UTF-8 lead byte
          cut = rest.size() - 1;
          while (cut > 0 && (static_cast<unsigned char>(rest[cut]) & 0xC0) == 0x80) --cut;
          if (cut == 0) cut = rest.size();
        }
      }
      const std::string_view text = rest.substr(0, cut);
      if (first) val = held_out(text, options_.val_fraction);
      const bool last = !more && cut == rest.size();
      add(text, file, line, val, last, first);
      first = false;
      line += count_lines(text);
      begin += cut;
    }
  }

  static constexpr std::size_t kReadPiece = 1u << 20;

  const StreamOptions& options_;
  const std::vector<std::filesystem::path>& files_;
  std::function<void(Batch&&)> emit_;
  std::atomic<std::uint64_t>& compressed_read_;
  std::uint64_t compressed_done_ = 0;
  simdjson::dom::parser parser_;
  Batch batch_;
  std::uint64_t next_number_ = 0;
};

// --- the shard writer ----------------------------------------------------------------------------------

// Appends tokens to ROLE-NNNNN.bin shards of at most shard_tokens tokens each, under temporary names
// until publish(). The destructor removes every temporary file not published.
class ShardWriter {
 public:
  ShardWriter(std::filesystem::path dir, std::string role, const Tokenizer& tokenizer,
              std::size_t shard_tokens)
      : dir_(std::move(dir)),
        role_(std::move(role)),
        tokenizer_(tokenizer.name()),
        vocab_(tokenizer.vocab_size()),
        width_(detail::token_width_for(vocab_)),
        shard_tokens_(shard_tokens) {}
  ~ShardWriter() {
    if (fd_ >= 0) ::close(fd_);
    for (const auto& [temporary, final_path] : written_) ::unlink(temporary.c_str());
  }
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void append(std::span<const TokenId> tokens) {
    while (!tokens.empty()) {
      if (fd_ < 0) open_next();
      const std::size_t take = std::min(tokens.size(), shard_tokens_ - count_);
      for (const auto id : tokens.first(take)) {
        if (width_ == 2) {
          const auto narrow = static_cast<std::uint16_t>(id);
          buffer_.append(reinterpret_cast<const char*>(&narrow), 2);
        } else {
          buffer_.append(reinterpret_cast<const char*>(&id), 4);
        }
      }
      count_ += take;
      total_ += take;
      tokens = tokens.subspan(take);
      if (buffer_.size() >= kBufferBytes) flush_buffer();
      if (count_ == shard_tokens_) close_current();
    }
  }

  // Closes the last shard; the files stay temporary until publish().
  void finish() {
    if (fd_ >= 0) close_current();
  }

  // Renames every shard to its final name and removes older ROLE-NNNNN.bin beyond the new last one, and
  // an older single-file ROLE.bin: a config naming DIR/ROLE.bin would otherwise load the old data.
  std::vector<std::filesystem::path> publish() {
    std::vector<std::filesystem::path> finals;
    for (const auto& [temporary, final_path] : written_) {
      if (::rename(temporary.c_str(), final_path.c_str()) != 0)
        throw InputError(final_path.string() +
                         ": cannot rename the shard into place: " + std::strerror(errno));
      finals.push_back(final_path);
    }
    written_.clear();
    for (std::size_t index = finals.size();; ++index) {
      const auto stale = shard_path(index);
      if (::unlink(stale.c_str()) != 0) break;
    }
    ::unlink((dir_ / (role_ + ".bin")).c_str());
    return finals;
  }

  std::size_t total() const { return total_; }

 private:
  static constexpr std::size_t kBufferBytes = 4u << 20;

  std::filesystem::path shard_path(std::size_t index) const {
    char name[32];
    std::snprintf(name, sizeof name, "-%05zu.bin", index);
    return dir_ / (role_ + name);
  }

  [[noreturn]] void fail(const std::string& what, const std::filesystem::path& path) const {
    throw InputError(path.string() + ": cannot " + what + ": " + std::strerror(errno));
  }

  void open_next() {
    const auto final_path = shard_path(written_.size());
    const std::filesystem::path temporary =
        final_path.string() + kTemporarySuffix + std::to_string(static_cast<long long>(::getpid()));
    fd_ = ::open(temporary.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("create the shard", temporary);
    written_.emplace_back(temporary, final_path);
    const detail::ShardHeader placeholder{};
    buffer_.assign(reinterpret_cast<const char*>(&placeholder), sizeof placeholder);
    count_ = 0;
  }

  void flush_buffer() {
    const char* bytes = buffer_.data();
    std::size_t left = buffer_.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, bytes, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("write the shard", written_.back().first);
      bytes += n;
      left -= static_cast<std::size_t>(n);
    }
    buffer_.clear();
  }

  // The checksum covers all token bytes and starts from their count, so it is computed once the shard
  // is complete, reading back the file just written (still in the page cache).
  void close_current() {
    flush_buffer();
    const auto& temporary = written_.back().first;
    const std::size_t bytes = count_ * width_;
    const std::uint64_t checksum = detail::checksum64_of_file(fd_, detail::kShardHeaderSize, bytes);
    const auto header = detail::make_shard_header(tokenizer_, vocab_, count_, checksum);
    if (::pwrite(fd_, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header))
      fail("write the shard header", temporary);
    if (::fsync(fd_) != 0) fail("fsync the shard", temporary);
    if (::close(fd_) != 0) fail("close the shard", temporary);
    fd_ = -1;
  }

  std::filesystem::path dir_;
  std::string role_, tokenizer_;
  std::int64_t vocab_;
  std::size_t width_;
  std::size_t shard_tokens_;
  int fd_ = -1;
  std::string buffer_;
  std::size_t count_ = 0, total_ = 0;
  std::vector<std::pair<std::filesystem::path, std::filesystem::path>> written_;  // temporary, final
};

// --- the pipeline --------------------------------------------------------------------------------------

// Tokenizes one batch; an error becomes the batch's error, naming the file and line.
void tokenize(Batch& batch, const Tokenizer& tokenizer, const std::vector<TokenId>& separator,
              const std::vector<std::filesystem::path>& files, bool check_utf8) {
  batch.token_ends.reserve(batch.fragments.size());
  for (const auto& fragment : batch.fragments) {
    const std::string_view text(batch.text.data() + fragment.begin, fragment.size);
    try {
      if (check_utf8) {
        if (const auto bad = first_invalid_utf8(text); bad != std::string_view::npos) {
          throw InputError(files[fragment.file].string() + ":" +
                           std::to_string(fragment.line + count_lines(text.substr(0, bad))) +
                           ": text is not valid UTF-8 (byte " + std::to_string(bad + 1) +
                           " of the line's chunk)");
        }
      }
      tokenizer.encode_into(text, batch.tokens);
    } catch (const std::exception& e) {
      const std::string message = e.what();
      batch.error =
          message.rfind(files[fragment.file].string() + ":", 0) == 0
              ? message
              : files[fragment.file].string() + ":" + std::to_string(fragment.line) + ": " + message;
      return;
    }
    if (fragment.ends_document) batch.tokens.insert(batch.tokens.end(), separator.begin(), separator.end());
    batch.token_ends.push_back(batch.tokens.size());
  }
  batch.text = std::string();  // the text is not needed any more: give its memory back early
}

std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, seconds));
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  return text;
}

}  // namespace

namespace {

StreamSummary prepare_stream_into_existing_dir(const StreamOptions& options, const Tokenizer& tokenizer,
                                               const std::vector<std::filesystem::path>& files,
                                               std::uint64_t total_compressed);

}  // namespace

StreamSummary prepare_stream(const StreamOptions& options) {
  if (!(options.val_fraction > 0.0 && options.val_fraction < 1.0))
    throw InputError("--val-fraction must be in (0, 1)");
  if (options.format != "text" && options.format != "jsonl")
    throw InputError("--format must be text or jsonl, not " + options.format);
  if (options.shard_tokens == 0) throw InputError("--shard-tokens must be positive");
  if (options.threads < 1) throw InputError("--threads must be at least 1");
  const auto tokenizer = make_prepare_tokenizer(options.tokenizer);
  const auto files = expand_inputs(options.inputs);
  std::uint64_t total_compressed = 0;
  for (const auto& file : files) {
    std::error_code error;
    const auto size = std::filesystem::file_size(file, error);
    if (error) throw InputError(file.string() + ": cannot open the text file: " + error.message());
    total_compressed += size;
  }

  std::error_code error;
  const bool created = !std::filesystem::exists(options.out_dir, error);
  std::filesystem::create_directories(options.out_dir, error);
  if (error || !std::filesystem::is_directory(options.out_dir))
    throw InputError(options.out_dir.string() + ": cannot create the output directory: " +
                     (error ? error.message() : "not a directory"));
  try {
    if (::access(options.out_dir.c_str(), W_OK) != 0)
      throw InputError(options.out_dir.string() +
                       ": the output directory is not writable: " + std::strerror(errno));
    return prepare_stream_into_existing_dir(options, *tokenizer, files, total_compressed);
  } catch (...) {
    // A failed run leaves nothing behind: its temporary shards are gone, and so is a directory it made.
    if (created) std::filesystem::remove(options.out_dir, error);
    throw;
  }
}

namespace {

StreamSummary prepare_stream_into_existing_dir(const StreamOptions& options, const Tokenizer& tokenizer_ref,
                                               const std::vector<std::filesystem::path>& files,
                                               std::uint64_t total_compressed) {
  const auto started = std::chrono::steady_clock::now();
  const Tokenizer* tokenizer = &tokenizer_ref;
  const auto separator = tokenizer->document_separator();
  const bool check_utf8 = tokenizer->name() == "gpt2";
  ShardWriter train(options.out_dir, "train", *tokenizer, options.shard_tokens);
  ShardWriter val(options.out_dir, "val", *tokenizer, options.shard_tokens);

  // Batches flow reader → `work` → workers → `done` (by number) → writer. `in_flight` counts batches
  // that exist anywhere in the pipeline; the reader waits while it is at the limit.
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<Batch> work;  // used as a FIFO: reader pushes at the back, workers pop at the front
  std::size_t work_front = 0;
  std::map<std::uint64_t, Batch> done;
  std::size_t in_flight = 0;
  bool reader_finished = false, stopping = false;
  const std::size_t limit = 2 * static_cast<std::size_t>(options.threads) + 2;
  std::atomic<std::uint64_t> compressed_read{0};

  auto emit = [&](Batch&& batch) {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return in_flight < limit || stopping; });
    if (stopping) throw Stopped{};
    ++in_flight;
    if (!batch.error.empty() && batch.fragments.empty()) {
      // A reader error: the writer reports it once every batch before it is written.
      done.emplace(std::numeric_limits<std::uint64_t>::max(), std::move(batch));
    } else {
      if (work_front > 0 && work_front == work.size()) {
        work.clear();
        work_front = 0;
      }
      work.push_back(std::move(batch));
    }
    changed.notify_all();
  };

  Reader reader(options, files, emit, compressed_read);
  std::thread reader_thread([&] {
    reader.run();
    std::lock_guard lock(mutex);
    reader_finished = true;
    changed.notify_all();
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < options.threads; ++t) {
    workers.emplace_back([&, own = tokenizer->clone()] {
      while (true) {
        Batch batch;
        {
          std::unique_lock lock(mutex);
          changed.wait(lock, [&] { return work_front < work.size() || reader_finished || stopping; });
          if (stopping || work_front == work.size()) return;
          batch = std::move(work[work_front++]);
        }
        tokenize(batch, *own, separator, files, check_utf8);
        std::lock_guard lock(mutex);
        done.emplace(batch.number, std::move(batch));
        changed.notify_all();
      }
    });
  }
  auto stop_all = [&] {
    {
      std::lock_guard lock(mutex);
      stopping = true;
      changed.notify_all();
    }
    reader_thread.join();
    for (auto& worker : workers) worker.join();
  };

  StreamSummary summary;
  const bool progress = options.progress;
  auto last_progress = started;
  std::uint64_t input_bytes = 0;
  try {
    for (std::uint64_t next = 0;; ++next) {
      Batch batch;
      {
        std::unique_lock lock(mutex);
        // The next batch in order, or the reader's error once every earlier batch is written.
        const auto ready = [&] {
          if (done.count(next) != 0) return true;
          const bool reader_error = done.count(std::numeric_limits<std::uint64_t>::max()) != 0;
          const bool all_read = reader_finished && work_front == work.size();
          return (reader_error || all_read) && in_flight == done.size() && done.count(next) == 0;
        };
        changed.wait(lock, ready);
        auto it = done.find(next);
        if (it == done.end()) it = done.find(std::numeric_limits<std::uint64_t>::max());
        if (it == done.end()) break;  // everything read and written
        batch = std::move(it->second);
        done.erase(it);
        --in_flight;
        changed.notify_all();
      }
      if (!batch.error.empty()) throw InputError(batch.error);
      std::size_t begin = 0;
      for (std::size_t i = 0; i < batch.fragments.size(); ++i) {
        const std::span<const TokenId> ids(batch.tokens.data() + begin, batch.token_ends[i] - begin);
        (batch.fragments[i].val ? val : train).append(ids);
        begin = batch.token_ends[i];
      }
      summary.documents += batch.documents;
      summary.val_documents += batch.val_documents;
      input_bytes += batch.input_bytes;
      if (progress) {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_progress > std::chrono::milliseconds(500)) {
          last_progress = now;
          const double seconds = std::chrono::duration<double>(now - started).count();
          const double fraction = total_compressed > 0 ? static_cast<double>(compressed_read.load()) /
                                                             static_cast<double>(total_compressed)
                                                       : 0.0;
          std::fprintf(stderr, "\rprepare-data: %5.1f%% read, %7.1f MB/s in, %6.2f M tokens/s, ETA %s   ",
                       100.0 * fraction, static_cast<double>(input_bytes) / seconds / 1e6,
                       static_cast<double>(train.total() + val.total()) / seconds / 1e6,
                       format_duration(fraction > 0 ? seconds * (1.0 - fraction) / fraction : 0.0).c_str());
          std::fflush(stderr);
        }
      }
    }
  } catch (...) {
    stop_all();
    throw;
  }
  stop_all();
  if (progress) std::fprintf(stderr, "\n");
  train.finish();
  val.finish();
  if (train.total() == 0 || val.total() == 0) {
    throw InputError("prepare-data: " + std::to_string(summary.documents) + " documents gave " +
                     std::to_string(train.total()) + " train and " + std::to_string(val.total()) +
                     " val tokens; both must be non-empty (more documents, or another --val-fraction)");
  }
  summary.train_shards = train.publish();
  summary.val_shards = val.publish();
  const int dir_fd = ::open(options.out_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {  // best effort: the renames themselves are atomic
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  summary.train_tokens = train.total();
  summary.val_tokens = val.total();
  summary.input_bytes = input_bytes;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return summary;
}

}  // namespace
}  // namespace moesweep::trainer
