#pragma once
// The one error type for bad user input. The CLI turns it into a single stderr line and exit status 2;
// every other exception is exit status 1. Keep the message self-contained: it names the file, the
// line (when known) and the key or argument at fault.
#include <stdexcept>
#include <string>

namespace moesweep {

class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& message) : std::runtime_error(message) {}

  // "FILE:LINE: KEY: WHAT" (line 0 = unknown, omitted).
  static InputError at(const std::string& file, long line, const std::string& key, const std::string& what) {
    std::string where = file;
    if (line > 0) where += ":" + std::to_string(line);
    if (!key.empty()) where += ": " + key;
    return InputError(where + ": " + what);
  }
};

}  // namespace moesweep
