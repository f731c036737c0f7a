#pragma once
// Crash-safe file writing: shards, checkpoints, and the simulate backend's progress files.
#include <cstddef>
#include <filesystem>
#include <initializer_list>

namespace moesweep::trainer {

struct ByteRange {
  const void* data;
  std::size_t size;
};

// Writes the ranges to path.tmp, fsyncs it, renames it over `path` and fsyncs the directory, so a
// crash leaves either the old file or the complete new one, never a torn `path`.
void write_file_atomically(const std::filesystem::path& path, std::initializer_list<ByteRange> parts);

}  // namespace moesweep::trainer
