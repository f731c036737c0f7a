#pragma once
// The shard header (format in data.h), shared by the shard reader/writer and the streaming writer.
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

namespace moesweep::trainer::detail {

static_assert(std::endian::native == std::endian::little, "shards and checkpoints are little-endian");

inline constexpr char kShardMagic[8] = {'M', 'O', 'E', 'S', 'H', 'A', 'R', 'D'};
inline constexpr std::uint32_t kShardVersion = 2;
inline constexpr std::size_t kShardHeaderSize = 64;

struct ShardHeader {
  char magic[8];
  std::uint32_t version;
  std::uint32_t tokenizer;
  std::uint64_t token_count;
  std::uint64_t checksum;
  std::uint32_t token_width;  // version 2
  std::uint32_t vocab_size;   // version 2
  std::uint8_t reserved[24];
};
static_assert(sizeof(ShardHeader) == kShardHeaderSize);

// Header code of a tokenizer name; InputError for an unknown one.
std::uint32_t tokenizer_code(const std::string& name);

// The vocabulary a shard of `tokenizer` declares: byte and gpt2 have their own; sentencepiece must give
// one (vocab_size > 0). InputError otherwise.
std::int64_t shard_vocabulary(const std::string& tokenizer, std::int64_t vocab_size);

// checksum64 of `size` bytes of the open file `fd` from `offset` (read in pieces, never mapped).
std::uint64_t checksum64_of_file(int fd, std::uint64_t offset, std::uint64_t size);

// 2 when every id of the vocabulary fits in uint16, else 4.
inline std::uint32_t token_width_for(std::int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

inline ShardHeader make_shard_header(const std::string& tokenizer, std::int64_t vocab_size,
                                     std::uint64_t count, std::uint64_t checksum) {
  ShardHeader header{};
  std::memcpy(header.magic, kShardMagic, sizeof kShardMagic);
  header.version = kShardVersion;
  header.tokenizer = tokenizer_code(tokenizer);
  header.token_count = count;
  header.checksum = checksum;
  header.token_width = token_width_for(vocab_size);
  header.vocab_size = static_cast<std::uint32_t>(vocab_size);
  return header;
}

}  // namespace moesweep::trainer::detail
