// The batch script of `moesweep submit` and the Slurm commands it runs. See slurm_submit.h.
#include "moesweep/orchestrator/slurm_submit.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <stdexcept>

#include "moesweep/input_error.h"

namespace moesweep::orchestrator::slurm {
namespace {

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

long to_number(const std::string& part, const std::string& whole) {
  if (!all_digits(part) || part.size() > 9)
    throw InputError("--time: '" + whole + "' is not a Slurm time (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S)");
  return std::stol(part);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep)) parts.push_back(part);
  if (!s.empty() && s.back() == sep) parts.emplace_back();
  return parts;
}

// A value for an #SBATCH line: sbatch splits those lines on whitespace.
std::string sbatch_value(const std::string& what, const std::string& value) {
  if (value.empty() ||
      std::any_of(value.begin(), value.end(), [](unsigned char c) { return std::isspace(c); }))
    throw InputError(what + ": '" + value +
                     "' is empty or has whitespace, which an #SBATCH line cannot carry");
  return value;
}

// The first line of a command's output, trimmed.
std::string first_line(const std::string& text) { return trim(text.substr(0, text.find('\n'))); }

// What a failed command said, on one line: its stderr (else its stdout), lines joined by "; ".
std::string said(const CommandResult& r) {
  std::string text;
  for (const auto& line : split(r.err.empty() ? r.out : r.err, '\n'))
    if (const auto t = trim(line); !t.empty()) text += (text.empty() ? "" : "; ") + t;
  if (text.empty()) text = "exit status " + std::to_string(r.status) + ", no message";
  return text;
}

bool contains_nocase(const std::string& text, const std::string& what) {
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return lower.find(what) != std::string::npos;
}

JobStatus status_from_word(const std::string& word) {
  JobStatus s;
  s.state = word;
  s.kind = job_state_active(word) ? JobStatus::Kind::Active : JobStatus::Kind::Finished;
  return s;
}

// The calling user's login name, for squeue --user (a job name alone may be another user's job too).
std::optional<std::string> login_name() {
  if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_name && *pw->pw_name) return pw->pw_name;
  if (const char* user = std::getenv("USER"); user && *user) return std::string(user);
  return std::nullopt;
}

// Job names and log file names: the sweep's name with anything unusual replaced.
std::string safe_name(const std::string& name) {
  std::string out = name;
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return out.empty() ? "sweep" : out;
}

}  // namespace

std::string job_name(const std::string& sweep_name) { return "moesweep-" + safe_name(sweep_name); }

long parse_slurm_time(const std::string& text) {
  const std::string t = trim(text);
  long days = 0;
  std::string rest = t;
  const bool has_days = t.find('-') != std::string::npos;
  if (has_days) {
    const auto dash = t.find('-');
    days = to_number(t.substr(0, dash), text);
    rest = t.substr(dash + 1);
  }
  const auto parts = split(rest, ':');
  if (parts.empty() || parts.size() > 3) to_number("x", text);  // throws
  std::vector<long> v;
  for (const auto& p : parts) v.push_back(to_number(p, text));
  long seconds = 0;
  if (has_days) {  // D-H, D-H:M, D-H:M:S
    seconds = v[0] * 3600 + (v.size() > 1 ? v[1] * 60 : 0) + (v.size() > 2 ? v[2] : 0);
  } else if (v.size() == 1) {  // M
    seconds = v[0] * 60;
  } else if (v.size() == 2) {  // M:S
    seconds = v[0] * 60 + v[1];
  } else {  // H:M:S
    seconds = v[0] * 3600 + v[1] * 60 + v[2];
  }
  seconds += days * 86400;
  if (seconds <= 0) throw InputError("--time: '" + text + "' is not a positive time limit");
  return seconds;
}

TaskLayout task_layout(const SubmitOptions& o) {
  if (o.nodes < 1) throw InputError("--nodes: must be at least 1");
  if (o.ranks_per_node && *o.ranks_per_node < 1) throw InputError("--ranks-per-node: must be at least 1");
  if (o.gpus_per_node < 0) throw InputError("--gpus-per-node: must not be negative");
  const int gpus = o.gpus_per_node;
  TaskLayout layout;
  layout.nodes = o.nodes;
  if (gpus == 0 || !o.ranks_per_node) {
    // Without GPUs, K ranks everywhere. With G GPUs, G + 1 on the first node (the coordinator and G
    // trainers) and G on each other: --ntasks-per-node is then Slurm's maximum, not its count.
    layout.ntasks_per_node = gpus == 0 ? o.ranks_per_node.value_or(2) : gpus + 1;
    layout.ntasks = gpus == 0 ? o.nodes * layout.ntasks_per_node : o.nodes * gpus + 1;
    return layout;
  }
  const int ranks = *o.ranks_per_node;
  const std::string asked =
      "--ranks-per-node " + std::to_string(ranks) + " with --gpus-per-node " + std::to_string(gpus);
  if (ranks - 1 > gpus)
    throw InputError(asked + ": the first node would have " + std::to_string(ranks - 1) +
                     " training ranks (rank 0 coordinates) for " + std::to_string(gpus) +
                     " GPUs, two of them on one GPU; give at most --ranks-per-node " +
                     std::to_string(gpus + 1) + ", or leave it out for one training rank per GPU");
  if (o.nodes > 1 && ranks > gpus)
    throw InputError(
        asked + " on " + std::to_string(o.nodes) + " nodes: every node but the first would have " +
        std::to_string(ranks) + " training ranks for " + std::to_string(gpus) +
        " GPUs, two of them on one GPU (only the first node has the coordinator, rank 0); leave "
        "--ranks-per-node out for one training rank per GPU (" +
        std::to_string(o.nodes * gpus + 1) + " ranks: " + std::to_string(gpus + 1) + " on the first node, " +
        std::to_string(gpus) + " on each other), or give at most " + std::to_string(gpus));
  layout.ntasks_per_node = ranks;
  layout.ntasks = o.nodes * ranks;
  return layout;
}

void validate_options(const SubmitOptions& o) {
  task_layout(o);
  if (o.cpus_per_rank < 0) throw InputError("--cpus-per-rank: must not be negative");
  if (o.signal_margin_s < 1 || o.signal_margin_s > 65535)
    throw InputError("--signal-margin: must be 1..65535 seconds (Slurm's --signal limit)");
  if (o.launcher != "auto" && o.launcher != "srun" && o.launcher != "mpirun")
    throw InputError("--launcher: '" + o.launcher + "' is not auto, srun or mpirun");
  if (!o.time.empty()) {
    const long limit = parse_slurm_time(o.time);
    if (limit <= o.signal_margin_s)
      throw InputError("--time: " + o.time + " (" + std::to_string(limit) +
                       " s) is not longer than the signal margin (" + std::to_string(o.signal_margin_s) +
                       " s): the job would be told to stop before it starts; raise --time or lower "
                       "--signal-margin");
  }
  if (!o.partition.empty()) sbatch_value("--partition", o.partition);
  if (!o.account.empty()) sbatch_value("--account", o.account);
  if (!o.qos.empty()) sbatch_value("--qos", o.qos);
}

const std::string& builtin_template() {
  static const std::string text =
#include "slurm_template.inc"
      ;
  return text;
}

std::string shell_quote(const std::string& word) {
  if (!word.empty() && std::all_of(word.begin(), word.end(), [](unsigned char c) {
        return std::isalnum(c) ||
               std::string_view("/._-+=:,@%").find(static_cast<char>(c)) != std::string_view::npos;
      }))
    return word;
  std::string out = "'";
  for (char c : word) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string render_batch_script(const std::string& template_text, const SubmitOptions& o,
                                const ScriptContext& c) {
  validate_options(o);
  const TaskLayout layout = task_layout(o);
  std::ostringstream sbatch;
  sbatch << "#SBATCH --nodes=" << layout.nodes << "\n";
  if (layout.uneven()) sbatch << "#SBATCH --ntasks=" << layout.ntasks << "\n";
  sbatch << "#SBATCH --ntasks-per-node=" << layout.ntasks_per_node << "\n";
  if (o.cpus_per_rank > 0) sbatch << "#SBATCH --cpus-per-task=" << o.cpus_per_rank << "\n";
  if (o.gpus_per_node > 0) sbatch << "#SBATCH --gpus-per-node=" << o.gpus_per_node << "\n";
  if (!o.time.empty()) sbatch << "#SBATCH --time=" << sbatch_value("--time", trim(o.time)) << "\n";
  if (!o.partition.empty()) sbatch << "#SBATCH --partition=" << o.partition << "\n";
  if (!o.account.empty()) sbatch << "#SBATCH --account=" << o.account << "\n";
  if (!o.qos.empty()) sbatch << "#SBATCH --qos=" << o.qos << "\n";
  std::string options = sbatch.str();
  options.pop_back();  // the template's line supplies the last newline

  std::vector<std::string> args = {c.sweep_path, "--db", c.db_path, "--workdir", c.workdir};
  if (o.gpus_per_node > 0)
    args.insert(args.end(), {"--device", "cuda", "--gpus-per-node", std::to_string(o.gpus_per_node)});
  if (o.cpus_per_rank > 0) args.insert(args.end(), {"--threads", std::to_string(o.cpus_per_rank)});
  args.insert(args.end(), o.run_args.begin(), o.run_args.end());
  std::string run_args;
  for (const auto& a : args) run_args += (run_args.empty() ? "" : " ") + shell_quote(a);

  const std::string name = job_name(c.sweep_name);
  const std::map<std::string, std::string> values = {
      {"JOB_NAME", name},
      {"SIGNAL_MARGIN", std::to_string(o.signal_margin_s)},
      {"OUTPUT", sbatch_value("log path", c.submit_dir + "/" + name + "-%j.out")},
      {"SUBMIT_DIR", sbatch_value("working directory", c.submit_dir)},
      {"SBATCH_OPTIONS", options},
      {"MOESWEEP", shell_quote(c.moesweep_binary)},
      {"RUN_ARGS", run_args},
      {"LAUNCHER", o.launcher},
      {"SWEEP", shell_quote(c.sweep_name)},
  };

  std::string out;
  std::size_t pos = 0;
  while (true) {
    const auto open = template_text.find("{{", pos);
    if (open == std::string::npos) break;
    const auto close = template_text.find("}}", open + 2);
    const std::string name =
        close == std::string::npos ? "" : template_text.substr(open + 2, close - open - 2);
    const auto it = values.find(name);
    if (it == values.end()) {
      const long line =
          1 + std::count(template_text.begin(), template_text.begin() + static_cast<long>(open), '\n');
      const std::size_t length =
          close == std::string::npos ? 40 : std::min<std::size_t>(40, close + 2 - open);
      throw InputError::at(
          o.template_path.empty() ? "built-in template" : o.template_path, line, "",
          "unknown placeholder '" + template_text.substr(open, length) +
              "' (known: JOB_NAME, SIGNAL_MARGIN, OUTPUT, SUBMIT_DIR, SBATCH_OPTIONS, MOESWEEP, "
              "RUN_ARGS, LAUNCHER, SWEEP)");
    }
    out += template_text.substr(pos, open - pos) + it->second;
    pos = close + 2;
  }
  return out + template_text.substr(pos);
}

std::string parse_job_id(const std::string& sbatch_output) {
  const std::string t = trim(sbatch_output);
  const std::string id = t.substr(0, t.find(';'));
  if (!all_digits(id)) throw std::runtime_error("sbatch printed no job id: '" + t + "'");
  return id;
}

bool job_state_active(const std::string& raw) {
  std::string state = trim(raw);
  state = state.substr(0, state.find(' '));  // sacct: "CANCELLED by 0"
  state.erase(std::remove(state.begin(), state.end(), '+'), state.end());
  static const char* active[] = {"PENDING",     "RUNNING",    "REQUEUED",      "REQUEUE_HOLD", "REQUEUE_FED",
                                 "CONFIGURING", "COMPLETING", "SUSPENDED",     "RESIZING",     "SIGNALING",
                                 "STAGE_OUT",   "STOPPED",    "RESV_DEL_HOLD", "SPECIAL_EXIT"};
  return std::any_of(std::begin(active), std::end(active), [&](const char* s) { return state == s; });
}

bool on_path(const std::string& program) {
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  for (const auto& dir : split(path ? path : "", ':')) {
    const auto candidate = std::filesystem::path(dir.empty() ? "." : dir) / program;
    std::error_code ec;
    if (std::filesystem::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return true;
  }
  return false;
}

CommandResult run_command(const std::vector<std::string>& argv, const std::string& stdin_text) {
  CommandResult result;
  if (argv.empty()) return result;
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  // Write stdin and read both outputs together, so that no pipe fills up and blocks the child.
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &previous);
  std::size_t written = 0;
  int in_fd = in[1];
  if (stdin_text.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  bool out_open = true, err_open = true;
  char buffer[4096];
  while (out_open || err_open || in_fd >= 0) {
    std::vector<pollfd> fds;
    if (out_open) fds.push_back({out[0], POLLIN, 0});
    if (err_open) fds.push_back({err[0], POLLIN, 0});
    if (in_fd >= 0) fds.push_back({in_fd, POLLOUT, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (const auto& f : fds) {
      if (f.revents == 0) continue;
      if (f.fd == in_fd) {
        // POLLOUT promises room for PIPE_BUF bytes: more could block while the child waits on us.
        const ssize_t n = ::write(in_fd, stdin_text.data() + written,
                                  std::min<std::size_t>(PIPE_BUF, stdin_text.size() - written));
        if (n > 0) written += static_cast<std::size_t>(n);
        if (n < 0 || written == stdin_text.size()) {
          ::close(in_fd);
          in_fd = -1;
        }
        continue;
      }
      const ssize_t n = ::read(f.fd, buffer, sizeof buffer);
      if (n > 0) {
        (f.fd == out[0] ? result.out : result.err).append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        (f.fd == out[0] ? out_open : err_open) = false;
      }
    }
  }
  ::close(out[0]);
  ::close(err[0]);
  if (in_fd >= 0) ::close(in_fd);
  ::sigaction(SIGPIPE, &previous, nullptr);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

JobStatus job_status(const std::string& job_id) {
  JobStatus status;
  if (job_id.empty()) {
    status.why = "no job id";
    return status;
  }
  // squeue first: it knows every job still in the queue (and, for a while, those that just ended).
  bool gone = false;  // squeue answered that the job is not in the queue
  std::string squeue_why = "squeue is not on the PATH";
  if (on_path("squeue")) {
    const auto r = run_command({"squeue", "--noheader", "--jobs=" + job_id, "--format=%T", "--states=all"});
    if (const std::string state = first_line(r.out); r.status == 0 && !state.empty())
      return status_from_word(state);
    // Slurm answers a job it has purged with "Invalid job id specified" (exit 1), some versions with
    // an empty list; any other failure (a timeout, no controller) is no answer.
    gone = r.status == 0 || contains_nocase(r.err + r.out, "invalid job id");
    squeue_why = "squeue: " + said(r);
  }
  // sacct: the final state of a job that has left the queue, where accounting is kept; and a second
  // opinion when squeue gave none.
  std::string sacct_why = "sacct is not on the PATH";
  if (on_path("sacct")) {
    const auto r =
        run_command({"sacct", "--noheader", "--allocations", "--jobs=" + job_id, "--format=State%30"});
    if (const std::string state = first_line(r.out); r.status == 0 && !state.empty())
      return status_from_word(state);
    sacct_why = r.status == 0 ? "sacct: no record of job " + job_id : "sacct: " + said(r);
  }
  if (gone) {
    status.kind = JobStatus::Kind::Finished;
    return status;
  }
  status.why = squeue_why + "; " + sacct_why;
  return status;
}

std::optional<std::string> job_state(const std::string& job_id) {
  if (job_id.empty()) return std::nullopt;
  const JobStatus status = job_status(job_id);
  if (status.state.empty()) return std::nullopt;
  return status.state;
}

NamedJobs jobs_named(const std::string& job_name) {
  NamedJobs named;
  if (!on_path("squeue")) {
    named.why = "squeue is not on the PATH";
    return named;
  }
  std::vector<std::string> argv = {"squeue", "--noheader", "--states=all", "--name=" + job_name,
                                   "--format=%i %T"};
  if (const auto user = login_name()) argv.push_back("--user=" + *user);
  const auto r = run_command(argv);
  if (r.status != 0) {
    named.why = "squeue: " + said(r);
    return named;
  }
  named.answered = true;
  for (const auto& line : split(r.out, '\n')) {
    std::istringstream fields(line);
    std::string id, state;
    if (fields >> id >> state) named.jobs.emplace_back(id, state);
  }
  // Oldest first: job ids count up (an array task's id is "<job>_<task>").
  const auto number = [](const std::string& id) {
    const std::string digits = id.substr(0, id.find_first_not_of("0123456789"));
    return digits.empty() || digits.size() > 18 ? 0LL : std::stoll(digits);
  };
  std::stable_sort(named.jobs.begin(), named.jobs.end(),
                   [&](const auto& a, const auto& b) { return number(a.first) < number(b.first); });
  return named;
}

SbatchOutcome classify_sbatch(const CommandResult& r) {
  SbatchOutcome outcome;
  // A job id on stdout is a queued job, whatever else sbatch said or its exit status.
  if (const std::string id = first_line(r.out); !id.empty()) {
    try {
      outcome.job_id = parse_job_id(id);
      outcome.kind = SbatchOutcome::Kind::Queued;
      return outcome;
    } catch (const std::runtime_error&) {
    }
  }
  outcome.detail = said(r);
  if (r.status == 0) {  // success without a job id: something answered, but not with a job we can name
    outcome.detail = "sbatch succeeded but printed no job id: " + outcome.detail;
    outcome.kind = SbatchOutcome::Kind::Unknown;
    return outcome;
  }
  if (r.status == 127) {  // sbatch could not be run: nothing reached Slurm
    outcome.kind = SbatchOutcome::Kind::Refused;
    return outcome;
  }
  if (r.status > 128) {  // killed by a signal, perhaps after the controller took the job
    outcome.detail = "sbatch was killed by signal " + std::to_string(r.status - 128) + ": " + outcome.detail;
    outcome.kind = SbatchOutcome::Kind::Unknown;
    return outcome;
  }
  // sbatch prints "Batch job submission failed: <reason>" both when the controller refused the job and
  // when it never answered; the reason tells which. These are Slurm's communication errors (and the
  // system's, which Slurm passes on); anything else is the controller's (or sbatch's own) no.
  static const char* no_answer[] = {"timed out",
                                    "timeout",
                                    "unable to contact",
                                    "connection refused",
                                    "connection reset",
                                    "transport endpoint",
                                    "zero bytes were transmitted",
                                    "communication",
                                    "socket",
                                    "standby mode",
                                    "broken pipe",
                                    "no route to host",
                                    "network is unreachable",
                                    "message receive failure",
                                    "message send failure",
                                    "temporarily unavailable",
                                    "temporarily unable",
                                    "interrupted system call"};
  outcome.kind = std::any_of(std::begin(no_answer), std::end(no_answer),
                             [&](const char* m) { return contains_nocase(outcome.detail, m); })
                     ? SbatchOutcome::Kind::Unknown
                     : SbatchOutcome::Kind::Refused;
  return outcome;
}

std::vector<std::string> partitions() {
  const auto r = run_command({"sinfo", "--noheader", "--all", "--format=%R"});
  if (r.status != 0) throw std::runtime_error("sinfo failed: " + trim(r.err.empty() ? r.out : r.err));
  std::vector<std::string> names;
  for (const auto& line : split(r.out, '\n'))
    if (const auto name = trim(line);
        !name.empty() && std::find(names.begin(), names.end(), name) == names.end())
      names.push_back(name);
  return names;
}

}  // namespace moesweep::orchestrator::slurm
