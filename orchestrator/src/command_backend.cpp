#include "command_backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "command_backend_protocol.h"
#include "rank_placement.h"
#include "moesweep/trainer/file_io.h"

extern char** environ;

namespace moesweep::orchestrator {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using command::Announcement;
using command::Event;

int rank_in(MPI_Comm comm) {
  int rank = 0;
  if (comm != MPI_COMM_NULL) MPI_Comm_rank(comm, &rank);
  return rank;
}
int size_of(MPI_Comm comm) {
  int size = 1;
  if (comm != MPI_COMM_NULL) MPI_Comm_size(comm, &size);
  return size;
}

// The leader's string, on every rank of the gang.
std::string broadcast(std::string text, MPI_Comm gang) {
  if (gang == MPI_COMM_NULL) return text;
  int size = static_cast<int>(text.size());
  MPI_Bcast(&size, 1, MPI_INT, 0, gang);
  text.resize(static_cast<std::size_t>(size));
  MPI_Bcast(text.data(), size, MPI_CHAR, 0, gang);
  return text;
}

// A port nobody listens on now, for the children's torch.distributed rendezvous (the kernel's choice,
// released at once: the child binds it a moment later, as torchrun's own free-port lookup does).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 29500;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  int port = 29500;  // torch.distributed's default, if the lookup fails
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    port = ntohs(address.sin_port);
  close(fd);
  return port;
}

fs::path announcements_file(const fs::path& run_dir) { return run_dir / "checkpoints.json"; }

std::vector<Announcement> read_announcements(const fs::path& run_dir) {
  std::ifstream in(announcements_file(run_dir));
  if (!in) return {};
  std::stringstream text;
  text << in.rdbuf();
  try {
    return command::announcements_from_json(text.str());
  } catch (const std::exception& e) {
    throw std::runtime_error(announcements_file(run_dir).string() + ": " + e.what());
  }
}

bool exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

// `from` (a file or a directory) at `to`: hard links (across file systems, a copy) under a temporary
// name, renamed into place only while `may_publish` says the attempt still owns the run.
void publish_link(const fs::path& from, const fs::path& to, const std::function<bool()>& may_publish) {
  fs::create_directories(to.parent_path());
  const fs::path temp = to.string() + trainer::kTemporarySuffix + host_name() + "-" + std::to_string(getpid());
  fs::remove_all(temp);
  std::error_code ec;
  fs::copy(from, temp, fs::copy_options::recursive | fs::copy_options::create_hard_links, ec);
  if (ec) {
    fs::remove_all(temp);
    fs::copy(from, temp, fs::copy_options::recursive);  // throws with the system's reason
  }
  if (!may_publish()) {
    fs::remove_all(temp);
    throw trainer::Superseded("fenced: a newer attempt owns " + to.parent_path().string());
  }
  fs::rename(temp, to);
}

// The last non-empty line of a log, for a failure's one-line message.
std::string last_line_of(const fs::path& log) {
  std::ifstream in(log, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = std::max<std::streamoff>(0, size - 4096);
  in.seekg(from);
  std::string tail(static_cast<std::size_t>(size - from), '\0');
  in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  std::istringstream lines(tail);
  std::string line, last;
  while (std::getline(lines, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos && line.rfind("moesweep: ", 0) != 0) last = line;
  return last.size() > 200 ? last.substr(0, 200) + "..." : last;
}

// An argument as a shell would need it, for the log's header line.
std::string quoted(const std::string& arg) {
  if (!arg.empty() && arg.find_first_of(" \t\n'\"\\$`*?;&|<>()[]{}!#~") == std::string::npos) return arg;
  std::string out = "'";
  for (const char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string shorten(const std::string& line) { return line.size() > 160 ? line.substr(0, 160) + "..." : line; }

// The child's environment: the worker's, without what makes a process an MPI rank of this job (the
// child is not one; a trainer that uses MPI itself would otherwise join this job's), plus the
// template's variables and PYTHONUNBUFFERED=1 unless set (a Python child's stdout is a pipe, which
// Python would otherwise buffer, and events would arrive late).
std::vector<std::string> child_environment(const std::vector<std::pair<std::string, std::string>>& extra) {
  std::vector<std::string> env;
  bool python_buffering_set = false;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const bool mpi = (entry.rfind("OMPI_", 0) == 0 && entry.rfind("OMPI_ALLOW_RUN_AS_ROOT", 0) != 0) ||
                     entry.rfind("PMIX_", 0) == 0 || entry.rfind("PMI_", 0) == 0;
    if (mpi) continue;
    python_buffering_set = python_buffering_set || entry.rfind("PYTHONUNBUFFERED=", 0) == 0;
    env.push_back(entry);
  }
  for (const auto& [name, value] : extra) {
    const std::string prefix = name + "=";
    std::erase_if(env, [&](const std::string& e) { return e.rfind(prefix, 0) == 0; });
    env.push_back(prefix + value);
    python_buffering_set = python_buffering_set || name == "PYTHONUNBUFFERED";
  }
  if (!python_buffering_set) env.emplace_back("PYTHONUNBUFFERED=1");
  return env;
}

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout, non-blocking
};

// Starts argv in a process group of its own (signals to the worker's group, such as OpenMPI's, never
// reach it: the worker forwards them), stdin from /dev/null, stdout to a pipe, stderr to the log. Throws
// with the system's reason when the program cannot be started.
Child spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, int log_fd) {
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int out[2], report[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  if (pipe2(report, O_CLOEXEC) != 0) {
    close(out[0]), close(out[1]);
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {  // only async-signal-safe calls from here to exec
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(out[1], 1);
    dup2(log_fd, 2);
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    for (int s : {SIGTERM, SIGUSR1, SIGINT, SIGHUP, SIGPIPE}) sigaction(s, &default_action, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(args[0], args.data(), envp.data());
    const int error = errno;
    if (write(report[1], &error, sizeof error) < 0) _exit(127);
    _exit(127);
  }
  const int fork_error = errno;
  if (null_fd >= 0) close(null_fd);
  close(out[1]);
  close(report[1]);
  if (pid < 0) {
    close(out[0]), close(report[0]);
    throw std::runtime_error(std::string("fork: ") + std::strerror(fork_error));
  }
  setpgid(pid, pid);  // also here, so the group exists before any signal is forwarded to it
  int exec_error = 0;
  ssize_t got;
  do got = read(report[0], &exec_error, sizeof exec_error);
  while (got < 0 && errno == EINTR);
  close(report[0]);
  if (got == sizeof exec_error) {
    waitpid(pid, nullptr, 0);
    close(out[0]);
    throw std::runtime_error("cannot start '" + argv[0] + "': " + std::strerror(exec_error));
  }
  fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK);
  return {pid, out[0]};
}

// Severity of a rank's outcome, so that a gang agrees on the worst one. A child this worker killed
// because another rank's failed ranks below that failure, so that the report names the cause.
int severity(const std::string& outcome, bool killed_for_gang) {
  if (outcome == "completed") return 0;
  if (outcome == "stopped") return 1;
  if (outcome == "diverged") return 2;
  return killed_for_gang ? 3 : 4;
}

class CommandBackend : public Backend {
 public:
  CommandBackend(const SweepRunOptions& options, CommandTemplate command)
      : options_(options), command_(std::move(command)) {}

  WorkResult train(const ExpandedRun& run, const fs::path& run_dir, std::int64_t attempt, MPI_Comm gang,
                   WorkObserver& observer) override {
    WorkResult result;
    const bool leader = rank_in(gang) == 0;
    // Preparation may fail on one rank only (a full disk); the gang agrees before anyone starts a child.
    std::map<std::string, std::string> values;
    std::string problem;
    try {
      values = prepare(run, run_dir, attempt, gang, result);
    } catch (const std::exception& e) {
      problem = e.what();
    }
    int failed = problem.empty() ? 0 : 1;
    if (gang != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, gang);
    if (!result.outcome.empty()) return result;  // blocked: the same on every rank (the same files)
    if (failed) {
      result.outcome = "failed";
      result.message = problem.empty() ? "another rank of the gang could not start the command" : problem;
      return result;
    }
    Attempt a(*this, run, run_dir, attempt, gang, observer, leader);
    return a.execute(values, result);
  }

 private:
  // Fences the run directory, finds the checkpoint to resume from and the branch point to start from,
  // and fills in every placeholder. Sets result.outcome to "blocked" when a branch's trunk checkpoint is
  // not there.
  std::map<std::string, std::string> prepare(const ExpandedRun& run, const fs::path& run_dir,
                                             std::int64_t attempt, MPI_Comm gang, WorkResult& result) {
    const bool leader = rank_in(gang) == 0;
    const auto may_publish = [run_dir, attempt] { return run_dir_owned_by(run_dir, attempt); };
    std::string resume_from, resume_step = "0", master_port, leader_error;
    // The leader's part may throw (a full disk, a corrupt checkpoints.json); its message travels with the
    // broadcasts below, so that no rank is left waiting in one.
    if (leader) try {
      fence_run_dir(run_dir, attempt);
      const std::vector<Announcement> announced = read_announcements(run_dir);
      std::optional<std::int64_t> at_most;
      if (run.kind == RunKind::trunk) {
        // A branch point moved aside (corrupt) or deleted: link it again from the trunk's own announced
        // checkpoint if that is still there, else resume from before it, so the trunk writes it anew.
        for (const auto& point : run.branch_points) {
          const fs::path target = branch_point_path(options_.workdir, run.run_key, point.step);
          if (exists(target.string())) continue;
          std::optional<Announcement> same;
          for (const Announcement& a : announced)
            if (a.tokens == point.tokens && exists(a.path)) same = a;
          if (same) {
            publish_link(same->path, target, may_publish);
          } else if (!at_most) {
            at_most = point.tokens;
          }
        }
      }
      if (const auto from = command::newest_checkpoint(announced, exists, at_most)) {
        resume_from = from->path;
        resume_step = std::to_string(from->step);
      }
      master_port = std::to_string(free_port());
    } catch (const std::exception& e) {
      leader_error = e.what();
    }
    leader_error = broadcast(leader_error, gang);
    resume_from = broadcast(resume_from, gang);
    resume_step = broadcast(resume_step, gang);
    master_port = broadcast(master_port, gang);
    const std::string master_addr = broadcast(host_name(), gang);
    if (gang != MPI_COMM_NULL) MPI_Barrier(gang);  // the fence is in place before any rank starts
    if (!leader_error.empty()) throw std::runtime_error(leader_error);

    std::string branch_from;
    if (run.kind == RunKind::branch) {
      const fs::path point = branch_point_file(options_.workdir, run);
      if (!exists(point.string())) {
        result.outcome = "blocked";
        result.message = "trunk checkpoint unusable: " + point.string() + ": no such checkpoint";
        return {};
      }
      branch_from = fs::absolute(point).string();
    }
    std::map<std::string, std::string> values = command::run_values(run);
    const std::string device = options_.device;
    values["run_dir"] = fs::absolute(run_dir).string();
    values["attempt"] = std::to_string(attempt);
    values["resume_from"] = resume_from;
    values["branch_from"] = branch_from;
    values["rank"] = std::to_string(rank_in(gang));
    values["ranks"] = std::to_string(size_of(gang));
    values["master_addr"] = master_addr;
    values["master_port"] = master_port;
    values["threads"] = std::to_string(options_.threads);
    values["device"] = device;
    values["devices"] = device.rfind("cuda:", 0) == 0 ? device.substr(5) : "";
    result.resumed_from_step = std::stoll(resume_step);
    return values;
  }

  // One attempt's child on this rank: start it, follow its stdout, forward stops, wait for it.
  struct Attempt {
    Attempt(CommandBackend& b, const ExpandedRun& r, const fs::path& d, std::int64_t id, MPI_Comm g,
            WorkObserver& o, bool l)
        : backend(b), run(r), run_dir(d), attempt(id), gang(g), observer(o), leader(l) {}
    CommandBackend& backend;
    const ExpandedRun& run;
    const fs::path& run_dir;
    std::int64_t attempt;
    MPI_Comm gang;
    WorkObserver& observer;
    bool leader;

    fs::path log_path;
    int log_fd = -1;
    Child child;
    std::string pending;  // stdout not yet ended by a newline
    bool end_of_output = false;  // the child closed its stdout (it may still run)
    std::int64_t lines = 0;
    std::string protocol_error;
    bool superseded = false;
    bool killed = false;  // by this worker (a protocol error, a failed gang member): never a stop
    bool killed_for_gang = false;  // ... because another rank's child failed
    std::optional<command::ResultEvent> result_event;
    std::optional<command::ProgressEvent> last_progress;
    std::optional<std::pair<Clock::time_point, std::int64_t>> first_progress;  // for tokens/s
    std::vector<Announcement> announced;

    WorkResult execute(const std::map<std::string, std::string>& values, WorkResult& result) {
      const auto start = Clock::now();
      const int rank = rank_in(gang);
      log_path = fs::absolute(run_dir) / ("attempt-" + std::to_string(attempt) +
                                          (rank == 0 ? std::string() : ".rank-" + std::to_string(rank)) + ".log");
      log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      std::string start_error;
      std::vector<std::string> argv;
      try {
        if (log_fd < 0) throw std::runtime_error(log_path.string() + ": " + std::strerror(errno));
        if (leader) announced = read_announcements(run_dir);
        std::vector<std::pair<std::string, std::string>> env;
        for (const std::string& arg : backend.command_.argv) argv.push_back(command::expand(arg, values));
        for (const auto& [name, text] : backend.command_.env) env.emplace_back(name, command::expand(text, values));
        std::string shown;
        for (const std::string& arg : argv) shown += (shown.empty() ? "" : " ") + quoted(arg);
        log("moesweep: attempt " + std::to_string(attempt) + " on " + host_name() + " (rank " +
            std::to_string(rank) + " of " + std::to_string(size_of(gang)) + "): " + shown +
            (values.at("resume_from").empty() ? "" : " (resuming from " + values.at("resume_from") + ")"));
        child = spawn(argv, child_environment(env), log_fd);
      } catch (const std::exception& e) {
        start_error = e.what();
      }
      // Started on every rank, or on none.
      int failed = start_error.empty() ? 0 : 1;
      if (gang != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, gang);
      if (failed) {
        if (child.pid > 0) {
          kill(-child.pid, SIGKILL);
          waitpid(child.pid, nullptr, 0);
          close(child.out);
        }
        if (log_fd >= 0) close(log_fd);
        result.outcome = "failed";
        result.message = start_error.empty() ? "another rank of the gang could not start the command" : start_error;
        return result;
      }

      int status = 0;
      bool exited = false, forwarded = false, stop_timed_out = false;
      Clock::time_point forwarded_at;
      while (true) {
        read_output(100);
        if (!exited && waitpid(child.pid, &status, WNOHANG) == child.pid) exited = true;
        const bool stop = observer.stop_requested();  // collective in a gang: once per pass on every rank
        if (stop && !forwarded && !exited) {
          kill(-child.pid, observer.stop_signal());
          forwarded = true;
          forwarded_at = Clock::now();
        }
        if (forwarded && !exited && !stop_timed_out &&
            std::chrono::duration<double>(Clock::now() - forwarded_at).count() > backend.command_.stop_timeout_s) {
          // Still running: the stop must not wait for it. Preempted all the same (not failed): the next
          // attempt resumes from its newest announced checkpoint.
          kill(-child.pid, SIGKILL);
          stop_timed_out = true;
          std::ostringstream text;
          text << "moesweep: the command did not stop within " << backend.command_.stop_timeout_s
               << " s of the signal (backend.stop_timeout_s): killed";
          log(text.str());
        }
        const bool failing = !protocol_error.empty() || superseded;
        if (failing && !exited && !killed) kill_child();
        if (gang == MPI_COMM_NULL) {
          if (exited) break;
          continue;
        }
        int local[2] = {exited ? 0 : 1, failing || (exited && !ended_well(status)) ? 1 : 0}, all[2];
        MPI_Allreduce(local, all, 2, MPI_INT, MPI_MAX, gang);
        if (all[1] && !exited && !killed && !forwarded) {  // a member failed: nobody waits for it
          kill_child();
          killed_for_gang = true;
        }
        if (!all[0]) break;
      }
      read_output(0);
      if (!pending.empty()) line(pending), pending.clear();
      close(child.out);
      kill(-child.pid, SIGKILL);  // what it left behind in its group (data loader workers, say)

      outcome(status, forwarded, result);
      log("moesweep: attempt " + std::to_string(attempt) + ": " + result.outcome +
          (result.message.empty() ? "" : ": " + result.message));
      close(log_fd);
      if (gang != MPI_COMM_NULL) agree(result);
      result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      return result;
    }

    void kill_child() {
      kill(-child.pid, SIGKILL);
      killed = true;
    }

    bool ended_well(int status) const {
      return WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3 || WEXITSTATUS(status) == 4);
    }

    void log(const std::string& text) {
      const std::string line = text + "\n";
      if (log_fd >= 0 && write(log_fd, line.data(), line.size()) < 0) {
        // a full disk: the attempt goes on, its log is short
      }
    }

    // Reads what the child has written, waiting up to `wait_ms` for the first byte, and handles each
    // whole line. A child's pipe that stays open in a grandchild never blocks this: it reads what is there.
    void read_output(int wait_ms) {
      if (end_of_output) {  // nothing to wait for on the pipe: just pace the caller's loop
        if (wait_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
        return;
      }
      pollfd p{child.out, POLLIN, 0};
      if (poll(&p, 1, wait_ms) <= 0) return;
      char buffer[65536];
      while (true) {
        const ssize_t got = read(child.out, buffer, sizeof buffer);
        if (got == 0) end_of_output = true;
        if (got <= 0) break;  // EAGAIN: nothing more now; 0: the end
        pending.append(buffer, static_cast<std::size_t>(got));
        std::size_t end;
        while ((end = pending.find('\n')) != std::string::npos) {
          line(pending.substr(0, end));
          pending.erase(0, end + 1);
        }
      }
    }

    void line(const std::string& text) {
      ++lines;
      if (!protocol_error.empty() || superseded) return log(text);  // failing already: the log only
      Event event;
      try {
        event = command::parse_protocol_line(text);
      } catch (const command::ProtocolError& e) {
        protocol_error = "protocol error on line " + std::to_string(lines) + " of the command's stdout: " +
                         e.what() + ": " + shorten(text);
        log(text);
        log("moesweep: " + protocol_error);
        return;
      }
      switch (event.kind) {
        case Event::Kind::log:
          return log(text);
        case Event::Kind::progress:
          return progress(event.progress);
        case Event::Kind::checkpoint:
          return checkpoint(event.checkpoint);
        case Event::Kind::result:
          if (result_event) {  // which one would the fit get? Neither: the trainer is confused.
            protocol_error = "protocol error on line " + std::to_string(lines) +
                             " of the command's stdout: a second result line: " + shorten(text);
            log(text);
            log("moesweep: " + protocol_error);
            return;
          }
          result_event = event.result;
          if (leader && event.result.n_act != run.n_act)
            log("moesweep: note: the command reports n_act " + std::to_string(event.result.n_act) +
                ", the sweep counts " + std::to_string(run.n_act) + " (the store keeps the sweep's)");
          return;
      }
    }

    void progress(const command::ProgressEvent& p) {
      last_progress = p;
      const auto now = Clock::now();
      if (!first_progress) first_progress = {now, p.tokens};
      double tokens_per_s = p.tokens_per_s.value_or(0);
      if (!p.tokens_per_s) {
        const double seconds = std::chrono::duration<double>(now - first_progress->first).count();
        if (seconds > 0) tokens_per_s = static_cast<double>(p.tokens - first_progress->second) / seconds;
      }
      observer.progress({p.step, p.tokens, p.loss, p.lr.value_or(run.config.train.lr), tokens_per_s});
    }

    // Rank 0's announcements: kept for the next attempt, and a trunk's branch points published.
    void checkpoint(const command::CheckpointEvent& c) {
      if (!leader) return;
      const fs::path path = fs::absolute(c.path);
      if (!exists(path.string())) {
        protocol_error = "protocol error on line " + std::to_string(lines) +
                         " of the command's stdout: it announces a checkpoint that does not exist: " + path.string();
        log("moesweep: " + protocol_error);
        return;
      }
      const auto may_publish = [this] { return run_dir_owned_by(run_dir, attempt); };
      try {
        announced.push_back({c.tokens, c.step.value_or(last_progress ? last_progress->step : 0), path.string(), attempt});
        const std::string text = command::announcements_to_json(announced);
        trainer::write_file_atomically(announcements_file(run_dir), {{text.data(), text.size()}}, may_publish);
        if (run.kind == RunKind::trunk)
          for (const auto& point : run.branch_points)
            if (point.tokens == c.tokens) {
              const fs::path target = branch_point_path(backend.options_.workdir, run.run_key, point.step);
              fs::remove_all(target);  // an older one, from before the trunk went back
              publish_link(path, target, may_publish);
            }
      } catch (const trainer::Superseded& e) {
        superseded = true;
        log(std::string("moesweep: ") + e.what());
      } catch (const std::exception& e) {  // a full disk, say: the attempt fails with the reason
        protocol_error = std::string("could not record the checkpoint it announced: ") + e.what();
        log("moesweep: " + protocol_error);
      }
    }

    void outcome(int status, bool forwarded, WorkResult& r) {
      if (last_progress) {
        r.steps = last_progress->step;
        r.tokens = last_progress->tokens;
        r.train_loss = last_progress->loss;
        if (first_progress) {
          const double seconds = std::chrono::duration<double>(Clock::now() - first_progress->first).count();
          if (seconds > 0) r.tokens_per_s = static_cast<double>(last_progress->tokens - first_progress->second) / seconds;
        }
      }
      const bool exited = WIFEXITED(status);
      const int code = exited ? WEXITSTATUS(status) : -1;
      if (superseded) {
        r.outcome = "superseded";
        r.message = "fenced: a newer attempt owns " + run_dir.string();
      } else if (!protocol_error.empty()) {
        r.outcome = "failed";
        r.message = protocol_error;
      } else if (exited && code == 0 && (result_event || !leader)) {
        r.outcome = "completed";
        if (result_event) {
          r.eval_loss = result_event->eval_loss;
          if (result_event->train_loss) r.train_loss = *result_event->train_loss;
        }
        if (!last_progress) r.tokens = run.config.train.tokens;
      } else if (exited && code == 3) {
        r.outcome = "diverged";
        r.message = "the command exited 3 (diverged)" +
                    (last_progress ? " at step " + std::to_string(last_progress->step) : std::string());
      } else if (forwarded && !killed) {
        r.outcome = "stopped";  // after a forwarded stop, however it ended: preempted, not failed
      } else if (exited && code == 4) {
        // Stopped when nobody asked: handing it out again would loop, so it is a failed attempt.
        r.outcome = "failed";
        r.message = "the command exited 4 (stopped after a checkpoint) but no stop was asked of it; see " +
                    log_path.string();
      } else if (exited && code == 0) {
        r.outcome = "failed";
        r.message = "the command exited 0 without a result line ({\"event\": \"result\", ...}); see " + log_path.string();
      } else {
        r.outcome = "failed";
        const std::string last = last_line_of(log_path);
        r.message = exited ? "the command exited " + std::to_string(code)
                           : "the command was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
                                 strsignal(WTERMSIG(status)) + ")";
        // An exit status comes with a reason, often the log's last line (a Python exception's); a signal
        // rarely does.
        r.message += last.empty() || !exited ? "; see " + log_path.string() : ": " + last;
      }
    }

    // The gang's outcome is its worst rank's; rank 0 reports it, naming the rank when it was another's.
    void agree(WorkResult& r) {
      struct {
        int severity;
        int rank;
      } mine{severity(r.outcome, killed_for_gang), rank_in(gang)}, worst{};
      MPI_Allreduce(&mine, &worst, 1, MPI_2INT, MPI_MAXLOC, gang);
      if (worst.severity > mine.severity) {
        r.outcome = worst.severity >= 3 ? "failed" : worst.severity == 2 ? "diverged" : "stopped";
        r.message = "the command on gang rank " + std::to_string(worst.rank) + " ended " +
                    (worst.severity >= 3 ? "in failure" : worst.severity == 2 ? "diverged" : "stopped") + "; see " +
                    (run_dir / ("attempt-" + std::to_string(attempt) + ".rank-" + std::to_string(worst.rank) + ".log"))
                        .string();
      }
    }
  };

  SweepRunOptions options_;
  CommandTemplate command_;
};

}  // namespace

std::unique_ptr<Backend> make_command_backend(const SweepRunOptions& options, const CommandTemplate& command) {
  return std::make_unique<CommandBackend>(options, command);
}

}  // namespace moesweep::orchestrator
