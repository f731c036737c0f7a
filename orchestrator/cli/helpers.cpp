// Commands whose libraries are heavy live in helper executables beside `moesweep`: `run` and `train` in
// moesweep-train (LibTorch and MPI, ~300 shared libraries, half a second to load), `fit` in moesweep-fit
// (Ceres and its BLAS, whose thread pool spins a core for the first ~0.1 s of every process). `moesweep`
// execs the helper for them, so users, mpirun/srun and the batch script name `moesweep` alone. exec keeps
// the process: its pid (leases, Slurm's and mpirun's signals), environment (MPI's), open files and argv,
// argv[0] included (help and `pgrep -f` see moesweep).
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "commands.h"

namespace moesweep::cli {
namespace {

struct HelperCommand {
  const char* command;
  const char* executable;
  const char* description;
};
constexpr HelperCommand kHelperCommands[] = {
    {"run", "moesweep-train", kRunDescription},
    {"train", "moesweep-train", kTrainDescription},
    {"fit", "moesweep-fit", kFitDescription},
};

// The directory of this executable, from the kernel (argv[0] may be a bare name found on the PATH).
std::string own_directory() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  const std::string path(buf, static_cast<std::size_t>(n));
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

void hand_over_to_helper(int argc, char** argv) {
  if (argc < 2) return;
  for (const HelperCommand& h : kHelperCommands) {
    if (std::strcmp(argv[1], h.command) != 0) continue;
    const std::string path = own_directory() + "/" + h.executable;
    ::execv(path.c_str(), argv);
    const int error = errno;  // only reached when the exec failed
    std::cerr << "moesweep: `" << h.command << "` is in " << h.executable
              << ", which should be beside moesweep: " << path << ": " << std::strerror(error) << "\n";
    std::exit(2);
  }
}

void add_helper_command(CLI::App& app, const std::string& command, const std::string& group) {
  // Never parsed here: hand_over_to_helper has exec'd before the parser runs.
  for (const HelperCommand& h : kHelperCommands)
    if (command == h.command) app.add_subcommand(h.command, h.description)->group(group);
}

}  // namespace moesweep::cli
