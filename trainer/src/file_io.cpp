#include "moesweep/trainer/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace moesweep::trainer {
namespace {

// A failed write (a full disk, most often) removes its temporary file: the space it took is given back,
// and no torn file is left behind.
[[noreturn]] void fail(const std::string& what, const std::filesystem::path& path) {
  const std::string reason = std::strerror(errno);
  ::unlink(path.c_str());
  throw std::runtime_error("cannot " + what + " " + path.string() + ": " + reason);
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, std::initializer_list<ByteRange> parts,
                           const std::function<bool()>& may_publish) {
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  const std::filesystem::path temporary =
      path.string() + kTemporarySuffix + host + "-" + std::to_string(static_cast<long long>(::getpid()));
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("create", temporary);
  for (const auto& part : parts) {
    const auto* bytes = static_cast<const char*>(part.data);
    std::size_t left = part.size;
    while (left > 0) {
      const ssize_t written = ::write(fd, bytes, left);
      if (written < 0 && errno == EINTR) continue;
      if (written < 0) {
        ::close(fd);
        fail("write", temporary);
      }
      bytes += written;
      left -= static_cast<std::size_t>(written);
    }
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("fsync", temporary);
  }
  if (::close(fd) != 0) fail("close", temporary);
  if (may_publish && !may_publish()) {
    ::unlink(temporary.c_str());
    throw Superseded(path.string() + ": not written: a newer attempt owns this run");
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) fail("rename", temporary);
  const auto directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {  // best effort: the rename itself is already atomic
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace moesweep::trainer
