#include "moesweep/orchestrator/sweep_runner.h"

#include <mpi.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "backend.h"
#include "moesweep/db/store.h"
#include "moesweep/orchestrator/sweep_spec.h"

namespace moesweep::orchestrator {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// The one piece of process-wide state: set by SIGTERM/SIGUSR1, read by the loops below.
std::atomic<bool> g_stop_signal{false};
extern "C" void on_stop_signal(int) { g_stop_signal.store(true); }

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

enum Tag : int { kReady = 1, kHeartbeat = 2, kResult = 3, kAssign = 10, kStop = 11, kShutdown = 12 };

void send(int to, Tag tag, const json& message) {
  const std::string text = message.dump();
  MPI_Send(text.data(), static_cast<int>(text.size()), MPI_CHAR, to, tag, MPI_COMM_WORLD);
}

struct Message {
  int from;
  int tag;
  json body;
};

// Non-blocking: OpenMPI's blocking receive spins a core, which on a small machine steals a worker's.
std::optional<Message> poll(int from = MPI_ANY_SOURCE, int tag = MPI_ANY_TAG) {
  int ready = 0;
  MPI_Status status;
  MPI_Iprobe(from, tag, MPI_COMM_WORLD, &ready, &status);
  if (!ready) return std::nullopt;
  int size = 0;
  MPI_Get_count(&status, MPI_CHAR, &size);
  std::string text(static_cast<std::size_t>(size), '\0');
  MPI_Recv(text.data(), size, MPI_CHAR, status.MPI_SOURCE, status.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return Message{status.MPI_SOURCE, status.MPI_TAG, text.empty() ? json() : json::parse(text)};
}

// JSON has no NaN (a diverged loss): it travels as null and comes back as NaN.
double number(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? std::numeric_limits<double>::quiet_NaN() : it->get<double>();
}

json to_json(const WorkResult& r) {
  return {{"outcome", r.outcome}, {"eval_loss", r.eval_loss},         {"train_loss", r.train_loss},
          {"tokens", r.tokens},   {"steps", r.steps},                 {"tokens_per_s", r.tokens_per_s},
          {"seconds", r.seconds}, {"resumed_from_step", r.resumed_from_step}, {"message", r.message}};
}

WorkResult result_from_json(const json& j) {
  WorkResult r;
  r.outcome = j.at("outcome");
  r.eval_loss = number(j, "eval_loss");
  r.train_loss = number(j, "train_loss");
  r.tokens = j.value("tokens", std::int64_t{0});
  r.steps = j.value("steps", std::int64_t{0});
  r.tokens_per_s = number(j, "tokens_per_s");
  r.seconds = number(j, "seconds");
  r.resumed_from_step = j.value("resumed_from_step", std::int64_t{0});
  r.message = j.value("message", "");
  return r;
}

std::string host_name() {
  char name[256] = {0};
  gethostname(name, sizeof name - 1);
  return name;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

fs::path run_dir(const SweepRunOptions& o, const ExpandedRun& run) { return fs::path(o.workdir) / run.run_key; }

// The scheduling and bookkeeping half of rank 0, shared by the MPI loop and the serial loop.
class Coordinator {
 public:
  struct Assignment {
    std::size_t run_index;
    std::int64_t attempt_id;
    int ranks;
  };

  Coordinator(const SweepRunOptions& options, Sweep sweep, int world_size)
      : options_(options), sweep_(std::move(sweep)), store_(db::Store::open(options.db_path)) {
    std::vector<db::RunSpec> specs;
    for (const auto& r : sweep_.runs) specs.push_back(to_run_spec(r));
    const auto added = store_.register_sweep(sweep_.name, options.sweep_path, specs);
    const auto requeued = store_.requeue_interrupted("lost: the job ended while the run was running");
    if (options.retry_failed) store_.reopen_runs(sweep_.name, "failed");
    if (options.retry_diverged) store_.reopen_runs(sweep_.name, "diverged");
    store_.add_event("job_start", "sweep '" + sweep_.name + "' on " + std::to_string(world_size) + " ranks; " +
                                      std::to_string(added) + " new runs, " + std::to_string(requeued) +
                                      " interrupted runs requeued");

    std::map<std::string, std::string> state;
    for (const auto& row : store_.status(sweep_.name)) state[row.run_key] = row.state;
    const int workers = std::max(1, world_size - 1);
    state_.resize(sweep_.runs.size());
    for (std::size_t i = 0; i < sweep_.runs.size(); ++i) {
      const std::string& s = state_[i] = state[sweep_.runs[i].run_key];
      if (s == "pending" || s == "preempted") queue_.push_back(i);
      if (s == "failed" || s == "diverged") ++left_failed_;
      if (sweep_.runs[i].kind == RunKind::trunk) trunk_index_[sweep_.runs[i].run_key] = i;
    }
    // Trunks first, then longest first: cost is proportional to 6·N_act·(tokens trained) at a common
    // throughput.
    std::stable_sort(queue_.begin(), queue_.end(),
                     [&](std::size_t a, std::size_t b) { return before(a, b); });
    for (std::size_t i = 0; i < sweep_.runs.size(); ++i) {  // every run: a done trunk may be reopened
      const ExpandedRun& run = sweep_.runs[i];
      const auto memory = estimate_memory(run);
      const int ranks = gang_size(memory, static_cast<double>(sweep_.resources.rank_memory_bytes), workers);
      gang_[i] = ranks;
      // A run no gang can train: its replicated state alone exceeds rank_memory, or the gang its memory
      // needs is more ranks than its smallest batch has routing groups (ranks take whole groups).
      if (ranks == 0) {
        unschedulable_[i] = "needs " + std::to_string(static_cast<long long>(memory.replicated_bytes / 1e9)) +
                            " GB of parameters and optimizer state per rank; [resources] rank_memory is " +
                            std::to_string(sweep_.resources.rank_memory_bytes / 1000000000) + " GB";
      } else if (const auto problem = trainer::data_parallel_problem(run.config, ranks); !problem.empty()) {
        unschedulable_[i] =
            "[resources] rank_memory needs a gang of " + std::to_string(ranks) + " ranks, but " + problem;
      }
    }
    for (const auto& [key, t] : trunk_index_) delete_branch_points_once_family_done(t);  // an earlier job's
    if (const char* end = std::getenv("SLURM_JOB_END_TIME"); end && !options_.deadline) deadline_ = std::atof(end);
    if (options_.deadline) deadline_ = *options_.deadline;
    std::fprintf(stderr, "moesweep run: sweep '%s': %zu runs, %zu to train, %zu done, on %d rank(s)\n",
                 sweep_.name.c_str(), sweep_.runs.size(), queue_.size(),
                 sweep_.runs.size() - queue_.size() - static_cast<std::size_t>(left_failed_), world_size);
  }

  const Sweep& sweep() const { return sweep_; }
  bool queue_empty() const { return queue_.empty(); }

  // The first run in queue order (trunks, then the longest) that fits `idle` ranks, is ready (a branch
  // needs its trunk's checkpoint) and can reach its next checkpoint before the deadline.
  std::optional<Assignment> next(int idle, int first_rank) {
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      const std::size_t i = *it;
      const int ranks = gang_[i];
      if (unschedulable_.count(i)) {
        fail_unschedulable(i);
        queue_.erase(it);
        return next(idle, first_rank);
      }
      if (ranks > idle) continue;
      if (sweep_.runs[i].kind == RunKind::branch) {
        const Readiness r = readiness(i);
        if (r == Readiness::waiting) continue;
        if (r == Readiness::trunk_reopened) return next(idle, first_rank);  // the queue changed
        if (r == Readiness::never) {
          queue_.erase(it);
          fail_orphaned_branch(i);
          return next(idle, first_rank);
        }
      }
      if (!reaches_checkpoint_before_deadline(sweep_.runs[i], ranks)) continue;
      queue_.erase(it);
      const auto attempt = store_.start_attempt(sweep_.runs[i].run_key, first_rank, ranks, host_name());
      state_[i] = "running";
      return Assignment{i, attempt, ranks};
    }
    return std::nullopt;
  }

  // Runs that cannot start before the deadline stay pending for the next job. A branch still waiting for
  // its trunk's checkpoint counts as blocked: only its trunk (in the queue too) can unblock it.
  bool deadline_blocks_everything() const {
    if (!deadline_) return false;
    for (std::size_t i : queue_) {
      if (sweep_.runs[i].kind == RunKind::branch && !ready_.count(i) &&
          !fs::exists(branch_point_file(options_.workdir, sweep_.runs[i])))
        continue;
      if (reaches_checkpoint_before_deadline(sweep_.runs[i], gang_.at(i))) return false;
    }
    return true;
  }

  void heartbeat(const db::Heartbeat& beat) { beats_.push_back(beat); }

  void flush(bool force = false) {
    if (beats_.empty() || (!force && Clock::now() - last_flush_ < std::chrono::seconds(1))) return;
    store_.record_heartbeats(beats_);
    beats_.clear();
    last_flush_ = Clock::now();
  }

  void finished(const Assignment& a, const WorkResult& r) {
    flush(true);
    const ExpandedRun& run = sweep_.runs[a.run_index];
    state_[a.run_index] = r.outcome == "completed"  ? "done"
                          : r.outcome == "stopped"  ? "preempted"
                          : r.outcome == "diverged" ? "diverged"
                                                    : "pending";  // failed: set below if not retried
    if (r.outcome == "blocked") {
      // Nothing was trained: the branch waits again, and its trunk will write the checkpoint anew.
      store_.finish_attempt(a.attempt_id, {"pending", "blocked", std::nullopt, std::nullopt, r.message});
      log(run, "not started: " + r.message);
      ready_.erase(a.run_index);
      if (const auto t = trunk_index_.find(run.trunk_key); t != trunk_index_.end())
        branch_points_seen_[t->second] = {};  // look along the trunk's branch points again
      requeue(a.run_index);
      return;
    }
    if (r.outcome == "completed") {
      if (r.tokens_per_s > 0) {
        const double measured = 6.0 * static_cast<double>(run.n_act) * r.tokens_per_s / a.ranks;
        flops_per_rank_s_ = flops_per_rank_s_ > 0 ? 0.7 * flops_per_rank_s_ + 0.3 * measured : measured;
      }
      store_.finish_attempt(a.attempt_id,
                            {"done", "completed", r.eval_loss, r.train_loss, "", r.resumed_from_step});
      log(run, "done: eval loss " + std::to_string(r.eval_loss));
      if (const auto t = trunk_index_.find(run.kind == RunKind::trunk ? run.run_key : run.trunk_key);
          t != trunk_index_.end())
        delete_branch_points_once_family_done(t->second);
    } else if (r.outcome == "stopped") {
      store_.finish_attempt(a.attempt_id,
                            {"preempted", "stopped", std::nullopt, std::nullopt, "", r.resumed_from_step});
      ++preempted_;
      log(run, "preempted at step " + std::to_string(r.steps));
    } else if (r.outcome == "diverged") {
      store_.finish_attempt(a.attempt_id, {"diverged", "diverged", std::nullopt, std::nullopt, r.message});
      ++left_failed_;
      log(run, "diverged: " + r.message);
    } else {
      const auto failures = store_.count_attempts_since_reopen(run.run_key, "failed") + 1;
      const bool retry = failures < sweep_.resources.max_attempts;
      store_.finish_attempt(a.attempt_id, {retry ? "pending" : "failed", "failed", std::nullopt, std::nullopt,
                                           r.message});
      log(run, "failed (" + std::to_string(failures) + "/" + std::to_string(sweep_.resources.max_attempts) +
                   "): " + r.message);
      if (retry) {
        requeue(a.run_index);
      } else {
        state_[a.run_index] = "failed";
        ++left_failed_;
      }
    }
  }

  // A worker went silent or away: its run goes back to the queue and resumes from its checkpoint.
  void lost(const Assignment& a, const std::string& reason) {
    flush(true);
    store_.finish_attempt(a.attempt_id, {"pending", reason, std::nullopt, std::nullopt, reason});
    log(sweep_.runs[a.run_index], reason + "; requeued");
    state_[a.run_index] = "pending";
    requeue(a.run_index);
  }

  // Runs still assigned when the job stops are preempted by definition.
  void stopped_unassigned() { preempted_ += static_cast<int>(queue_.size()); }

  int exit_status(bool stopped) {
    flush(true);
    double workers_cpu = 0;
    for (const auto& [rank, cpu] : worker_cpu_s_) workers_cpu += cpu;
    store_.add_event("job_end", std::string(stopped ? "stopped by a signal or the deadline" : "queue empty") +
                                    "; coordinator CPU " + std::to_string(process_cpu_seconds()) +
                                    " s; workers CPU " + std::to_string(workers_cpu) + " s");
    if (stopped || preempted_ > 0 || !queue_.empty()) return kExitPreempted;
    return left_failed_ > 0 ? 1 : 0;
  }

  double heartbeat_timeout() const { return sweep_.resources.heartbeat_timeout_s; }
  // A worker's process CPU time so far (it reports the running total with each result).
  void worker_cpu(int rank, double seconds) { worker_cpu_s_[rank] = seconds; }

 private:
  // Queue order: trunks first (their branches wait on them), then the most work first.
  bool before(std::size_t a, std::size_t b) const {
    const ExpandedRun& x = sweep_.runs[a];
    const ExpandedRun& y = sweep_.runs[b];
    if ((x.kind == RunKind::trunk) != (y.kind == RunKind::trunk)) return x.kind == RunKind::trunk;
    return x.trained_flops > y.trained_flops;
  }

  void requeue(std::size_t i) {
    queue_.insert(std::find_if(queue_.begin(), queue_.end(), [&](std::size_t j) { return before(i, j); }), i);
  }

  // Once a trunk and all its branches are done nothing starts from its branch points again (a larger
  // budget added later makes a new trunk), so they go: at the paper's scale each is a whole model and
  // optimizer state. --keep-branch-points keeps them. Runs' own final checkpoints always stay.
  void delete_branch_points_once_family_done(std::size_t t) {
    if (options_.keep_branch_points || state_[t] != "done") return;
    const std::string& trunk_key = sweep_.runs[t].run_key;
    for (std::size_t i = 0; i < sweep_.runs.size(); ++i) {
      if (sweep_.runs[i].kind == RunKind::branch && sweep_.runs[i].trunk_key == trunk_key && state_[i] != "done")
        return;
    }
    const fs::path dir = branch_points_dir(options_.workdir, trunk_key);
    std::error_code error;
    const auto removed = fs::remove_all(dir, error);
    if (error) {
      log(sweep_.runs[t], "could not delete its branch points in " + dir.string() + ": " + error.message());
    } else if (removed > 0) {
      log(sweep_.runs[t], "every branch done: deleted its branch points (" + dir.string() + ")");
    }
  }

  // Whether a branch can start: once its trunk's checkpoint at the branch point exists. While the trunk is
  // queued or running the branch waits; a finished trunk without that checkpoint (a branch found it
  // corrupt and moved it aside, or it was deleted) is reopened to write it again, a few times at most;
  // a trunk that failed or diverged before it leaves the branch with nothing to start from.
  enum class Readiness { ready, waiting, trunk_reopened, never };
  Readiness readiness(std::size_t i) {
    if (ready_.count(i)) return Readiness::ready;
    const ExpandedRun& run = sweep_.runs[i];
    const auto trunk = trunk_index_.find(run.trunk_key);
    if (trunk == trunk_index_.end()) return Readiness::never;
    const std::size_t t = trunk->second;
    const std::string& s = state_[t];
    const bool trunk_busy = s == "pending" || s == "preempted" || s == "running";
    const fs::path file = branch_point_file(options_.workdir, run);
    if (branch_points_written(t, !trunk_busy) >= run.branch_point.step || (!trunk_busy && fs::exists(file))) {
      ready_.insert(i);
      return Readiness::ready;
    }
    if (trunk_busy) return Readiness::waiting;
    if (s == "done" && trunk_reopens_[t] < sweep_.resources.max_attempts) {
      ++trunk_reopens_[t];
      store_.reopen_run(sweep_.runs[t].run_key, "branch point at step " +
                                                    std::to_string(run.branch_point.step) + " is missing (" +
                                                    file.string() + "); the trunk trains again to write it");
      log(sweep_.runs[t],
          "reopened: its checkpoint at step " + std::to_string(run.branch_point.step) + " is missing");
      state_[t] = "pending";
      requeue(t);
      return Readiness::trunk_reopened;
    }
    return Readiness::never;
  }

  // The step of the last branch point trunk `t` has written, as far as this coordinator has seen. A trunk
  // writes them in step order, so one look along its list finds every new one; while it trains, that
  // look happens at most every 0.2 s, since the work directory may be a parallel file system and this
  // runs on every pass of the scheduling loop. 0: none yet.
  std::int64_t branch_points_written(std::size_t t, bool look_now) {
    BranchPointsSeen& seen = branch_points_seen_[t];
    const auto& points = sweep_.runs[t].branch_points;
    if (look_now || Clock::now() - seen.last_look >= std::chrono::milliseconds(200)) {
      seen.last_look = Clock::now();
      const std::string& trunk = sweep_.runs[t].run_key;
      while (seen.count < points.size() &&
             fs::exists(branch_point_path(options_.workdir, trunk, points[seen.count].step)))
        ++seen.count;
    }
    return seen.count == 0 ? 0 : points[seen.count - 1].step;
  }

  void fail_orphaned_branch(std::size_t i) {
    const ExpandedRun& run = sweep_.runs[i];
    const std::size_t t = trunk_index_.count(run.trunk_key) ? trunk_index_.at(run.trunk_key) : i;
    const auto attempt = store_.start_attempt(run.run_key, 0, 0, host_name());
    store_.finish_attempt(
        attempt, {"failed", "no trunk checkpoint", std::nullopt, std::nullopt,
                  "its trunk " + run.trunk_key.substr(0, 12) + " ended " + state_[t] +
                      " without a usable checkpoint at step " + std::to_string(run.branch_point.step)});
    state_[i] = "failed";
    log(run, "failed: its trunk ended " + state_[t] + " without its branch point");
    ++left_failed_;
  }

  bool reaches_checkpoint_before_deadline(const ExpandedRun& run, int ranks) const {
    if (!deadline_ || flops_per_rank_s_ <= 0) return true;  // no deadline, or no throughput measured yet
    const double tokens =
        static_cast<double>(std::min(run.config.train.checkpoint_every_tokens, run.trained_tokens));
    const double seconds = 6.0 * static_cast<double>(run.n_act) * tokens / (flops_per_rank_s_ * ranks);
    return unix_now() + seconds < *deadline_;
  }

  void fail_unschedulable(std::size_t i) {
    const ExpandedRun& run = sweep_.runs[i];
    const auto attempt = store_.start_attempt(run.run_key, 0, 0, host_name());
    const std::string& why = unschedulable_.at(i);
    log(run, "cannot be scheduled: " + why);
    store_.finish_attempt(attempt, {"failed", "unschedulable", std::nullopt, std::nullopt, why});
    state_[i] = "failed";
    ++left_failed_;
  }

  void log(const ExpandedRun& run, const std::string& what) {
    const std::string kind = run.kind == RunKind::independent ? "" : std::string(to_string(run.kind)) + " ";
    std::fprintf(stderr, "moesweep run: %s%s (E=%lld, N_act=%lld, D=%lld) %s\n", kind.c_str(),
                 run.run_key.substr(0, 12).c_str(), static_cast<long long>(run.config.model.experts),
                 static_cast<long long>(run.n_act), static_cast<long long>(run.config.train.tokens),
                 what.c_str());
  }

  SweepRunOptions options_;
  Sweep sweep_;
  db::Store store_;
  std::vector<std::size_t> queue_;
  std::map<std::size_t, int> gang_;
  std::map<std::size_t, std::string> unschedulable_;  // run index → why no gang can train it
  std::vector<std::string> state_;                  // each run's state as this job knows it
  std::map<std::string, std::size_t> trunk_index_;  // trunk run_key → run index
  std::set<std::size_t> ready_;                     // branches whose trunk checkpoint was seen
  std::map<std::size_t, int> trunk_reopens_;        // trunks reopened in this job to write a branch point
  struct BranchPointsSeen {
    std::size_t count = 0;  // the first `count` branch points of the trunk were seen written
    Clock::time_point last_look;
  };
  std::map<std::size_t, BranchPointsSeen> branch_points_seen_;  // by trunk
  std::vector<db::Heartbeat> beats_;
  Clock::time_point last_flush_ = Clock::now();
  std::optional<double> deadline_;
  double flops_per_rank_s_ = 0;  // measured, smoothed
  int preempted_ = 0;
  int left_failed_ = 0;
  std::map<int, double> worker_cpu_s_;
};

// A worker's view of its current run: heartbeats at an interval, stop on a signal or a STOP message.
class WorkerObserver : public WorkObserver {
 public:
  WorkerObserver(std::int64_t attempt_id, bool leader, double interval, MPI_Comm gang)
      : attempt_id_(attempt_id), leader_(leader), interval_(interval), gang_(gang) {}

  void progress(const WorkProgress& p) override {
    if (!leader_ || Clock::now() - last_ < std::chrono::duration<double>(interval_)) return;
    last_ = Clock::now();
    send(0, kHeartbeat,
         {{"attempt", attempt_id_}, {"step", p.step}, {"tokens", p.tokens}, {"loss", p.train_loss},
          {"lr", p.lr}, {"tokens_per_s", p.tokens_per_s}});
  }

  bool stop_requested() override {
    if (!stop_ && (g_stop_signal.load() || poll(0, kStop))) stop_ = true;
    if (gang_ == MPI_COMM_NULL) return stop_;
    // Every rank of a data-parallel gang must stop at the same step, or the next all-reduce hangs.
    int local = stop_ ? 1 : 0, any = 0;
    MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, gang_);
    return any != 0;
  }

 private:
  std::int64_t attempt_id_;
  bool leader_;
  double interval_;
  MPI_Comm gang_;
  bool stop_ = false;
  Clock::time_point last_ = Clock::now() - std::chrono::hours(1);
};

void sleep_briefly() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }

int run_worker(const SweepRunOptions& options, const Sweep& sweep, int rank) {
  auto backend = make_backend(options);
  send(0, kReady, json());
  while (true) {
    std::optional<Message> m = poll(0);
    if (!m) {
      sleep_briefly();
      continue;
    }
    if (m->tag == kShutdown) return 0;
    if (m->tag != kAssign) continue;  // a STOP that arrived after its run ended

    const std::int64_t attempt = m->body.at("attempt");
    const ExpandedRun& run = sweep.runs.at(m->body.at("run").get<std::size_t>());
    const std::vector<int> gang = m->body.at("gang");
    MPI_Comm comm = MPI_COMM_NULL;
    if (gang.size() > 1) {
      MPI_Group world_group, gang_group;
      MPI_Comm_group(MPI_COMM_WORLD, &world_group);
      MPI_Group_incl(world_group, static_cast<int>(gang.size()), gang.data(), &gang_group);
      MPI_Comm_create_group(MPI_COMM_WORLD, gang_group, static_cast<int>(attempt % 32768), &comm);
      MPI_Group_free(&gang_group);
      MPI_Group_free(&world_group);
    }
    const bool leader = gang.front() == rank;
    WorkerObserver observer(attempt, leader, options.heartbeat_interval_s, comm);
    const WorkResult result = backend->train(run, run_dir(options, run), comm, observer);
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
    if (leader) send(0, kResult, {{"attempt", attempt}, {"result", to_json(result)}, {"cpu_s", process_cpu_seconds()}});
    send(0, kReady, json());
  }
}

int run_coordinator(const SweepRunOptions& options, Sweep sweep, int world_size) {
  Coordinator c(options, std::move(sweep), world_size);
  struct Busy {
    Coordinator::Assignment assignment;
    std::vector<int> gang;
    Clock::time_point last_heard;
  };
  std::map<std::int64_t, Busy> busy;  // by attempt id
  std::set<int> idle, dead;
  bool stopping = false;

  auto stop_all = [&] {
    stopping = true;
    for (auto& [id, b] : busy)
      for (int r : b.gang) send(r, kStop, json());
  };

  while (true) {
    bool active = false;
    if (!stopping && g_stop_signal.load()) {
      std::fprintf(stderr, "moesweep run: stop requested; checkpointing %zu running run(s)\n", busy.size());
      stop_all();
    }
    while (std::optional<Message> m = poll()) {
      active = true;
      if (dead.count(m->from)) continue;
      if (m->tag == kReady) {
        idle.insert(m->from);
      } else if (m->tag == kHeartbeat) {
        const std::int64_t attempt = m->body.at("attempt");
        auto it = busy.find(attempt);
        if (it == busy.end()) continue;  // a run already requeued
        it->second.last_heard = Clock::now();
        c.heartbeat({attempt, m->body.at("step"), m->body.at("tokens"), number(m->body, "loss"), std::nullopt,
                     number(m->body, "tokens_per_s"), number(m->body, "lr")});
      } else if (m->tag == kResult) {
        c.worker_cpu(m->from, m->body.value("cpu_s", 0.0));
        auto it = busy.find(m->body.at("attempt").get<std::int64_t>());
        if (it == busy.end()) continue;
        c.finished(it->second.assignment, result_from_json(m->body.at("result")));
        busy.erase(it);
      }
    }
    // Silent workers: requeue their run and never use those ranks again.
    for (auto it = busy.begin(); it != busy.end();) {
      const double silent = std::chrono::duration<double>(Clock::now() - it->second.last_heard).count();
      if (silent > c.heartbeat_timeout()) {
        c.lost(it->second.assignment, "heartbeat timeout after " + std::to_string(static_cast<int>(silent)) + " s");
        for (int r : it->second.gang) dead.insert(r), idle.erase(r);
        it = busy.erase(it);
      } else {
        ++it;
      }
    }
    if (!stopping) {
      while (!idle.empty()) {
        auto a = c.next(static_cast<int>(idle.size()), *idle.begin());
        if (!a) break;
        std::vector<int> gang(idle.begin(), std::next(idle.begin(), a->ranks));
        for (int r : gang) {
          idle.erase(r);
          send(r, kAssign, {{"attempt", a->attempt_id}, {"run", a->run_index}, {"gang", gang}});
        }
        busy[a->attempt_id] = Busy{*a, gang, Clock::now()};
        active = true;
      }
      if (busy.empty() && (c.queue_empty() || c.deadline_blocks_everything())) break;
      if (busy.empty() && static_cast<int>(dead.size()) == world_size - 1) {
        std::fprintf(stderr, "moesweep run: every worker rank was lost; stopping\n");
        stopping = true;
      }
    }
    if (stopping && busy.empty()) break;
    c.flush();
    if (!active) sleep_briefly();
  }
  if (stopping) c.stopped_unassigned();
  for (int r = 1; r < world_size; ++r)
    if (!dead.count(r)) send(r, kShutdown, json());
  const int status = c.exit_status(stopping || g_stop_signal.load());
  if (!dead.empty()) {
    // A hung rank would hold MPI_Finalize forever; the store is flushed, so end the job for it.
    std::fprintf(stderr, "moesweep run: %zu rank(s) stopped responding; ending the job with MPI_Abort\n",
                 dead.size());
    MPI_Abort(MPI_COMM_WORLD, status == 0 ? 1 : status);
  }
  return status;
}

// One rank: the coordinator trains each run itself, in the same process.
int run_serial(const SweepRunOptions& options, Sweep sweep) {
  Coordinator c(options, std::move(sweep), 1);
  auto backend = make_backend(options);
  struct Local : WorkObserver {
    Coordinator& c;
    std::int64_t attempt;
    double interval;
    Clock::time_point last = Clock::now() - std::chrono::hours(1);
    Local(Coordinator& co, std::int64_t a, double i) : c(co), attempt(a), interval(i) {}
    void progress(const WorkProgress& p) override {
      if (Clock::now() - last < std::chrono::duration<double>(interval)) return;
      last = Clock::now();
      c.heartbeat({attempt, p.step, p.tokens, p.train_loss, std::nullopt, p.tokens_per_s, p.lr});
      c.flush(true);
    }
    bool stop_requested() override { return g_stop_signal.load(); }
  };
  bool stopped = false;
  while (!g_stop_signal.load()) {
    auto a = c.next(1, 0);
    if (!a) break;
    Local observer(c, a->attempt_id, options.heartbeat_interval_s);
    const ExpandedRun& run = c.sweep().runs[a->run_index];
    c.finished(*a, backend->train(run, run_dir(options, run), MPI_COMM_NULL, observer));
  }
  stopped = g_stop_signal.load();
  if (stopped) c.stopped_unassigned();
  return c.exit_status(stopped);
}

}  // namespace

MemoryEstimate estimate_memory(const ExpandedRun& run) {
  const auto& m = run.config.model;
  MemoryEstimate e;
  // fp32 weights, gradients and AdamW's two moments; the router (d·E per layer) included.
  const double params = static_cast<double>(run.n_total + m.d_model * m.experts * m.n_layers);
  e.replicated_bytes = 16.0 * params;
  // Activations kept for the backward pass, per token and layer (Korthikanti et al. 2022, fp32):
  // about 34·d plus 5·heads·seq_len for the attention scores, in 2-byte units, doubled for fp32;
  // plus the logits.
  const double tokens = static_cast<double>(run.config.train.batch_tokens);
  e.activation_bytes = tokens * (static_cast<double>(m.n_layers) *
                                     (34.0 * static_cast<double>(m.d_model) + 5.0 * static_cast<double>(m.n_heads * m.seq_len)) * 2.0 +
                                 8.0 * static_cast<double>(m.vocab_size));
  return e;
}

int gang_size(const MemoryEstimate& e, double rank_memory, int max_ranks) {
  if (rank_memory <= 0) return 1;
  for (int k = 1; k <= max_ranks; ++k)
    if (e.replicated_bytes + e.activation_bytes / k <= rank_memory) return k;
  return 0;
}

int run_sweep(const SweepRunOptions& options) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  install_signal_handlers();
  // Every rank expands the same file, so a run travels as its index in the canonical order.
  Sweep sweep = load_sweep_file(options.sweep_path);
  if (size == 1) return run_serial(options, std::move(sweep));
  if (rank == 0) return run_coordinator(options, std::move(sweep), size);
  return run_worker(options, sweep, rank);
}

}  // namespace moesweep::orchestrator
