#pragma once
// The SQLite store of a sweep: schema and migrations, every SQL statement, the monitoring views.
// On a local disk the database is in WAL mode, so readers (`moesweep status`, `sqlite3 ... 'select * from
// status'`) never block the writers; on a network or cluster file system (NFS, Lustre, GPFS, ...), where
// WAL breaks across hosts, it uses a rollback journal instead (journal.h has the rule and its overrides).
// Every connection has a 10 s busy timeout. Each write method is one transaction. One coordinator owns a
// sweep at a time (a lease, below); several coordinators may write one database for different sweeps, and
// a run shared by two sweeps is claimed by one of them at a time (claim_run).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moesweep/db/journal.h"

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

// The runs of one (state, kind), counted as the `status` view counts them: `moesweep status`'s totals
// without reading every run's row. Unlike SummaryRow, a run in several sweeps counts once.
struct StatusTotals {
  std::string state;
  std::string kind;  // run | trunk | branch
  std::int64_t runs = 0;
  double flops = 0;       // Σ StatusRow::flops
  double flops_done = 0;  // Σ StatusRow::flops · progress
};

// Store::status_digest: the runs folded into totals, and the full rows of those in a `listed` state.
// One pass over the runs, then one read of the listed rows, instead of a row for each run (100,000 runs:
// bench/status_bench.sh).
struct StatusDigest {
  std::vector<StatusTotals> totals;  // by state, then kind
  std::vector<StatusRow> listed;     // in Store::status's order
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

// WAL upkeep (schema v6). A reader that keeps a read transaction open (a forgotten sqlite3 shell, a
// notebook) pins the WAL: no checkpoint may copy frames past its snapshot into the database file, so
// every write grows the -wal file until the reader ends its transaction, and SQLite cannot shrink it
// under the reader. Store::maintain_wal copies what it can, empties the file once the reader has left,
// and records since when frames have stayed behind, so `moesweep status` can name the cause.
//
// Read-write connections in WAL mode set journal_size_limit to this: a WAL that grew while pinned is cut
// back to it when it next resets, even with no maintain_wal (each time a WAL file resets, SQLite
// truncates it to the limit if it is larger: https://www.sqlite.org/pragma.html#pragma_journal_size_limit).
inline constexpr std::int64_t kWalSizeLimitBytes = 64ll << 20;
// maintain_wal empties (TRUNCATE checkpoint) a fully copied -wal file above this size. The automatic
// checkpoint keeps a WAL near 1000 pages (4 MiB at SQLite's default 4 KiB page); a file four times that
// means checkpoints were held back. Below it the file is left for SQLite to reuse, which is faster than
// growing it again.
inline constexpr std::int64_t kWalTruncateAboveBytes = 16ll << 20;
// `moesweep status` warns when the -wal file is above this size and has been pinned for kWalWarnPinnedS.
inline constexpr std::int64_t kWalWarnBytes = kWalSizeLimitBytes;
inline constexpr double kWalWarnPinnedS = 300;

// What one maintain_wal call saw and did.
struct WalCheck {
  bool wal = false;  // the database is in WAL mode (false: rollback journal, and nothing was done)
  std::int64_t log_frames = 0;           // frames in the WAL before the checkpoint
  std::int64_t checkpointed_frames = 0;  // of these, frames now copied into the database file
  std::int64_t wal_bytes = 0;            // the -wal file's size before this call
  std::int64_t wal_bytes_after = 0;      // and after it
  bool truncated = false;                // everything was copied and the -wal file emptied
  std::optional<double> pinned_since;    // unix s: since when frames have stayed behind; unset: none do
};

// The last maintain_wal's record (the wal_health table), for `moesweep status`.
struct WalHealth {
  double checked_at = 0;  // unix seconds, by the coordinator's clock
  std::int64_t recorded_wal_bytes = 0;
  std::int64_t log_frames = 0;
  std::int64_t checkpointed_frames = 0;
  std::optional<double> pinned_since;  // unix s
  std::int64_t wal_bytes = 0;          // the -wal file's size now (stat), 0 when there is none
};

// `moesweep status`'s warning line, or nullopt: the -wal file of `db_path` is above kWalWarnBytes and a
// reader has kept frames from being checkpointed for more than kWalWarnPinnedS, as a coordinator saw it
// within the last 10 min of `now` (unix seconds). E.g. "warning: sweep.db-wal is 210 MiB and a reader has
// held a read transaction for 38 min (since 14:02): close forgotten sqlite3 shells or notebooks" (local
// time).
std::optional<std::string> wal_warning(const WalHealth& health, const std::string& db_path, double now);

class Store {
 public:
  enum class Mode { ReadWrite, ReadOnly };

  // Opens (creating in ReadWrite mode) and migrates to the latest schema. Throws InputError for a file
  // that is not a moesweep database.
  //
  // ReadWrite applies the journal choose_journal_for(path, journal) picks (MOESWEEP_JOURNAL, then
  // `journal`, then the file system): WAL with synchronous = NORMAL (a commit is durable at the next
  // checkpoint; WAL keeps the file consistent through a crash or power loss either way), or the rollback
  // journal with synchronous = FULL (with NORMAL "a power failure at just the wrong time could corrupt
  // the database in journal_mode=DELETE", https://www.sqlite.org/pragma.html#pragma_synchronous; FULL
  // also syncs the journal before its header counts its pages, and on a shared file system that crash
  // may be any client's or the server's). An existing file switches between the two here. Leaving WAL
  // needs every other connection to the file closed (entering it, no transaction open): the open waits
  // up to 10 s for that, and if another process still holds it (another coordinator, a sqlite3 shell) it
  // goes on in the file's current mode and says so in one line on stderr: every process then agrees on
  // that mode, which is as safe as the file was before, and failing would only keep the job from
  // running. The next read-write open tries again.
  //
  // ReadOnly never writes the database or its journal: no checkpoint, no mode change, no rollback of a
  // hot journal (in WAL mode SQLite may rebuild the -shm index, a cache of the WAL). It refuses a
  // missing file, a schema other than this build's, and a rollback journal that a writer killed
  // mid-transaction left behind (the next read-write open, e.g. `moesweep run`, rolls it back; reading
  // before that would see half a transaction).
  static Store open(const std::string& path, Mode mode = Mode::ReadWrite, Journal journal = Journal::Auto);
  // For migration tests: create/upgrade only up to `version`.
  static Store open_at_version(const std::string& path, int version);

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  int schema_version() const;
  const std::string& path() const { return path_; }
  // The journal the file is in now: Wal or Rollback.
  Journal journal() const;
  // What this open chose, and why (ReadOnly: what a read-write open here would choose). journal()
  // differs from it when another process kept a read-write open from switching, or before the first.
  const JournalChoice& journal_choice() const { return journal_choice_; }

  // WAL upkeep, for the coordinator to call every half minute or so, on a connection of its own (it
  // waits up to 100 ms for the write lock). A PASSIVE checkpoint copies into the database file whatever
  // no reader still needs, without waiting; when that was everything and the -wal file is above
  // `truncate_above_bytes`, a TRUNCATE checkpoint empties it
  // (https://www.sqlite.org/c3ref/wal_checkpoint_v2.html). What it saw goes into the wal_health table in
  // one transaction; `now` (unix seconds) dates it and starts pinned_since. Nothing in rollback mode.
  WalCheck maintain_wal(double now, std::int64_t truncate_above_bytes = kWalTruncateAboveBytes);
  // The last maintain_wal's record, with the -wal file's size now; nullopt when none was made.
  std::optional<WalHealth> wal_health() const;

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
  // Every run (of `sweep`, or of all sweeps, each run once), most FLOPs first, then by run key.
  std::vector<StatusRow> status(const std::optional<std::string>& sweep = std::nullopt) const;
  // The same runs without a row for each: `moesweep status`'s reading (StatusDigest).
  StatusDigest status_digest(const std::optional<std::string>& sweep,
                             const std::vector<std::string>& listed) const;
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
  JournalChoice journal_choice_;
};

}  // namespace moesweep::db
