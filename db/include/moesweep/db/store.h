#pragma once
// The SQLite store of a sweep: schema and migrations, every SQL statement, the monitoring views.
// WAL mode with a busy timeout, so readers (`moesweep status`, `sqlite3 ... 'select * from status'`)
// never block the writers. Each write method is one transaction. One coordinator owns a sweep at a time
// (a lease, below); several coordinators may write one database for different sweeps, and a run shared
// by two sweeps is claimed by one of them at a time (claim_run).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace moesweep::db {

// The newest schema version this build writes; older files are migrated forward on open.
int latest_schema_version();

// One grid point as the sweep expansion resolved it.
struct RunSpec {
  std::string run_key;      // SHA-256 of the canonical resolved config
  std::string config_json;  // that canonical config
  std::int64_t n_act = 0;
  std::int64_t n_total = 0;
  std::int64_t tokens = 0;  // D
  std::int64_t experts = 1;
  std::int64_t d_model = 0;
  std::int64_t n_layers = 0;
  std::int64_t n_heads = 0;
  double lr = 0;
  double flops = 0;  // 6·N_act·D

  // Cooldown branching (schema v3): "run" (independent), "trunk" (shared by branches, never fitted) or
  // "branch" (starts from its trunk's checkpoint at branch_step, branch_tokens tokens in).
  std::string kind = "run";
  std::int64_t trained_tokens = 0;  // what the run trains itself; 0: its D
  std::string trunk_key;            // branches: their trunk (registered in the same call)
  std::int64_t branch_step = 0;
  std::int64_t branch_tokens = 0;
};

struct SweepInfo {
  std::int64_t id = 0;
  std::string name;
  std::string spec_path;
  std::string slurm_job_id;  // empty when not submitted through Slurm
  std::string created_at;
};

// A row of the `status` view.
struct StatusRow {
  std::string run_key;
  std::string state;  // pending | running | done | failed | diverged | preempted
  std::int64_t n_act = 0;
  std::int64_t tokens = 0;
  std::int64_t experts = 1;
  double progress = 0;  // 0..1
  std::int64_t step = 0;
  std::optional<double> last_loss;
  std::optional<double> final_loss;
  std::optional<double> tokens_per_s;
  std::optional<std::int64_t> rank;  // first rank of the current/last attempt
  std::int64_t ranks = 0;            // ranks of the current/last attempt
  std::int64_t attempts = 0;
  std::string updated_at;
  std::string error;
  double flops = 0;  // the FLOPs this row trains itself: 6·N_act·trained_tokens (trunk work counted once)
  // From the runs table (schema v3), beside the view's columns:
  std::string kind = "run";                 // run | trunk | branch
  std::string trunk_key;                    // branches: their trunk's run_key
  std::optional<std::int64_t> branch_step;  // branches: the trunk step they start from
  std::int64_t trained_tokens = 0;
};

// A row of the `sweep_summary` view: one per (sweep, state).
struct SummaryRow {
  std::string sweep;
  std::string state;
  std::int64_t runs = 0;
  double flops_done = 0;
  double flops_total = 0;
};

// A finished run, as the fit reads it.
struct FinishedRun {
  std::string run_key;
  std::int64_t n_act = 0;
  std::int64_t tokens = 0;
  std::int64_t experts = 1;
  double final_loss = 0;  // eval loss at capacity factor 1.5
};

// One heartbeat of a running attempt (metrics row + the run's live columns).
struct Heartbeat {
  std::int64_t attempt_id = 0;
  std::int64_t step = 0;
  std::int64_t tokens = 0;
  double train_loss = 0;
  std::optional<double> eval_loss;
  double tokens_per_s = 0;
  double lr = 0;
};

// How an attempt ended; `state` is the run's new state.
struct AttemptEnd {
  std::string state;        // done | failed | diverged | preempted | pending (requeued)
  std::string exit_reason;  // free text kept on the attempt row ("completed", "heartbeat timeout", ...)
  std::optional<double> final_loss;        // done only
  std::optional<double> final_train_loss;  // done only
  std::string error;                       // failed/diverged: the one-line reason
  std::int64_t resumed_from_step = 0;      // the checkpoint step this attempt started from (0: fresh)
};

// Who holds a lease: the coordinator process (schema v5).
struct LeaseOwner {
  std::string host;
  std::int64_t pid = 0;
  std::int64_t pid_start = 0;    // the process's start time (clock ticks after boot, /proc/PID/stat field 22)
  std::string slurm_job_id;      // empty outside Slurm
  std::int64_t slurm_restart = 0;  // SLURM_RESTART_COUNT: a requeued job keeps its id and counts up
};

struct Lease {
  std::int64_t id = 0;
  LeaseOwner owner;
  double expires_at = 0;  // unix seconds, by the holder's clock (hosts are assumed NTP-synchronised)
  std::string acquired_at;
  bool broken = false;    // lapsed and acted upon, or taken over: never valid again
};

// What sbatch answered for a sweep (schema v5). outcome "queued" has the job id; "unknown" (sbatch
// timed out or failed in a way that does not prove the job was refused) may or may not have one.
struct Submission {
  std::int64_t id = 0;
  std::string job_id;
  std::string outcome;  // queued | unknown
  std::string detail;   // e.g. sbatch's error line
  std::string at;
};

class Store {
 public:
  enum class Mode { ReadWrite, ReadOnly };

  // Opens (creating in ReadWrite mode) and migrates to the latest schema. ReadOnly never writes and
  // refuses a missing file or a schema newer than this build. Throws InputError for a file that is
  // not a moesweep database.
  static Store open(const std::string& path, Mode mode = Mode::ReadWrite);
  // For migration tests: create/upgrade only up to `version`.
  static Store open_at_version(const std::string& path, int version);

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  int schema_version() const;
  const std::string& path() const { return path_; }

  // Registers a sweep and its runs in one transaction. Idempotent: runs are inserted-or-ignored by
  // run_key and linked to the sweep; a run shared with another sweep is the same row. The sweep's links
  // become exactly `runs`: runs registered by an earlier version of its file that are not among them
  // leave the sweep (their rows and results stay in the database).
  // Returns the number of runs that were new.
  std::int64_t register_sweep(const std::string& name, const std::string& spec_path,
                              const std::vector<RunSpec>& runs);
  std::optional<SweepInfo> sweep(const std::string& name) const;
  std::vector<SweepInfo> sweeps() const;
  void set_slurm_job(const std::string& sweep_name, const std::string& job_id);

  // Slurm submissions, oldest first.
  void record_submission(const std::string& sweep_name, const Submission& submission);
  std::vector<Submission> submissions(const std::string& sweep_name) const;

  // Leases (schema v5). A lease is valid while it is not broken and `now` < expires_at.
  // Takes sweep `sweep_name` for `owner` for `ttl_s` seconds: succeeds when the sweep has no valid lease,
  // or when its lease's id is `take_over` (the caller has proved that holder dead); the previous lease,
  // if any, is then broken with `why`. Otherwise returns the holder's lease and takes nothing. One
  // transaction, so two coordinators starting at once cannot both succeed.
  struct Acquired {
    std::optional<std::int64_t> lease_id;  // set: ours now
    std::optional<Lease> previous;         // the lease we replaced, or the one that holds the sweep
  };
  Acquired acquire_sweep(const std::string& sweep_name, const LeaseOwner& owner, double ttl_s, double now,
                         std::optional<std::int64_t> take_over = std::nullopt,
                         const std::string& why = "taken over");
  // The sweep's current lease (valid or not), if it ever had one.
  std::optional<Lease> sweep_lease(const std::string& sweep_name) const;
  std::optional<Lease> lease(std::int64_t lease_id) const;
  // Extends a lease to now + ttl_s. False when it was broken: its holder has lost its sweep and must stop
  // without writing (another coordinator may be running its runs).
  bool renew_lease(std::int64_t lease_id, double ttl_s, double now);
  // The holder gives its lease up (a clean exit): its sweep is free at once.
  void release_lease(std::int64_t lease_id);

  // Attempts and heartbeats (the coordinator's writes).
  // Claims a run for a new attempt under `lease_id`: only a run that is pending or preempted, or running
  // under an attempt whose lease is no longer valid at `now` (that attempt is closed as lost first), is
  // claimed, atomically. nullopt when the run is done, failed, diverged or running under a valid lease
  // (another coordinator has it): a run is never trained by two attempts at once.
  std::optional<std::int64_t> claim_run(const std::string& run_key, int rank, int ranks,
                                        const std::string& host, std::int64_t lease_id, double now);
  // Unconditional (tests, and recording a failure for a run nobody trains): opens an attempt.
  std::int64_t start_attempt(const std::string& run_key, int rank, int ranks, const std::string& host,
                             std::int64_t resumed_from_step = 0);
  // Heartbeats of attempts that were closed meanwhile (fenced, requeued) keep their metrics rows but no
  // longer move the run's live columns. One transaction for the batch.
  void record_heartbeats(const std::vector<Heartbeat>& beats);
  // Closes an open attempt and sets its run's state. False (and nothing written) when the attempt was
  // already closed: it was fenced or requeued by a coordinator that found its lease lapsed, and its late
  // result must not overwrite what a newer attempt does.
  bool finish_attempt(std::int64_t attempt_id, const AttemptEnd& end);
  // Open attempts whose lease is not valid at `now` (lapsed, broken, or none: a job of an older moesweep)
  // are closed as lost, their runs go back to pending (they resume from their checkpoints), and the
  // lapsed leases are broken. Attempts under a valid lease are left alone. Returns the runs requeued.
  std::int64_t requeue_lapsed(const std::string& reason, double now);
  // Runs of `sweep` and where they stand now (state by run_key), for a coordinator that waits on runs
  // another coordinator is training.
  std::vector<std::pair<std::string, std::string>> run_states(const std::string& sweep) const;
  // Runs of `sweep` in `from_state` go back to pending (e.g. retrying failed runs), each with a 'reopen'
  // event. Returns how many.
  std::int64_t reopen_runs(const std::string& sweep, const std::string& from_state);
  // One finished run goes back to pending, with an event saying why (a cooldown trunk that must write a
  // branch point again). False when the run is not finished (pending, running or preempted).
  bool reopen_run(const std::string& run_key, const std::string& reason);
  // Attempts of a run that ended with this exit reason since it was last reopened (all of them if never):
  // a reopened run gets its whole retry budget again.
  std::int64_t count_attempts_since_reopen(const std::string& run_key, const std::string& exit_reason) const;
  void add_event(const std::string& kind, const std::string& message, const std::string& run_key = "");

  // Reads.
  std::vector<StatusRow> status(const std::optional<std::string>& sweep = std::nullopt) const;
  std::vector<SummaryRow> summary(const std::optional<std::string>& sweep = std::nullopt) const;
  // Done runs with a final loss, as the fit reads them: cooldown trunks are left out (only their
  // branches, which end in a decay, are grid points).
  std::vector<FinishedRun> finished_runs(const std::optional<std::string>& sweep = std::nullopt) const;

  // Escape hatch for tests and tools: run a query, rows as strings (NULL → "").
  std::vector<std::vector<std::string>> query(const std::string& sql) const;

 private:
  Store(sqlite3* db, std::string path, Mode mode);
  sqlite3* db_ = nullptr;
  std::string path_;
  Mode mode_ = Mode::ReadWrite;
};

}  // namespace moesweep::db
