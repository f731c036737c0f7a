#include "moesweep/orchestrator/sweep_runner.h"

#include <mpi.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "backend.h"
#include "moesweep/db/store.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/lease.h"
#include "moesweep/orchestrator/scheduler.h"
#include "moesweep/orchestrator/sweep_spec.h"
#include "rank_placement.h"

namespace moesweep::orchestrator {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// The one piece of process-wide state: set by SIGTERM/SIGUSR1, read by the loops below (and which of the
// two it was, for the command backend to forward).
std::atomic<bool> g_stop_signal{false};
std::atomic<int> g_stop_signo{0};
extern "C" void on_stop_signal(int signo) {
  g_stop_signo.store(signo);
  g_stop_signal.store(true);
}
int received_stop_signal() {
  const int signo = g_stop_signo.load();
  return signo != 0 ? signo : SIGUSR1;
}

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

enum Tag : int { kReady = 1, kHeartbeat = 2, kResult = 3, kAlive = 4, kAssign = 10, kStop = 11, kShutdown = 12 };

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

// Keeps the coordinator's lease alive from its own thread and connection, so that nothing the main
// thread does (a long serial eval, a slow store write) lets it lapse. When a renewal finds the lease
// broken, another coordinator has taken the sweep: lost() turns true and the coordinator must stop.
// After each renewal it also keeps the WAL in check (Store::maintain_wal), on this same connection.
class LeaseKeeper {
 public:
  LeaseKeeper(std::string db_path, db::Journal journal, std::int64_t lease_id, double ttl_s)
      : db_path_(std::move(db_path)),
        journal_(journal),
        lease_id_(lease_id),
        ttl_s_(ttl_s),
        thread_([this] { loop(); }) {}
  ~LeaseKeeper() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  bool lost() const { return lost_.load(); }

 private:
  void loop() {
    const auto every = std::chrono::duration<double>(std::max(0.1, ttl_s_ / 6));
    // The WAL's upkeep writes a row too: every 30 s is often enough for a warning about minutes.
    const auto upkeep_every = std::chrono::seconds(30);
    auto last_upkeep = Clock::now() - upkeep_every;
    std::optional<db::Store> store;
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, every, [this] { return done_; })) {
      try {
        if (!store) store.emplace(db::Store::open(db_path_, db::Store::Mode::ReadWrite, journal_));
        if (!store->renew_lease(lease_id_, ttl_s_, unix_now())) {
          lost_.store(true);
          return;
        }
      } catch (const std::exception& e) {  // a busy or unreachable store: try again at the next tick
        std::fprintf(stderr, "moesweep run: could not renew the sweep's lease: %s\n", e.what());
        store.reset();
        continue;
      }
      if (Clock::now() - last_upkeep < upkeep_every) continue;
      last_upkeep = Clock::now();
      try {
        store->maintain_wal(unix_now());
      } catch (const std::exception& e) {  // upkeep only: the next tick tries again
        std::fprintf(stderr, "moesweep run: could not check the store's WAL: %s\n", e.what());
      }
    }
  }
  std::string db_path_;
  db::Journal journal_;
  std::int64_t lease_id_;
  double ttl_s_;
  std::atomic<bool> lost_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::thread thread_;
};

// Takes the sweep's lease, or throws InputError naming its live owner (lease.h has the rules).
std::int64_t acquire_lease(db::Store& store, const std::string& sweep, const SweepRunOptions& options) {
  const db::LeaseOwner me = this_process_owner();
  // A holder on this host may be on its way out: a rank outlives a killed mpirun by a second or so
  // (each rank has a process group of its own), and a user runs the same command again at once.
  const auto patience = Clock::now() + std::chrono::seconds(5);
  while (true) {
    const auto held = store.sweep_lease(sweep);
    HolderFacts facts;
    if (held && held->owner.host == me.host) {
      facts.on_this_host = true;
      facts.process_gone = !process_alive(held->owner.pid, held->owner.pid_start);
    }
    const double now = unix_now();
    const LeaseDecision d = decide_lease(sweep, held, me, facts, now, options.take_over);
    if (d.action == LeaseDecision::Action::refuse && facts.on_this_host && Clock::now() < patience) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    if (d.action == LeaseDecision::Action::refuse) throw InputError(d.message);
    if (d.action == LeaseDecision::Action::wait) {
      std::fprintf(stderr, "moesweep run: %s\n", d.message.c_str());
      std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.05, d.wait_until - now + 0.05)));
      continue;
    }
    const std::optional<std::int64_t> take =
        d.action == LeaseDecision::Action::take_over ? std::optional(held->id) : std::nullopt;
    const auto got = store.acquire_sweep(sweep, me, options.lease_s, now, take, d.message);
    if (!got.lease_id) continue;  // another coordinator moved first: look again
    if (!d.message.empty()) {
      std::fprintf(stderr, "moesweep run: took sweep '%s' over: %s\n", sweep.c_str(), d.message.c_str());
      store.add_event("take_over", "lease " + std::to_string(*got.lease_id) + ": " + d.message);
    }
    return *got.lease_id;
  }
}

// The scheduler's options for this job. The simulate backend's clock runs time_scale wall seconds per
// nominal second, while the coordinator's clock (its deadline, the throughput it measures) is the wall
// clock: the stated wall_clock and rank_flops are nominal, so they go into wall time too, or the first
// measured throughput would meet a wall clock 1/time_scale times too long and shrink every gang.
scheduling::SchedulerOptions scheduler_options(const SweepRunOptions& options, const Resources& resources) {
  scheduling::SchedulerOptions o = scheduling::scheduler_options(resources);
  if (options.backend == "simulate" && options.time_scale > 0) {
    o.wall_clock_s *= options.time_scale;
    o.rank_flops /= options.time_scale;
  }
  return o;
}

// FLOPs of `run`'s own training (ExpandedRun::trained_flops) up to token position `tokens`.
double trained_flops_at(const ExpandedRun& run, std::int64_t tokens) {
  const std::int64_t from = run.kind == RunKind::branch ? run.branch_point.tokens : 0;
  const auto own = std::clamp<std::int64_t>(tokens - from, 0, run.trained_tokens);
  return 6.0 * static_cast<double>(run.n_act) * static_cast<double>(own);
}

// The bookkeeping half of rank 0, shared by the MPI loop and the serial loop. What to start, on how many
// ranks, and what becomes of runs that cannot start is the scheduler's (scheduler.h); this class gathers
// its snapshot (states, the branch points on disk, the clock) and applies its decisions to the store.
class Coordinator {
 public:
  struct Assignment {
    std::size_t run_index;
    std::int64_t attempt_id;
    int ranks;
  };

  Coordinator(const SweepRunOptions& options, Sweep sweep, int world_size)
      : options_(options),
        sweep_(std::move(sweep)),
        store_(db::Store::open(options.db_path, db::Store::Mode::ReadWrite, sweep_.journal)),
        scheduler_(scheduling::run_facts(sweep_), scheduler_options(options, sweep_.resources)),
        worker_ranks_(std::max(1, world_size - 1)) {
    std::vector<db::RunSpec> specs;
    for (const auto& r : sweep_.runs) specs.push_back(to_run_spec(r));
    // The lease first: registering changes the sweep's runs, which only its owner may do.
    if (!store_.sweep(sweep_.name)) store_.register_sweep(sweep_.name, options.sweep_path, {});
    lease_id_ = acquire_lease(store_, sweep_.name, options_);
    std::fprintf(stderr, "moesweep run: store %s: journal %s\n", options.db_path.c_str(),
                 store_.journal_choice().reason.c_str());
    keeper_.emplace(options_.db_path, sweep_.journal, lease_id_, options_.lease_s);
    const auto added = store_.register_sweep(sweep_.name, options.sweep_path, specs);
    // Only attempts whose coordinator's lease has lapsed: another coordinator's live runs stay its own.
    const auto requeued =
        store_.requeue_lapsed("lost: the job ended while the run was running (its lease lapsed)", unix_now());
    if (options.retry_failed) store_.reopen_runs(sweep_.name, "failed");
    if (options.retry_diverged) store_.reopen_runs(sweep_.name, "diverged");
    store_.add_event("job_start", "sweep '" + sweep_.name + "' on " + std::to_string(world_size) + " ranks; " +
                                      std::to_string(added) + " new runs, " + std::to_string(requeued) +
                                      " interrupted runs requeued");

    std::map<std::string, const db::StatusRow*> rows;
    const std::vector<db::StatusRow> status = store_.status(sweep_.name);
    for (const auto& row : status) rows[row.run_key] = &row;
    state_.resize(sweep_.runs.size());
    flops_done_.resize(sweep_.runs.size());
    for (std::size_t i = 0; i < sweep_.runs.size(); ++i) {
      const ExpandedRun& run = sweep_.runs[i];
      const auto row = rows.find(run.run_key);
      std::string& s = state_[i] = row == rows.end() ? "" : row->second->state;
      // What its checkpoints hold, about: the store's progress is as of its last heartbeat.
      if (s != "running" && row != rows.end()) flops_done_[i] = row->second->progress * run.trained_flops;
      // A run another live coordinator is training (a run shared with its sweep) is queued here too:
      // claiming it fails until that coordinator has finished it or its lease lapses.
      if (s == "running") s = "pending";
      if (s == "failed" || s == "diverged") ++left_failed_;
      if (run.kind == RunKind::trunk) trunk_index_[run.run_key] = i;
    }
    for (const auto& [key, t] : trunk_index_) delete_branch_points_once_family_done(t);  // an earlier job's
    if (const char* end = std::getenv("SLURM_JOB_END_TIME"); end && !options_.deadline) deadline_ = std::atof(end);
    if (options_.deadline) deadline_ = *options_.deadline;
    const std::size_t to_train = queued_runs();
    std::fprintf(stderr, "moesweep run: sweep '%s': %zu runs, %zu to train, %zu done, on %d rank(s)\n",
                 sweep_.name.c_str(), sweep_.runs.size(), to_train,
                 sweep_.runs.size() - to_train - static_cast<std::size_t>(left_failed_), world_size);
  }

  const Sweep& sweep() const { return sweep_; }
  bool waiting_elsewhere() const { return !elsewhere_.empty(); }
  bool queue_empty() const { return queued_runs() == 0; }

  // The run to start on `idle` ranks (the first of them `first_rank`), if any: asks the scheduler until
  // it starts a run or waits, applying each decision on the way (a failure recorded, a trunk reopened, a
  // run another coordinator holds looked at again later).
  std::optional<Assignment> next(int idle, int first_rank) {
    using Action = scheduling::Decision::Action;
    while (true) {
      const scheduling::Decision d = scheduler_.decide(snapshot(idle));
      if (d.action == Action::wait) return std::nullopt;
      if (d.action == Action::fail) {
        fail(d);
        continue;
      }
      if (d.action == Action::reopen_trunk) {
        reopen_trunk(d);
        continue;
      }
      const ExpandedRun& run = sweep_.runs[d.run];
      const auto attempt =
          store_.claim_run(run.run_key, first_rank, d.ranks, host_name(), lease_id_, unix_now());
      if (!attempt) {
        claimed_elsewhere(d.run);
        continue;
      }
      elsewhere_.erase(d.run);
      state_[d.run] = "running";
      attempt_run_[*attempt] = d.run;
      if (!d.note.empty()) log(run, d.note);
      return Assignment{d.run, *attempt, d.ranks};
    }
  }

  // The lease on the sweep was broken (another coordinator took it over): stop without writing more.
  bool lease_lost() const { return keeper_ && keeper_->lost(); }
  // A clean end frees the sweep for the next job at once.
  void release_lease() {
    keeper_.reset();
    if (!lease_lost()) store_.release_lease(lease_id_);
  }

  // Runs that cannot start before the deadline stay pending for the next job (the scheduler's rule 4).
  bool deadline_blocks_everything() { return scheduler_.deadline_blocks_everything(snapshot(0)); }

  void heartbeat(const db::Heartbeat& beat) {
    beats_.push_back(beat);
    if (const auto it = attempt_run_.find(beat.attempt_id); it != attempt_run_.end())
      flops_done_[it->second] = trained_flops_at(sweep_.runs[it->second], beat.tokens);
  }

  void flush(bool force = false) {
    if (beats_.empty() || (!force && Clock::now() - last_flush_ < std::chrono::seconds(1))) return;
    store_.record_heartbeats(beats_);
    beats_.clear();
    last_flush_ = Clock::now();
  }

  void finished(const Assignment& a, const WorkResult& r) {
    flush(true);
    attempt_run_.erase(a.attempt_id);
    const ExpandedRun& run = sweep_.runs[a.run_index];
    if (r.outcome == "superseded" || !attempt_open(a.attempt_id)) {
      // Fenced: a newer attempt owns the run (this one was declared dead, or its lease lapsed). Its
      // result is not recorded; the run's state is the newer attempt's.
      log(run, "result of attempt " + std::to_string(a.attempt_id) + " discarded: it was fenced (" +
                   (r.message.empty() ? r.outcome : r.message) + ")");
      return;
    }
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
      return;
    }
    if (r.outcome == "completed") {
      if (r.tokens_per_s > 0) {
        const double measured = 6.0 * static_cast<double>(run.n_act) * r.tokens_per_s / a.ranks;
        flops_per_rank_s_ = flops_per_rank_s_ > 0 ? 0.7 * flops_per_rank_s_ + 0.3 * measured : measured;
      }
      store_.finish_attempt(a.attempt_id,
                            {"done", "completed", r.eval_loss, r.train_loss, "", r.resumed_from_step});
      flops_done_[a.run_index] = run.trained_flops;
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
      if (!retry) {
        state_[a.run_index] = "failed";
        ++left_failed_;
      }
    }
  }

  // A worker went silent or away (the caller has told its ranks to stop): its attempt is closed, so
  // its late result is discarded, and its run goes back to the queue; the next attempt fences the run
  // directory before it trains (backend.h) and resumes from the newest checkpoint. The caller never uses
  // those ranks again, so gangs are sized for the ranks left.
  void lost(const Assignment& a, const std::string& reason) {
    flush(true);
    attempt_run_.erase(a.attempt_id);
    store_.finish_attempt(a.attempt_id, {"pending", reason, std::nullopt, std::nullopt, reason});
    log(sweep_.runs[a.run_index], reason + "; fenced and requeued");
    state_[a.run_index] = "pending";
    worker_ranks_ = std::max(0, worker_ranks_ - a.ranks);
  }

  // Runs still assigned when the job stops are preempted by definition.
  void stopped_unassigned() { preempted_ += static_cast<int>(queued_runs()); }

  int exit_status(bool stopped) {
    if (lease_lost()) {
      std::fprintf(stderr,
                   "moesweep run: lost the lease on sweep '%s' (another coordinator took it over after it "
                   "lapsed); stopped without recording more\n",
                   sweep_.name.c_str());
      return 1;
    }
    flush(true);
    double workers_cpu = 0;
    for (const auto& [rank, cpu] : worker_cpu_s_) workers_cpu += cpu;
    store_.add_event("job_end", std::string(stopped ? "stopped by a signal or the deadline" : "queue empty") +
                                    "; coordinator CPU " + std::to_string(process_cpu_seconds()) +
                                    " s; workers CPU " + std::to_string(workers_cpu) + " s");
    if (stopped || preempted_ > 0 || queued_runs() > 0) return kExitPreempted;
    return left_failed_ > 0 ? 1 : 0;
  }

  double heartbeat_timeout() const { return sweep_.resources.heartbeat_timeout_s; }
  // A worker's process CPU time so far (it reports the running total with each result).
  void worker_cpu(int rank, double seconds) { worker_cpu_s_[rank] = seconds; }

 private:
  bool queued(std::size_t i) const {
    return scheduling::run_state(state_[i]) == scheduling::RunState::queued;
  }
  std::size_t queued_runs() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < state_.size(); ++i) n += queued(i) ? 1 : 0;
    return n;
  }

  // What the scheduler decides from: each run's state as this job knows it, the branch points found on
  // disk, and the clock. File lookups only for branches still waiting: a trunk's list once it stops
  // training (else at most every 0.2 s), a branch's own point only then and only if the list falls short
  // of it (an earlier point is missing).
  scheduling::Snapshot snapshot(int idle) {
    scheduling::Snapshot s;
    s.runs.resize(sweep_.runs.size());
    const auto now = Clock::now();
    for (std::size_t i = 0; i < sweep_.runs.size(); ++i) {
      scheduling::RunStatus& r = s.runs[i];
      r.state = scheduling::run_state(state_[i]);
      r.flops_done = flops_done_[i];
      if (const auto at = elsewhere_.find(i); at != elsewhere_.end()) r.held_elsewhere = now < at->second;
      if (const auto n = trunk_reopens_.find(i); n != trunk_reopens_.end()) r.reopens = n->second;
    }
    for (std::size_t i = 0; i < sweep_.runs.size(); ++i) {
      const ExpandedRun& run = sweep_.runs[i];
      if (run.kind != RunKind::branch || !queued(i)) continue;
      const auto trunk = trunk_index_.find(run.trunk_key);
      if (!ready_.count(i) && trunk != trunk_index_.end()) {
        const std::size_t t = trunk->second;
        const bool trunk_busy = s.runs[t].state == scheduling::RunState::queued ||
                                s.runs[t].state == scheduling::RunState::running;
        const std::int64_t written = s.runs[t].branch_points_written = branch_points_written(t, !trunk_busy);
        if (written >= run.branch_point.step ||
            (!trunk_busy && fs::exists(branch_point_file(options_.workdir, run))))
          ready_.insert(i);
      }
      s.runs[i].branch_point_found = ready_.count(i) > 0;
    }
    s.idle_ranks = idle;
    s.worker_ranks = worker_ranks_;
    s.now = unix_now();
    s.deadline = deadline_;
    s.measured_rank_flops = flops_per_rank_s_;
    return s;
  }

  // The scheduler leaves a run failed: recorded as an attempt on no ranks, with its reason.
  void fail(const scheduling::Decision& d) {
    const ExpandedRun& run = sweep_.runs[d.run];
    const bool unschedulable = d.failure == scheduling::Decision::Failure::unschedulable;
    log(run, (unschedulable ? "cannot be scheduled: " : "failed: ") + d.reason);
    const auto attempt = store_.start_attempt(run.run_key, 0, 0, host_name());
    store_.finish_attempt(attempt, {"failed", unschedulable ? "unschedulable" : "no trunk checkpoint",
                                    std::nullopt, std::nullopt, d.reason});
    state_[d.run] = "failed";
    elsewhere_.erase(d.run);
    ++left_failed_;
  }

  // A done trunk trains again to write the branch point a branch did not find.
  void reopen_trunk(const scheduling::Decision& d) {
    const ExpandedRun& trunk = sweep_.runs[d.run];
    const fs::path file = branch_point_file(options_.workdir, sweep_.runs[d.branch]);
    ++trunk_reopens_[d.run];
    store_.reopen_run(trunk.run_key, d.reason + " (" + file.string() + ")");
    log(trunk, "reopened: " + d.reason);
    state_[d.run] = "pending";
    flops_done_[d.run] = 0;  // where it resumes is the trainer's to find
  }

  bool attempt_open(std::int64_t attempt_id) const {
    const auto rows = store_.query("SELECT ended_at IS NULL FROM attempts WHERE id = " + std::to_string(attempt_id));
    return !rows.empty() && rows[0][0] == "1";
  }

  // Claiming run i failed: another coordinator holds it, or finished it meanwhile. A finished run leaves
  // the queue with its state; a held one is looked at again in a few seconds, and runs as soon as its
  // holder lets it go (preempted) or its lease lapses.
  void claimed_elsewhere(std::size_t i) {
    std::string now_state;
    for (const auto& [key, s] : store_.run_states(sweep_.name))
      if (key == sweep_.runs[i].run_key) now_state = s;
    if (now_state == "done" || now_state == "failed" || now_state == "diverged") {
      elsewhere_.erase(i);
      state_[i] = now_state;
      if (now_state != "done") ++left_failed_;
      log(sweep_.runs[i], "finished by another coordinator: " + now_state);
      return;
    }
    if (!elsewhere_.count(i)) log(sweep_.runs[i], "is being trained by another coordinator; waiting for it");
    elsewhere_[i] = Clock::now() + std::chrono::seconds(2);
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
  std::int64_t lease_id_ = 0;
  std::optional<LeaseKeeper> keeper_;
  scheduling::Scheduler scheduler_;
  int worker_ranks_;  // worker ranks not lost
  std::map<std::size_t, Clock::time_point> elsewhere_;  // runs another coordinator holds: look again then
  std::vector<std::string> state_;   // each run's state as this job knows it; queued: pending, preempted
  std::vector<double> flops_done_;   // each run's trained FLOPs, as the store or the last heartbeat said
  std::map<std::int64_t, std::size_t> attempt_run_;  // attempts running now → their run
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
  int stop_signal() override { return received_stop_signal(); }

 private:
  std::int64_t attempt_id_;
  bool leader_;
  double interval_;
  MPI_Comm gang_;
  bool stop_ = false;
  Clock::time_point last_ = Clock::now() - std::chrono::hours(1);
};

void sleep_briefly() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }

// A worker's liveness, independent of its progress: from its own thread, one small message to the
// coordinator every heartbeat interval, whatever the training thread is doing (a final eval of millions
// of tokens, a checkpoint write, a resume load). Needs MPI_THREAD_MULTIPLE (`moesweep run` asks for it);
// without it only the training step's progress reports count, as before.
class AliveReporter {
 public:
  explicit AliveReporter(double interval_s) : interval_(interval_s) {
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_MULTIPLE) {
      std::fprintf(stderr, "moesweep run: this MPI gives no MPI_THREAD_MULTIPLE; liveness comes from training "
                           "steps only, so set heartbeat_timeout_s above the longest eval\n");
      return;
    }
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mutex_);
      do send(0, kAlive, json());
      while (!wake_.wait_for(lock, interval_, [this] { return done_; }));
    });
  }
  ~AliveReporter() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::chrono::duration<double> interval_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::thread thread_;
};

int run_worker(const SweepRunOptions& options, const Sweep& sweep, int rank) {
  auto backend = make_backend(options, sweep);
  AliveReporter alive(options.heartbeat_interval_s);
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
    const WorkResult result = backend->train(run, run_dir(options, run), attempt, comm, observer);
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
    Clock::time_point assigned_at;
  };
  std::map<std::int64_t, Busy> busy;  // by attempt id
  std::set<int> idle, dead;
  std::map<int, Clock::time_point> heard;  // when each rank last said anything
  bool stopping = false;
  // Told to stop without waiting for delivery: a rank declared dead may never receive it.
  std::vector<std::string> fence_messages;
  auto fence = [&](int r) {
    fence_messages.emplace_back("null");
    MPI_Request request;
    MPI_Isend(fence_messages.back().data(), 4, MPI_CHAR, r, kStop, MPI_COMM_WORLD, &request);
    MPI_Request_free(&request);
  };

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
    if (!stopping && c.lease_lost()) {
      std::fprintf(stderr, "moesweep run: the sweep's lease was taken over; stopping %zu running run(s)\n",
                   busy.size());
      stop_all();
    }
    while (std::optional<Message> m = poll()) {
      active = true;
      if (dead.count(m->from)) continue;
      heard[m->from] = Clock::now();
      if (m->tag == kAlive) continue;
      if (m->tag == kReady) {
        idle.insert(m->from);
      } else if (m->tag == kHeartbeat) {
        const std::int64_t attempt = m->body.at("attempt");
        auto it = busy.find(attempt);
        if (it == busy.end()) continue;  // a run already requeued
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
    // Silent ranks: fence the attempt (its ranks are told to stop, its attempt is closed, the next
    // attempt takes the run directory), requeue the run, and never use those ranks again.
    for (auto it = busy.begin(); it != busy.end();) {
      double silent = 0;
      for (int r : it->second.gang) {
        const auto last = std::max(it->second.assigned_at, heard.count(r) ? heard[r] : it->second.assigned_at);
        silent = std::max(silent, std::chrono::duration<double>(Clock::now() - last).count());
      }
      if (silent > c.heartbeat_timeout()) {
        for (int r : it->second.gang) fence(r);
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
  c.release_lease();
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
  auto backend = make_backend(options, c.sweep());
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
    bool stop_requested() override { return g_stop_signal.load() || c.lease_lost(); }
    int stop_signal() override { return received_stop_signal(); }
  };
  bool stopped = false;
  while (!g_stop_signal.load() && !c.lease_lost()) {
    auto a = c.next(1, 0);
    if (!a && c.waiting_elsewhere()) {  // runs another coordinator trains: wait for them
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      continue;
    }
    if (!a) break;
    Local observer(c, a->attempt_id, options.heartbeat_interval_s);
    const ExpandedRun& run = c.sweep().runs[a->run_index];
    c.finished(*a, backend->train(run, run_dir(options, run), a->attempt_id, MPI_COMM_NULL, observer));
  }
  stopped = g_stop_signal.load();
  if (stopped) c.stopped_unassigned();
  const int status = c.exit_status(stopped);
  c.release_lease();
  return status;
}

}  // namespace

namespace {
std::string seconds(double s) {
  std::ostringstream out;
  out << s;
  return out.str();
}
}  // namespace

int run_sweep(const SweepRunOptions& given) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  install_signal_handlers();
  // Every rank expands the same file, so a run travels as its index in the canonical order.
  Sweep sweep = load_sweep_file(given.sweep_path);
  // --backend wins over the file's [sweep] backend; neither given: the native trainer.
  SweepRunOptions options = given;
  if (options.backend.empty()) options.backend = sweep.backend.empty() ? "torch" : sweep.backend;
  if (options.backend == "command" && sweep.command.argv.empty())
    throw InputError(options.sweep_path +
                     ": --backend command needs a [backend] table with command = [\"program\", \"arg\", ...]");
  // A live worker reports every interval; a timeout within three of them would declare it dead for one
  // late message (a loaded node, a slow network).
  if (const double timeout = sweep.resources.heartbeat_timeout_s; timeout < 3 * options.heartbeat_interval_s)
    throw InputError(options.sweep_path + ": [resources] heartbeat_timeout_s = " + seconds(timeout) +
                     " s is shorter than three heartbeat intervals (--heartbeat " +
                     seconds(options.heartbeat_interval_s) + " s); raise it or report more often");
  // Renewed every sixth of it through the store: below a second, a busy store or a loaded node would
  // let a live coordinator's lease lapse.
  if (!(options.lease_s >= 1)) throw InputError("--lease: must be at least 1 second, got " + seconds(options.lease_s));
  if (size == 1) return run_serial(options, std::move(sweep));
  if (rank == 0) {
    try {
      return run_coordinator(options, std::move(sweep), size);
    } catch (...) {
      // The coordinator could not start (the sweep is owned by a live coordinator, the store cannot be
      // opened) or failed: release the workers, which would otherwise wait for work forever.
      for (int r = 1; r < size; ++r) send(r, kShutdown, json());
      throw;
    }
  }
  return run_worker(options, sweep, rank);
}

}  // namespace moesweep::orchestrator
