// Token shards: writing (atomic) and reading (memory-mapped, verified). Format in data.h.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "moesweep/trainer/file_io.h"
#include "moesweep/input_error.h"
#include "moesweep/trainer/data.h"
#include "moesweep/trainer/run_config.h"

namespace moesweep::trainer {
namespace {

static_assert(std::endian::native == std::endian::little, "shards and checkpoints are little-endian");

constexpr char kMagic[8] = {'M', 'O', 'E', 'S', 'H', 'A', 'R', 'D'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderSize = 64;

struct ShardHeader {
  char magic[8];
  std::uint32_t version;
  std::uint32_t tokenizer;
  std::uint64_t token_count;
  std::uint64_t checksum;
  std::uint8_t reserved[32];
};
static_assert(sizeof(ShardHeader) == kHeaderSize);

const char* kTokenizerNames[] = {"byte", "gpt2"};

std::uint32_t tokenizer_code(const std::string& name) {
  for (std::uint32_t code = 0; code < std::size(kTokenizerNames); ++code) {
    if (name == kTokenizerNames[code]) return code;
  }
  throw InputError("unknown tokenizer '" + name + "' (expected byte or gpt2)");
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
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

void write_shard(const std::filesystem::path& path, const std::string& tokenizer,
                 std::span<const std::uint16_t> tokens) {
  ShardHeader header{};
  std::memcpy(header.magic, kMagic, sizeof kMagic);
  header.version = kVersion;
  header.tokenizer = tokenizer_code(tokenizer);
  header.token_count = tokens.size();
  header.checksum = checksum64(tokens.data(), tokens.size_bytes());
  const auto vocab = static_cast<std::uint64_t>(vocab_size_of(tokenizer));
  for (const auto token : tokens) {
    if (token >= vocab) {
      throw InputError(path.string() + ": token " + std::to_string(token) + " outside the " + tokenizer +
                       " vocabulary");
    }
  }
  write_file_atomically(path, {{&header, sizeof header}, {tokens.data(), tokens.size_bytes()}});
}

Shard::Shard(const std::filesystem::path& path) : path_(path) {
  const std::string name = path.string();
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(name + ": cannot open shard: " + std::strerror(errno));
  struct stat info {};
  const bool stat_ok = ::fstat(fd, &info) == 0;
  if (stat_ok && !S_ISREG(info.st_mode)) {  // mmap would say "No such device" about a directory
    ::close(fd);
    throw InputError(name + ": not a token shard (" + (S_ISDIR(info.st_mode) ? "a directory" : "not a regular file") +
                     ")");
  }
  if (!stat_ok || static_cast<std::size_t>(info.st_size) < kHeaderSize) {
    ::close(fd);
    throw InputError(name + ": truncated shard (shorter than its " + std::to_string(kHeaderSize) +
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
    if (std::memcmp(header.magic, kMagic, sizeof kMagic) != 0) {
      throw InputError(name +
                       ": not a moesweep token shard (wrong magic; write one with moesweep prepare-data)");
    }
    if (header.version != kVersion) {
      throw InputError(name + ": shard version " + std::to_string(header.version) + ", expected " +
                       std::to_string(kVersion));
    }
    if (header.tokenizer >= std::size(kTokenizerNames)) {
      throw InputError(name + ": unknown tokenizer code " + std::to_string(header.tokenizer));
    }
    tokenizer_ = kTokenizerNames[header.tokenizer];
    const std::uint64_t expected_size = kHeaderSize + 2 * header.token_count;
    if (mapping_size_ != expected_size) {
      throw InputError(name + ": " + (mapping_size_ < expected_size ? "truncated" : "oversized") +
                       " shard: " + std::to_string(mapping_size_) + " bytes, the header says " +
                       std::to_string(expected_size));
    }
    tokens_ = {reinterpret_cast<const std::uint16_t*>(static_cast<const char*>(mapping_) + kHeaderSize),
               static_cast<std::size_t>(header.token_count)};
    if (checksum64(tokens_.data(), tokens_.size_bytes()) != header.checksum) {
      throw InputError(name + ": checksum mismatch (the shard is corrupt)");
    }
    const auto vocab = static_cast<std::uint64_t>(vocab_size_of(tokenizer_));
    for (const auto token : tokens_) {
      if (token >= vocab) {
        throw InputError(name + ": token " + std::to_string(token) + " outside the " + tokenizer_ +
                         " vocabulary");
      }
    }
  } catch (...) {
    ::munmap(mapping_, mapping_size_);
    throw;
  }
}

Shard::~Shard() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

std::size_t training_window_offset(std::uint64_t seed, std::int64_t step, std::int64_t sequence,
                                   std::size_t shard_size, std::size_t window) {
  if (shard_size < window) throw std::invalid_argument("shard shorter than one training window");
  const std::uint64_t x = splitmix64(splitmix64(splitmix64(seed) ^ static_cast<std::uint64_t>(step)) ^
                                     static_cast<std::uint64_t>(sequence));
  return static_cast<std::size_t>(x % (shard_size - window + 1));
}

}  // namespace moesweep::trainer
