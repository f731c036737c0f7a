#pragma once
// Crash-safe file writing: shards, checkpoints, and the simulate backend's progress files.
#include <cstddef>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <stdexcept>

namespace moesweep::trainer {

struct ByteRange {
  const void* data;
  std::size_t size;
};

// The writer of a file was fenced: a newer attempt owns the run, so the file was not published.
class Superseded : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Writes the ranges to a temporary file of this process (path.tmp-<host>-<pid>, so two writers, such as
// a fenced attempt and its successor, never share one), fsyncs it, renames it over `path` and fsyncs the
// directory, so a crash leaves either the old file or the complete new one, never a torn `path`.
// `may_publish`, when given, is asked just before the rename; false removes the temporary file and
// throws Superseded.
void write_file_atomically(const std::filesystem::path& path, std::initializer_list<ByteRange> parts,
                           const std::function<bool()>& may_publish = {});
// The temporary-file marker write_file_atomically puts after a file's name (".tmp-"): what a new
// attempt removes as debris of earlier ones.
inline constexpr const char* kTemporarySuffix = ".tmp-";

}  // namespace moesweep::trainer
