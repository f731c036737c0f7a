// Token shards: writing (atomic) and reading (memory-mapped, verified), and sets of shards. Format and
// naming in data.h.
#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/file_io.h"
#include "moesweep/trainer/run_config.h"
#include "shard_format.h"

namespace moesweep::trainer {
namespace detail {

const char* const kTokenizerNames[] = {"byte", "gpt2", "sentencepiece"};

std::uint32_t tokenizer_code(const std::string& name) {
  for (std::uint32_t code = 0; code < std::size(kTokenizerNames); ++code) {
    if (name == kTokenizerNames[code]) return code;
  }
  throw InputError("unknown tokenizer '" + name + "' (expected byte, gpt2 or sentencepiece)");
}

std::int64_t shard_vocabulary(const std::string& tokenizer, std::int64_t vocab_size) {
  tokenizer_code(tokenizer);
  const std::int64_t own = vocab_size_of(tokenizer);
  if (own > 0) {
    if (vocab_size != 0 && vocab_size != own) {
      throw InputError("the " + tokenizer + " tokenizer has " + std::to_string(own) + " ids, not " +
                       std::to_string(vocab_size));
    }
    return own;
  }
  if (vocab_size <= 0 || vocab_size > (std::int64_t{1} << 32) - 1)
    throw InputError("a " + tokenizer + " shard needs its vocabulary size");
  return vocab_size;
}

}  // namespace detail

namespace {

using namespace detail;

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::uint64_t window_hash(std::uint64_t seed, std::int64_t step, std::int64_t sequence) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<std::uint64_t>(step)) ^
                    static_cast<std::uint64_t>(sequence));
}

template <typename Token>
void check_vocabulary(const std::filesystem::path& path, const std::string& tokenizer, std::int64_t vocab,
                      std::span<const Token> tokens) {
  for (const auto token : tokens) {
    if (static_cast<std::int64_t>(token) >= vocab) {
      throw InputError(path.string() + ": token " + std::to_string(token) + " outside the " + tokenizer +
                       " vocabulary");
    }
  }
}

}  // namespace

std::uint64_t checksum64(const void* data, std::size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::uint64_t h = 0x243F6A8885A308D3ULL ^ size;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    h = std::rotl(h ^ (word * 0x87C37B91114253D5ULL), 31) * 0x4CF5AD432745937FULL;
  }
  std::uint64_t tail = 0;
  for (std::size_t k = 0; i + k < size; ++k) tail |= static_cast<std::uint64_t>(bytes[i + k]) << (8 * k);
  return splitmix64(h ^ tail);
}

namespace detail {

// checksum64 of `size` bytes of a file from `offset`, read through a small buffer: mapping a whole
// shard would count its pages in the process's resident set.
std::uint64_t checksum64_of_file(int fd, std::uint64_t offset, std::uint64_t size) {
  std::uint64_t h = 0x243F6A8885A308D3ULL ^ size;
  std::vector<unsigned char> buffer(1u << 20);  // a multiple of 8: words never straddle two reads
  std::uint64_t done = 0;
  std::uint64_t tail = 0;
  while (done < size) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), size - done));
    std::size_t got = 0;
    while (got < want) {
      const ssize_t n = ::pread(fd, buffer.data() + got, want - got, static_cast<off_t>(offset + done + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error(std::string("cannot read back a shard: ") + std::strerror(errno));
      got += static_cast<std::size_t>(n);
    }
    std::size_t i = 0;
    for (; i + 8 <= got; i += 8) {
      std::uint64_t word;
      std::memcpy(&word, buffer.data() + i, 8);
      h = std::rotl(h ^ (word * 0x87C37B91114253D5ULL), 31) * 0x4CF5AD432745937FULL;
    }
    for (std::size_t k = 0; i + k < got; ++k) tail |= static_cast<std::uint64_t>(buffer[i + k]) << (8 * k);
    done += got;
  }
  return splitmix64(h ^ tail);
}

}  // namespace detail

namespace {

template <typename Token>
void write_shard_as(const std::filesystem::path& path, const std::string& tokenizer, std::int64_t vocab,
                    std::span<const Token> tokens) {
  check_vocabulary(path, tokenizer, vocab, tokens);
  const auto header =
      make_shard_header(tokenizer, vocab, tokens.size(), checksum64(tokens.data(), tokens.size_bytes()));
  write_file_atomically(path, {{&header, sizeof header}, {tokens.data(), tokens.size_bytes()}});
}

}  // namespace

void write_shard(const std::filesystem::path& path, const std::string& tokenizer,
                 std::span<const std::uint16_t> tokens) {
  write_shard_as(path, tokenizer, shard_vocabulary(tokenizer, 0), tokens);
}

void write_shard(const std::filesystem::path& path, const std::string& tokenizer,
                 std::span<const TokenId> tokens, std::int64_t vocab_size) {
  const auto vocab = shard_vocabulary(tokenizer, vocab_size);
  if (token_width_for(vocab) == 4) {
    write_shard_as(path, tokenizer, vocab, tokens);
    return;
  }
  check_vocabulary(path, tokenizer, vocab, tokens);  // before narrowing
  const std::vector<std::uint16_t> narrow(tokens.begin(), tokens.end());
  write_shard_as(path, tokenizer, vocab, std::span<const std::uint16_t>(narrow));
}

Shard::Shard(const std::filesystem::path& path) : path_(path) {
  const std::string name = path.string();
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(name + ": cannot open shard: " + std::strerror(errno));
  struct stat info {};
  const bool stat_ok = ::fstat(fd, &info) == 0;
  if (stat_ok && !S_ISREG(info.st_mode)) {  // mmap would say "No such device" about a directory
    ::close(fd);
    throw InputError(name + ": not a token shard (" +
                     (S_ISDIR(info.st_mode) ? "a directory" : "not a regular file") + ")");
  }
  if (!stat_ok || static_cast<std::size_t>(info.st_size) < kShardHeaderSize) {
    ::close(fd);
    throw InputError(name + ": truncated shard (shorter than its " + std::to_string(kShardHeaderSize) +
                     "-byte header)");
  }
  mapping_size_ = static_cast<std::size_t>(info.st_size);
  mapping_ = ::mmap(nullptr, mapping_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping_ == MAP_FAILED) {
    mapping_ = nullptr;
    throw InputError(name + ": cannot map shard: " + std::strerror(errno));
  }
  try {
    ShardHeader header;
    std::memcpy(&header, mapping_, sizeof header);
    if (std::memcmp(header.magic, kShardMagic, sizeof kShardMagic) != 0) {
      throw InputError(name +
                       ": not a moesweep token shard (wrong magic; write one with moesweep prepare-data)");
    }
    if (header.version != 1 && header.version != kShardVersion) {
      throw InputError(name + ": shard version " + std::to_string(header.version) + ", expected 1 or " +
                       std::to_string(kShardVersion));
    }
    version_ = header.version;
    if (header.tokenizer >= std::size(kTokenizerNames) || (version_ == 1 && header.tokenizer > 1)) {
      throw InputError(name + ": unknown tokenizer code " + std::to_string(header.tokenizer));
    }
    tokenizer_ = kTokenizerNames[header.tokenizer];
    if (version_ == 1) {
      width_ = 2;
      vocab_size_ = vocab_size_of(tokenizer_);
    } else {
      if (header.token_width != 2 && header.token_width != 4)
        throw InputError(name + ": token width " + std::to_string(header.token_width) + ", expected 2 or 4");
      width_ = header.token_width;
      try {
        vocab_size_ = shard_vocabulary(tokenizer_, header.vocab_size);
      } catch (const InputError& e) {
        throw InputError(name + ": " + e.what());
      }
      if (token_width_for(vocab_size_) > width_)
        throw InputError(name + ": a vocabulary of " + std::to_string(vocab_size_) + " needs 4-byte tokens");
    }
    const std::uint64_t expected_size = kShardHeaderSize + width_ * header.token_count;
    if (mapping_size_ != expected_size) {
      throw InputError(name + ": " + (mapping_size_ < expected_size ? "truncated" : "oversized") +
                       " shard: " + std::to_string(mapping_size_) + " bytes, the header says " +
                       std::to_string(expected_size));
    }
    size_ = static_cast<std::size_t>(header.token_count);
    tokens_ = static_cast<const char*>(mapping_) + kShardHeaderSize;
    if (checksum64(tokens_, size_ * width_) != header.checksum) {
      throw InputError(name + ": checksum mismatch (the shard is corrupt)");
    }
    if (width_ == 2) {
      check_vocabulary(path, tokenizer_, vocab_size_,
                       std::span(static_cast<const std::uint16_t*>(tokens_), size_));
    } else {
      check_vocabulary(path, tokenizer_, vocab_size_,
                       std::span(static_cast<const std::uint32_t*>(tokens_), size_));
    }
  } catch (...) {
    ::munmap(mapping_, mapping_size_);
    throw;
  }
}

Shard::~Shard() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

std::vector<TokenId> Shard::read(std::size_t offset, std::size_t count) const {
  if (offset > size_ || count > size_ - offset)
    throw std::out_of_range(path_.string() + ": read past the end");
  std::vector<TokenId> ids(count);
  for (std::size_t i = 0; i < count; ++i) ids[i] = token(offset + i);
  return ids;
}

std::size_t training_window_offset(std::uint64_t seed, std::int64_t step, std::int64_t sequence,
                                   std::size_t shard_size, std::size_t window) {
  if (shard_size < window) throw std::invalid_argument("shard shorter than one training window");
  return static_cast<std::size_t>(window_hash(seed, step, sequence) % (shard_size - window + 1));
}

// --- sets of shards ----------------------------------------------------------------------------------

namespace {

bool is_glob(const std::string& spec) { return spec.find_first_of("*?[") != std::string::npos; }

std::vector<std::filesystem::path> glob_files(const std::string& pattern) {
  glob_t matches{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &matches);
  std::vector<std::filesystem::path> paths;
  if (rc == 0) {
    for (std::size_t i = 0; i < matches.gl_pathc; ++i) paths.emplace_back(matches.gl_pathv[i]);
  }
  ::globfree(&matches);
  std::sort(paths.begin(), paths.end());  // glob sorts by the locale; shards go by byte order
  return paths;
}

// ROLE-NNNNN.bin files in `dir`, in name order.
std::vector<std::filesystem::path> numbered_shards(const std::filesystem::path& dir,
                                                   const std::string& role) {
  std::vector<std::filesystem::path> paths;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const auto name = entry.path().filename().string();
    if (name.size() == role.size() + 10 && name.rfind(role + "-", 0) == 0 && name.ends_with(".bin") &&
        std::all_of(name.begin() + static_cast<std::ptrdiff_t>(role.size() + 1), name.end() - 4,
                    [](char c) { return c >= '0' && c <= '9'; })) {
      paths.push_back(entry.path());
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace

std::vector<std::filesystem::path> resolve_shard_spec(const std::string& spec, const std::string& role) {
  const std::filesystem::path path(spec);
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    auto paths = numbered_shards(path, role);
    if (paths.empty())
      throw InputError(spec + ": not a token shard (a directory without " + role + "-NNNNN.bin shards)");
    return paths;
  }
  if (!std::filesystem::exists(path, error) && is_glob(spec)) {
    auto paths = glob_files(spec);
    if (paths.empty()) throw InputError(spec + ": no shard matches this pattern");
    return paths;
  }
  // DIR/NAME.bin absent but DIR/NAME-00000.bin present: the numbered set written by prepare-data.
  if (!std::filesystem::exists(path, error) && path.extension() == ".bin") {
    const auto stem = path.stem().string();
    const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    if (std::filesystem::exists(dir / (stem + "-00000.bin"), error)) return numbered_shards(dir, stem);
  }
  return {path};
}

ShardSet::ShardSet(const std::string& spec, const std::string& role) : spec_(spec) {
  load(resolve_shard_spec(spec, role));
}

ShardSet::ShardSet(const std::vector<std::filesystem::path>& paths) {
  if (paths.empty()) throw InputError("no shards given");
  for (const auto& path : paths) spec_ += (spec_.empty() ? "" : ",") + path.string();
  load(paths);
}

void ShardSet::load(const std::vector<std::filesystem::path>& paths) {
  for (const auto& path : paths) {
    auto shard = std::make_unique<Shard>(path);
    if (!shards_.empty() && (shard->tokenizer() != tokenizer() || shard->vocab_size() != vocab_size())) {
      throw InputError(path.string() + ": written with the " + shard->tokenizer() + " tokenizer (" +
                       std::to_string(shard->vocab_size()) + " ids), but " +
                       shards_.front()->path().string() + " with " + tokenizer() + " (" +
                       std::to_string(vocab_size()) + " ids)");
    }
    total_tokens_ += shard->size();
    shards_.push_back(std::move(shard));
  }
}

std::size_t ShardSet::window_starts(std::size_t window) const {
  std::size_t starts = 0;
  for (const auto& shard : shards_) starts += shard->size() >= window ? shard->size() - window + 1 : 0;
  return starts;
}

ShardSet::Window ShardSet::training_window(std::uint64_t seed, std::int64_t step, std::int64_t sequence,
                                           std::size_t window) const {
  const auto starts = window_starts(window);
  if (starts == 0) throw std::invalid_argument(spec_ + ": every shard is shorter than one training window");
  // The same draw as training_window_offset, over the concatenated window starts: a one-shard set reads
  // exactly the windows it read before shard sets existed.
  std::size_t index = static_cast<std::size_t>(window_hash(seed, step, sequence) % starts);
  for (std::size_t i = 0;; ++i) {
    const auto here = shards_[i]->size() >= window ? shards_[i]->size() - window + 1 : 0;
    if (index < here) return {i, index};
    index -= here;
  }
}

std::size_t ShardSet::contiguous_windows(std::size_t stride, std::size_t window) const {
  std::size_t count = 0;
  for (const auto& shard : shards_)
    count += shard->size() >= window ? (shard->size() - window) / stride + 1 : 0;
  return count;
}

ShardSet::Window ShardSet::contiguous_window(std::size_t index, std::size_t stride,
                                             std::size_t window) const {
  for (std::size_t i = 0; i < shards_.size(); ++i) {
    const auto here = shards_[i]->size() >= window ? (shards_[i]->size() - window) / stride + 1 : 0;
    if (index < here) return {i, index * stride};
    index -= here;
  }
  throw std::out_of_range(spec_ + ": eval window past the last shard");
}

}  // namespace moesweep::trainer
