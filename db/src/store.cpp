#include "moesweep/db/store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <thread>
#include <tuple>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "moesweep/input_error.h"

namespace moesweep::db {
namespace {

// Forward migrations: migration i (1-based) takes the schema from version i−1 to version i. Never edit a
// migration that has shipped; add a new one. Views are dropped and recreated by the last migration that
// touches them.
constexpr std::array<const char*, 6> kMigrations = {
    // v1: the core tables.
    R"sql(
CREATE TABLE sweeps (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  spec_path   TEXT NOT NULL,
  created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE runs (
  id          INTEGER PRIMARY KEY,
  run_key     TEXT NOT NULL UNIQUE,
  config_json TEXT NOT NULL,
  n_act       INTEGER NOT NULL,
  n_total     INTEGER NOT NULL,
  tokens      INTEGER NOT NULL,
  experts     INTEGER NOT NULL,
  d_model     INTEGER NOT NULL,
  n_layers    INTEGER NOT NULL,
  n_heads     INTEGER NOT NULL,
  lr          REAL NOT NULL,
  flops       REAL NOT NULL,
  state       TEXT NOT NULL DEFAULT 'pending'
              CHECK (state IN ('pending','running','done','failed','diverged','preempted')),
  attempts    INTEGER NOT NULL DEFAULT 0,
  final_loss  REAL,
  error       TEXT,
  created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE sweep_runs (
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
  run_id   INTEGER NOT NULL REFERENCES runs(id),
  PRIMARY KEY (sweep_id, run_id)
) WITHOUT ROWID;
CREATE TABLE attempts (
  id          INTEGER PRIMARY KEY,
  run_id      INTEGER NOT NULL REFERENCES runs(id),
  rank        INTEGER NOT NULL,
  host        TEXT NOT NULL,
  started_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  ended_at    TEXT,
  exit_reason TEXT
);
CREATE TABLE metrics (
  id           INTEGER PRIMARY KEY,
  run_id       INTEGER NOT NULL REFERENCES runs(id),
  attempt_id   INTEGER NOT NULL REFERENCES attempts(id),
  step         INTEGER NOT NULL,
  tokens       INTEGER NOT NULL,
  train_loss   REAL,
  eval_loss    REAL,
  tokens_per_s REAL,
  recorded_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX metrics_by_run ON metrics(run_id, step);
CREATE TABLE events (
  id      INTEGER PRIMARY KEY,
  at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  run_id  INTEGER REFERENCES runs(id),
  kind    TEXT NOT NULL,
  message TEXT NOT NULL
);
)sql",
    // v2: live progress columns on runs (so readers never scan metrics), gang size and resume point on
    // attempts, the learning rate on metrics, the Slurm job of a sweep, and the monitoring views.
    R"sql(
ALTER TABLE runs ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN tokens_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN last_loss REAL;
ALTER TABLE runs ADD COLUMN tokens_per_s REAL;
ALTER TABLE runs ADD COLUMN final_train_loss REAL;
ALTER TABLE attempts ADD COLUMN ranks INTEGER NOT NULL DEFAULT 1;
ALTER TABLE attempts ADD COLUMN resumed_from_step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metrics ADD COLUMN lr REAL;
ALTER TABLE sweeps ADD COLUMN slurm_job_id TEXT;
CREATE INDEX attempts_by_run ON attempts(run_id);
UPDATE runs SET tokens_done = tokens WHERE state = 'done';

DROP VIEW IF EXISTS status;
CREATE VIEW status AS
SELECT r.run_key, r.state, r.n_act, r.tokens, r.experts,
       CASE WHEN r.state = 'done' THEN 1.0
            ELSE MIN(1.0, CAST(r.tokens_done AS REAL) / r.tokens) END AS progress,
       r.step, r.last_loss, r.final_loss, r.tokens_per_s,
       a.rank AS rank, COALESCE(a.ranks, 0) AS ranks, r.attempts, r.updated_at, r.error, r.flops
FROM runs r
LEFT JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE run_id = r.id);

DROP VIEW IF EXISTS sweep_summary;
CREATE VIEW sweep_summary AS
SELECT s.name AS sweep, r.state AS state, COUNT(*) AS runs,
       SUM(CASE WHEN r.state = 'done' THEN r.flops
                ELSE 6.0 * r.n_act * MIN(r.tokens_done, r.tokens) END) AS flops_done,
       SUM(r.flops) AS flops_total
FROM sweeps s JOIN sweep_runs sr ON sr.sweep_id = s.id JOIN runs r ON r.id = sr.run_id
GROUP BY s.name, r.state;
)sql",
    // v3: cooldown branching. A run is an independent run, a trunk or a branch of a trunk (starting from
    // its checkpoint at branch_step); trained_tokens is what a run trains itself, so the views count a
    // trunk's shared work once (in the trunk) and a branch's own cooldown in the branch: `status` and
    // `sweep_summary` keep their columns, with progress and FLOPs by trained_tokens. The `branches` view
    // shows each branch with its trunk.
    R"sql(
ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'run' CHECK (kind IN ('run','trunk','branch'));
ALTER TABLE runs ADD COLUMN trunk_id INTEGER REFERENCES runs(id);
ALTER TABLE runs ADD COLUMN branch_step INTEGER;
ALTER TABLE runs ADD COLUMN branch_tokens INTEGER;
ALTER TABLE runs ADD COLUMN trained_tokens INTEGER;
UPDATE runs SET trained_tokens = tokens;
CREATE INDEX runs_by_trunk ON runs(trunk_id);

DROP VIEW IF EXISTS status;
CREATE VIEW status AS
SELECT r.run_key, r.state, r.n_act, r.tokens, r.experts,
       CASE WHEN r.state = 'done' THEN 1.0
            ELSE MIN(1.0, MAX(0.0, CAST(r.tokens_done - COALESCE(r.branch_tokens, 0) AS REAL)) /
                          COALESCE(r.trained_tokens, r.tokens)) END AS progress,
       r.step, r.last_loss, r.final_loss, r.tokens_per_s,
       a.rank AS rank, COALESCE(a.ranks, 0) AS ranks, r.attempts, r.updated_at, r.error,
       6.0 * r.n_act * COALESCE(r.trained_tokens, r.tokens) AS flops
FROM runs r
LEFT JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE run_id = r.id);

DROP VIEW IF EXISTS sweep_summary;
CREATE VIEW sweep_summary AS
SELECT s.name AS sweep, r.state AS state, COUNT(*) AS runs,
       SUM(6.0 * r.n_act * CASE WHEN r.state = 'done' THEN COALESCE(r.trained_tokens, r.tokens)
                                ELSE MIN(MAX(r.tokens_done - COALESCE(r.branch_tokens, 0), 0),
                                         COALESCE(r.trained_tokens, r.tokens)) END) AS flops_done,
       SUM(6.0 * r.n_act * COALESCE(r.trained_tokens, r.tokens)) AS flops_total
FROM sweeps s JOIN sweep_runs sr ON sr.sweep_id = s.id JOIN runs r ON r.id = sr.run_id
GROUP BY s.name, r.state;

CREATE VIEW branches AS
SELECT b.run_key AS branch, t.run_key AS trunk, b.experts, b.tokens, b.branch_step, b.branch_tokens,
       b.trained_tokens, b.state, t.state AS trunk_state, b.final_loss
FROM runs b LEFT JOIN runs t ON t.id = b.trunk_id
WHERE b.kind = 'branch';
)sql",
    // v4: a run reopened by --retry-failed (or a trunk reopened to rewrite a branch point) gets its whole
    // retry budget again: only failures in attempts after this attempt id count against max_attempts.
    // (Timestamps cannot tell: an attempt may start in the millisecond of the reopen.)
    R"sql(
ALTER TABLE runs ADD COLUMN failures_counted_after INTEGER NOT NULL DEFAULT 0;
)sql",
    // v5: one owner per sweep. A coordinator holds a lease (host, pid and its start time, Slurm job and
    // restart count) that it renews; its attempts name it, so a second coordinator requeues only attempts
    // whose lease has lapsed or was broken. `broken_at` is set by whoever acts on a lapsed lease (or takes
    // the sweep over), and a lease once broken stays broken: its holder learns at its next renewal that it
    // lost its sweep. Submissions record what sbatch answered, an unknown outcome (a timeout) included.
    R"sql(
CREATE TABLE leases (
  id            INTEGER PRIMARY KEY,
  host          TEXT NOT NULL,
  pid           INTEGER NOT NULL,
  pid_start     INTEGER NOT NULL DEFAULT 0,
  slurm_job_id  TEXT NOT NULL DEFAULT '',
  slurm_restart INTEGER NOT NULL DEFAULT 0,
  acquired_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  expires_at    REAL NOT NULL,
  broken_at     TEXT,
  broken_why    TEXT
);
ALTER TABLE sweeps ADD COLUMN lease_id INTEGER REFERENCES leases(id);
ALTER TABLE attempts ADD COLUMN lease_id INTEGER REFERENCES leases(id);
CREATE TABLE submissions (
  id       INTEGER PRIMARY KEY,
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
  job_id   TEXT NOT NULL DEFAULT '',
  outcome  TEXT NOT NULL CHECK (outcome IN ('queued','unknown')),
  detail   TEXT NOT NULL DEFAULT '',
  at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
)sql",
    // v6: what Store::maintain_wal last saw of the WAL, for `moesweep status`: one row for the database
    // (the WAL is the file's, not a sweep's). pinned_since is set while frames stay un-checkpointed from
    // one check to the next (a reader holds an old snapshot), NULL once everything was copied.
    R"sql(
CREATE TABLE wal_health (
  id                  INTEGER PRIMARY KEY CHECK (id = 1),
  checked_at          REAL NOT NULL,
  wal_bytes           INTEGER NOT NULL,
  log_frames          INTEGER NOT NULL,
  checkpointed_frames INTEGER NOT NULL,
  pinned_since        REAL
);
-- Store::status_digest's totals per (state, kind) read this index, not the runs table whose rows carry
-- their config (about 1 kB each): `moesweep status` at 100,000 runs in 44 ms instead of 99
-- (bench/status_bench.sh). One more index entry to update per heartbeat.
CREATE INDEX runs_by_state ON runs(state, kind, n_act, tokens, trained_tokens, tokens_done, branch_tokens);
)sql",
};

// "FILE: what SQLite said", so a failing write ("database or disk is full") names the database.
std::string sqlite_error(sqlite3* db, const std::string& message) {
  const char* file = db ? sqlite3_db_filename(db, "main") : nullptr;
  return (file && *file ? std::string(file) : std::string("sqlite")) + ": " + message;
}

[[noreturn]] void fail(sqlite3* db, const std::string& what) {
  throw std::runtime_error(db ? sqlite_error(db, sqlite3_errmsg(db)) : what + ": out of memory");
}

void exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message ? message : "unknown error";
    sqlite3_free(message);
    throw std::runtime_error(sqlite_error(db, text));
  }
}

// A prepared statement with typed binds; finalised on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) fail(db, "prepare");
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Statement& bind(int i, std::int64_t v) { return check(sqlite3_bind_int64(stmt_, i, v)); }
  Statement& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
  Statement& bind(int i, double v) { return check(sqlite3_bind_double(stmt_, i, v)); }
  Statement& bind(int i, const std::string& v) {
    return check(sqlite3_bind_text(stmt_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  Statement& bind(int i, const std::optional<double>& v) {
    return v ? bind(i, *v) : check(sqlite3_bind_null(stmt_, i));
  }
  Statement& bind_null(int i) { return check(sqlite3_bind_null(stmt_, i)); }
  Statement& bind_if(int i, const std::optional<std::int64_t>& v) { return v ? bind(i, *v) : *this; }

  // true while a row is available
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, "step");
  }
  void run() {
    while (step()) {
    }
    sqlite3_reset(stmt_);
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  std::int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  double f64(int col) const { return sqlite3_column_double(stmt_, col); }
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::optional<double> opt_f64(int col) const {
    return is_null(col) ? std::nullopt : std::optional(f64(col));
  }
  std::string text(int col) const {
    auto p = sqlite3_column_text(stmt_, col);
    return p ? reinterpret_cast<const char*>(p) : "";
  }
  int columns() const { return sqlite3_column_count(stmt_); }

 private:
  Statement& check(int rc) {
    if (rc != SQLITE_OK) fail(db_, "bind");
    return *this;
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE … COMMIT, rolled back if the scope exits by exception: never a half-written row.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) { exec(db_, "BEGIN IMMEDIATE"); }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (!committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, "COMMIT");
    committed_ = true;
  }

 private:
  sqlite3* db_;
  bool committed_ = false;
};

int read_user_version(sqlite3* db) {
  Statement s(db, "PRAGMA user_version");
  return s.step() ? static_cast<int>(s.i64(0)) : 0;
}

void migrate(sqlite3* db, const std::string& path, int target) {
  int version = read_user_version(db);
  if (version == 0) {
    // A fresh file has no tables at all; anything else at version 0 is somebody else's database. Read
    // both under the write lock, since another process may be creating the same database right now.
    Transaction t(db);
    version = read_user_version(db);
    Statement s(db, "SELECT COUNT(*) FROM sqlite_master");
    if (version == 0 && s.step() && s.i64(0) > 0)
      throw InputError(path + ": not a moesweep database (it has other tables)");
  }
  if (version > latest_schema_version())
    throw InputError(path + ": schema version " + std::to_string(version) + " is newer than this moesweep (" +
                     std::to_string(latest_schema_version()) + "); upgrade moesweep");
  for (int v = version + 1; v <= target; ++v) {
    Transaction t(db);
    // Two processes opening a new database at once: the other may have migrated it meanwhile.
    if (read_user_version(db) >= v) continue;
    exec(db, kMigrations[v - 1]);
    exec(db, ("PRAGMA user_version = " + std::to_string(v)).c_str());
    t.commit();
  }
}

// Another program's database, or one from a newer moesweep, is refused before anything writes to it
// (switching it to WAL would already change it). migrate() checks the same for files opened later.
void refuse_if_not_ours(sqlite3* db, const std::string& path) {
  // One read transaction: another process may commit the first migration between the two reads.
  exec(db, "BEGIN");
  int version = 0;
  std::int64_t table_count = 0;
  try {
    version = read_user_version(db);
    Statement tables(db, "SELECT COUNT(*) FROM sqlite_master");
    if (tables.step()) table_count = tables.i64(0);
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  exec(db, "COMMIT");
  if (version == 0 && table_count > 0)
    throw InputError(path + ": not a moesweep database (it has other tables)");
  if (version > latest_schema_version())
    throw InputError(path + ": schema version " + std::to_string(version) + " is newer than this moesweep (" +
                     std::to_string(latest_schema_version()) + "); upgrade moesweep");
}

// "PRAGMA journal_mode = X" and the mode the connection is in after it, or nullopt when another
// connection kept the file from switching (BUSY or LOCKED: leaving WAL needs every other connection to
// the file closed, entering it no transaction open; neither waits in the busy handler).
std::optional<std::string> try_journal_mode(sqlite3* db, const char* mode) {
  const std::string sql = std::string("PRAGMA journal_mode = ") + mode;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) fail(db, "prepare");
  const int rc = sqlite3_step(stmt);
  std::optional<std::string> now;
  if (rc == SQLITE_ROW) now = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  const std::string message = sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  if (rc == SQLITE_ROW || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return now;
  throw std::runtime_error(sqlite_error(db, message));
}

std::string current_journal_mode(sqlite3* db) {
  Statement s(db, "PRAGMA journal_mode");
  return s.step() ? s.text(0) : "";
}

// Puts a read-write connection in the journal `choice` names, waiting up to 10 s (as the busy timeout
// would) for other connections to let it switch; then goes on in the file's mode with a warning (store.h
// says why). Sets the synchronous level and, in WAL mode, the size limit that goes with the mode.
void apply_journal(sqlite3* db, const std::string& path, const JournalChoice& choice) {
  const bool want_wal = choice.journal == Journal::Wal;
  std::optional<std::string> mode;
  for (int tries = 0; !(mode = try_journal_mode(db, want_wal ? "wal" : "delete")) && tries < 200; ++tries)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const bool wal = (mode ? *mode : current_journal_mode(db)) == "wal";
  if (wal != want_wal)
    std::fprintf(stderr,
                 "moesweep: warning: %s stays in %s mode: another process has it open (a coordinator, a "
                 "sqlite3 shell), so it cannot switch to %s (%s); the next read-write open that finds it "
                 "alone does\n",
                 path.c_str(), wal ? "WAL" : "rollback-journal", wal ? "the rollback journal" : "WAL",
                 choice.reason.c_str());
  if (wal) {
    exec(db, "PRAGMA synchronous = NORMAL");  // durable at checkpoints; WAL keeps it consistent
    exec(db, ("PRAGMA journal_size_limit = " + std::to_string(kWalSizeLimitBytes)).c_str());
  } else {
    exec(db, "PRAGMA synchronous = FULL");  // the journal is whole on disk before the database changes
  }
}

sqlite3* open_connection(const std::string& path, Store::Mode mode, const JournalChoice& journal) {
  if (mode == Store::Mode::ReadOnly && access(path.c_str(), R_OK) != 0)
    throw InputError(path + ": no such database (or not readable)");
  int flags =
      mode == Store::Mode::ReadOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw InputError(path + ": cannot open database: " + message);
  }
  // Readers wait for the writer's short transactions instead of failing with "database is locked".
  sqlite3_busy_timeout(db, 10'000);
  // No checkpoint-on-close: it takes a lock on the database file that a reader opening at that instant
  // (a sqlite3 shell has no busy timeout) meets as "database is locked". close() checkpoints instead.
  sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  try {
    // Probe the header: a non-SQLite file fails here with "file is not a database".
    Statement(db, "SELECT COUNT(*) FROM sqlite_master").run();
    if (mode == Store::Mode::ReadWrite) {
      refuse_if_not_ours(db, path);  // before the first write: a refused file stays byte-identical
      // Switching to WAL takes an exclusive lock that the busy handler does not wait for: a second
      // process creating the same new database meets "database is locked" here; apply_journal waits.
      apply_journal(db, path, journal);
      exec(db, "PRAGMA foreign_keys = ON");
    }
  } catch (const InputError&) {
    sqlite3_close(db);
    throw;
  } catch (const std::runtime_error&) {
    // A read-only connection cannot roll back the journal a killed writer left (a "hot journal",
    // https://www.sqlite.org/lockingv3.html#hot_journals), and must not read past it.
    if (sqlite3_extended_errcode(db) == SQLITE_READONLY_ROLLBACK) {
      sqlite3_close(db);
      throw InputError(path + ": a writer died in the middle of a transaction and left " + path +
                       "-journal; a read-only open cannot roll it back: the next read-write open (moesweep "
                       "run or submit) does");
    }
    const std::string reason = sqlite3_errmsg(db);  // "file is not a database", without our "prepare: "
    sqlite3_close(db);
    throw InputError(path + ": not a moesweep database (" + reason + ")");
  }
  return db;
}

StatusRow status_row(const Statement& s) {
  StatusRow r;
  r.run_key = s.text(0);
  r.state = s.text(1);
  r.n_act = s.i64(2);
  r.tokens = s.i64(3);
  r.experts = s.i64(4);
  r.progress = s.f64(5);
  r.step = s.i64(6);
  r.last_loss = s.opt_f64(7);
  r.final_loss = s.opt_f64(8);
  r.tokens_per_s = s.opt_f64(9);
  if (!s.is_null(10)) r.rank = s.i64(10);
  r.ranks = s.i64(11);
  r.attempts = s.i64(12);
  r.updated_at = s.text(13);
  r.error = s.text(14);
  r.flops = s.f64(15);
  // Not in the view (its columns are a stable interface): Store::status joins them from runs.
  r.kind = s.text(16);
  r.trunk_key = s.text(17);
  if (!s.is_null(18)) r.branch_step = s.i64(18);
  r.trained_tokens = s.i64(19);
  return r;
}

constexpr const char* kNow = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";
// For an UPDATE of runs that reopens them: failures before now no longer count (migration v4).
constexpr const char* kFreshRetryBudget =
    "failures_counted_after = (SELECT COALESCE(MAX(a.id), 0) FROM attempts a WHERE a.run_id = runs.id)";

// Inside the caller's transaction: a new attempt row for run `run_id`, and the run marked running.
std::int64_t open_attempt_in(sqlite3* db, std::int64_t run_id, int rank, int ranks, const std::string& host,
                             std::int64_t resumed_from_step, std::optional<std::int64_t> lease_id) {
  Statement insert(db, "INSERT INTO attempts(run_id, rank, ranks, host, resumed_from_step, lease_id) VALUES (?,?,?,?,?,?)");
  insert.bind(1, run_id).bind(2, rank).bind(3, ranks).bind(4, host).bind(5, resumed_from_step);
  if (lease_id) insert.bind(6, *lease_id);
  insert.run();
  const std::int64_t attempt_id = sqlite3_last_insert_rowid(db);
  Statement(db, (std::string("UPDATE runs SET state='running', attempts = attempts + 1, error = NULL, "
                             "tokens_per_s = NULL, updated_at = ") +
                 kNow + " WHERE id = ?")
                    .c_str())
      .bind(1, run_id)
      .run();
  return attempt_id;
}

// A passive checkpoint moves the WAL into the database file without waiting for or blocking readers.
void close_connection(sqlite3* db, Store::Mode mode) {
  if (db && mode == Store::Mode::ReadWrite)
    sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  if (db) sqlite3_close(db);
}

}  // namespace

int latest_schema_version() { return static_cast<int>(kMigrations.size()); }

Store::Store(sqlite3* db, std::string path, Mode mode) : db_(db), path_(std::move(path)), mode_(mode) {}
Store::Store(Store&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      path_(std::move(other.path_)),
      mode_(other.mode_),
      journal_choice_(std::move(other.journal_choice_)) {}

Store& Store::operator=(Store&& other) noexcept {
  if (this != &other) {
    close_connection(db_, mode_);
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
    mode_ = other.mode_;
    journal_choice_ = std::move(other.journal_choice_);
  }
  return *this;
}
Store::~Store() { close_connection(db_, mode_); }

Store Store::open(const std::string& path, Mode mode, Journal journal) {
  JournalChoice choice = choose_journal_for(path, journal);
  sqlite3* db = open_connection(path, mode, choice);
  Store store(db, path, mode);
  store.journal_choice_ = std::move(choice);
  int version = read_user_version(db);
  if (mode == Mode::ReadOnly) {
    if (version == 0) throw InputError(path + ": not a moesweep database (no schema)");
    if (version > latest_schema_version())
      throw InputError(path + ": schema version " + std::to_string(version) + " is newer than this moesweep");
    if (version < latest_schema_version())
      throw InputError(
          path + ": schema version " + std::to_string(version) +
          " is older than this moesweep; open it once read-write (e.g. moesweep run) to migrate");
  } else {
    migrate(db, path, latest_schema_version());
    // Move what the WAL holds (the schema, earlier jobs' results) into the database file, so a WAL lost
    // or damaged later (or a copy of sweep.db without sweep.db-wal) costs at most this job's writes.
    sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  }
  return store;
}

Store Store::open_at_version(const std::string& path, int version) {
  JournalChoice choice = choose_journal_for(path, Journal::Auto);
  sqlite3* db = open_connection(path, Mode::ReadWrite, choice);
  Store store(db, path, Mode::ReadWrite);
  store.journal_choice_ = std::move(choice);
  migrate(db, path, version);
  return store;
}

int Store::schema_version() const { return read_user_version(db_); }

Journal Store::journal() const { return current_journal_mode(db_) == "wal" ? Journal::Wal : Journal::Rollback; }

std::int64_t Store::register_sweep(const std::string& name, const std::string& spec_path,
                                   const std::vector<RunSpec>& runs) {
  Transaction t(db_);
  Statement(db_,
            "INSERT INTO sweeps(name, spec_path) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
            "spec_path=excluded.spec_path")
      .bind(1, name)
      .bind(2, spec_path)
      .run();
  Statement sweep_id(db_, "SELECT id FROM sweeps WHERE name = ?");
  sweep_id.bind(1, name);
  sweep_id.step();
  const std::int64_t sid = sweep_id.i64(0);
  // The sweep is what its file expands to now: runs of an earlier version of the file (another grid,
  // another recipe) leave it, keeping their rows and results, so a fit of the sweep never mixes them in.
  Statement(db_, "DELETE FROM sweep_runs WHERE sweep_id = ?").bind(1, sid).run();

  Statement insert(
      db_,
      "INSERT OR IGNORE INTO runs(run_key, config_json, n_act, n_total, tokens, experts, d_model, "
      "n_layers, n_heads, lr, flops, kind, trained_tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
  Statement link(
      db_, "INSERT OR IGNORE INTO sweep_runs(sweep_id, run_id) SELECT ?, id FROM runs WHERE run_key = ?");
  std::int64_t inserted = 0;
  for (const RunSpec& r : runs) {
    insert.reset();
    insert.bind(1, r.run_key).bind(2, r.config_json).bind(3, r.n_act).bind(4, r.n_total).bind(5, r.tokens);
    insert.bind(6, r.experts).bind(7, r.d_model).bind(8, r.n_layers).bind(9, r.n_heads).bind(10, r.lr);
    insert.bind(11, r.flops).bind(12, r.kind).bind(13, r.trained_tokens > 0 ? r.trained_tokens : r.tokens);
    insert.run();
    inserted += sqlite3_changes(db_);
    link.reset();
    link.bind(1, sid).bind(2, r.run_key);
    link.run();
  }
  // Branches point at their trunk once every row exists. A branch not yet done follows the sweep as it
  // is now (adding a larger budget gives the model a longer trunk); a done one keeps the trunk it had.
  Statement branch(db_,
                   "UPDATE runs SET trunk_id = (SELECT id FROM runs WHERE run_key = ?), branch_step = ?, "
                   "branch_tokens = ?, trained_tokens = ? "
                   "WHERE run_key = ? AND kind = 'branch' AND state != 'done'");
  for (const RunSpec& r : runs) {
    if (r.kind != "branch") continue;
    if (r.trunk_key.empty()) throw std::runtime_error("branch " + r.run_key + " has no trunk");
    branch.reset();
    branch.bind(1, r.trunk_key).bind(2, r.branch_step).bind(3, r.branch_tokens).bind(4, r.trained_tokens);
    branch.bind(5, r.run_key);
    branch.run();
  }
  t.commit();
  return inserted;
}

std::optional<SweepInfo> Store::sweep(const std::string& name) const {
  for (SweepInfo& s : sweeps())
    if (s.name == name) return s;
  return std::nullopt;
}

std::vector<SweepInfo> Store::sweeps() const {
  Statement s(db_,
              "SELECT id, name, spec_path, COALESCE(slurm_job_id,''), created_at FROM sweeps ORDER BY id");
  std::vector<SweepInfo> out;
  while (s.step()) out.push_back({s.i64(0), s.text(1), s.text(2), s.text(3), s.text(4)});
  return out;
}

void Store::set_slurm_job(const std::string& sweep_name, const std::string& job_id) {
  Transaction t(db_);
  Statement(db_, "UPDATE sweeps SET slurm_job_id = ? WHERE name = ?")
      .bind(1, job_id)
      .bind(2, sweep_name)
      .run();
  if (sqlite3_changes(db_) != 1) throw InputError(path_ + ": no sweep named '" + sweep_name + "'");
  t.commit();
}

std::int64_t Store::start_attempt(const std::string& run_key, int rank, int ranks, const std::string& host,
                                  std::int64_t resumed_from_step) {
  Transaction t(db_);
  Statement run(db_, "SELECT id, state FROM runs WHERE run_key = ?");
  run.bind(1, run_key);
  if (!run.step()) throw std::runtime_error("no run with key " + run_key);
  const std::int64_t run_id = run.i64(0);
  if (run.text(1) == "done") throw std::runtime_error("run " + run_key + " is already done");
  const std::int64_t attempt_id = open_attempt_in(db_, run_id, rank, ranks, host, resumed_from_step, std::nullopt);
  t.commit();
  return attempt_id;
}

void Store::record_heartbeats(const std::vector<Heartbeat>& beats) {
  if (beats.empty()) return;
  Transaction t(db_);
  Statement metric(
      db_,
      "INSERT INTO metrics(run_id, attempt_id, step, tokens, train_loss, eval_loss, tokens_per_s, lr) "
      "SELECT run_id, id, ?, ?, ?, ?, ?, ? FROM attempts WHERE id = ?");
  Statement live(db_, (std::string("UPDATE runs SET step=?, tokens_done=?, last_loss=?, tokens_per_s=?, "
                                   "updated_at=") +
                       kNow + " WHERE id = (SELECT run_id FROM attempts WHERE id = ?5 AND ended_at IS NULL) AND state = 'running'")
                          .c_str());
  for (const Heartbeat& b : beats) {
    metric.reset();
    metric.bind(1, b.step).bind(2, b.tokens).bind(3, b.train_loss).bind(4, b.eval_loss);
    metric.bind(5, b.tokens_per_s).bind(6, b.lr).bind(7, b.attempt_id);
    metric.run();
    if (sqlite3_changes(db_) != 1)
      throw std::runtime_error("heartbeat for unknown attempt " + std::to_string(b.attempt_id));
    live.reset();
    live.bind(1, b.step)
        .bind(2, b.tokens)
        .bind(3, b.train_loss)
        .bind(4, b.tokens_per_s)
        .bind(5, b.attempt_id);
    live.run();
  }
  t.commit();
}

bool Store::finish_attempt(std::int64_t attempt_id, const AttemptEnd& end) {
  static constexpr const char* kEndStates[] = {"done", "failed", "diverged", "preempted", "pending"};
  bool valid = false;
  for (const char* s : kEndStates) valid = valid || end.state == s;
  if (!valid) throw std::runtime_error("finish_attempt: invalid end state '" + end.state + "'");

  Transaction t(db_);
  Statement(db_, (std::string("UPDATE attempts SET ended_at=") + kNow +
                  ", exit_reason=?, resumed_from_step=MAX(resumed_from_step, ?) WHERE id=? AND ended_at IS NULL")
                     .c_str())
      .bind(1, end.exit_reason)
      .bind(2, end.resumed_from_step)
      .bind(3, attempt_id)
      .run();
  if (sqlite3_changes(db_) != 1) {
    Statement known(db_, "SELECT COUNT(*) FROM attempts WHERE id = ?");
    known.bind(1, attempt_id);
    if (known.step() && known.i64(0) == 0)
      throw std::runtime_error("attempt " + std::to_string(attempt_id) + " is unknown");
    return false;  // closed already (fenced or requeued): the transaction rolls back, nothing written
  }
  Statement update(db_, (std::string("UPDATE runs SET state=?, final_loss=COALESCE(?, final_loss), "
                                     "final_train_loss=COALESCE(?, final_train_loss), error=?, "
                                     "tokens_done = CASE WHEN ?='done' THEN tokens ELSE tokens_done END, "
                                     "updated_at=") +
                         kNow + " WHERE id = (SELECT run_id FROM attempts WHERE id = ?)")
                            .c_str());
  update.bind(1, end.state).bind(2, end.final_loss).bind(3, end.final_train_loss);
  if (end.error.empty())
    update.bind_null(4);
  else
    update.bind(4, end.error);
  update.bind(5, end.state).bind(6, attempt_id);
  update.run();
  t.commit();
  return true;
}

namespace {

// An open attempt whose lease is not valid at ?1 (lapsed, broken, or none at all).
constexpr const char* kLapsedAttempt =
    "ended_at IS NULL AND (lease_id IS NULL OR lease_id IN "
    "(SELECT id FROM leases WHERE broken_at IS NOT NULL OR expires_at <= ?1))";

// Closes lapsed attempts (all, or one run's) as lost, puts their runs back to pending and breaks the
// lapsed leases, inside the caller's transaction. Returns the runs requeued.
std::int64_t requeue_lapsed_in(sqlite3* db, const std::string& reason, double now,
                               std::optional<std::int64_t> run_id) {
  const std::string only = run_id ? " AND run_id = ?3" : "";
  Statement(db, (std::string("UPDATE runs SET state='pending', tokens_per_s=NULL, updated_at=") + kNow +
                 " WHERE state='running' AND id IN (SELECT run_id FROM attempts WHERE " + kLapsedAttempt + only +
                 ")")
                    .c_str())
      .bind(1, now)
      .bind_if(3, run_id)
      .run();
  const std::int64_t requeued = sqlite3_changes(db);
  Statement(db, (std::string("UPDATE leases SET broken_at=") + kNow +
                 ", broken_why='lapsed' WHERE broken_at IS NULL AND expires_at <= ?1 AND id IN "
                 "(SELECT lease_id FROM attempts WHERE ended_at IS NULL" + only + ")")
                    .c_str())
      .bind(1, now)
      .bind_if(3, run_id)
      .run();
  Statement(db, (std::string("UPDATE attempts SET ended_at=") + kNow + ", exit_reason=?2 WHERE " +
                 kLapsedAttempt + only)
                    .c_str())
      .bind(1, now)
      .bind(2, reason)
      .bind_if(3, run_id)
      .run();
  return requeued;
}

Lease lease_row(const Statement& s, int c) {
  Lease l;
  l.id = s.i64(c);
  l.owner.host = s.text(c + 1);
  l.owner.pid = s.i64(c + 2);
  l.owner.pid_start = s.i64(c + 3);
  l.owner.slurm_job_id = s.text(c + 4);
  l.owner.slurm_restart = s.i64(c + 5);
  l.acquired_at = s.text(c + 6);
  l.expires_at = s.f64(c + 7);
  l.broken = !s.is_null(c + 8);
  return l;
}

constexpr const char* kLeaseColumns =
    "l.id, l.host, l.pid, l.pid_start, l.slurm_job_id, l.slurm_restart, l.acquired_at, l.expires_at, l.broken_at";

std::optional<Lease> sweep_lease_in(sqlite3* db, const std::string& sweep_name) {
  Statement s(db, (std::string("SELECT ") + kLeaseColumns +
                   " FROM sweeps w JOIN leases l ON l.id = w.lease_id WHERE w.name = ?")
                      .c_str());
  s.bind(1, sweep_name);
  if (!s.step()) return std::nullopt;
  return lease_row(s, 0);
}

}  // namespace

std::int64_t Store::requeue_lapsed(const std::string& reason, double now) {
  Transaction t(db_);
  const std::int64_t requeued = requeue_lapsed_in(db_, reason, now, std::nullopt);
  t.commit();
  return requeued;
}

void Store::record_submission(const std::string& sweep_name, const Submission& submission) {
  Transaction t(db_);
  Statement(db_,
            "INSERT INTO submissions(sweep_id, job_id, outcome, detail) SELECT id, ?, ?, ? FROM sweeps WHERE name = ?")
      .bind(1, submission.job_id)
      .bind(2, submission.outcome)
      .bind(3, submission.detail)
      .bind(4, sweep_name)
      .run();
  if (sqlite3_changes(db_) != 1) throw InputError(path_ + ": no sweep named '" + sweep_name + "'");
  if (!submission.job_id.empty())
    Statement(db_, "UPDATE sweeps SET slurm_job_id = ? WHERE name = ?").bind(1, submission.job_id).bind(2, sweep_name).run();
  t.commit();
}

std::vector<Submission> Store::submissions(const std::string& sweep_name) const {
  Statement s(db_,
              "SELECT b.id, b.job_id, b.outcome, b.detail, b.at FROM submissions b JOIN sweeps w ON w.id = b.sweep_id "
              "WHERE w.name = ? ORDER BY b.id");
  s.bind(1, sweep_name);
  std::vector<Submission> out;
  while (s.step()) out.push_back({s.i64(0), s.text(1), s.text(2), s.text(3), s.text(4)});
  return out;
}

Store::Acquired Store::acquire_sweep(const std::string& sweep_name, const LeaseOwner& owner, double ttl_s,
                                     double now, std::optional<std::int64_t> take_over, const std::string& why) {
  Transaction t(db_);
  Acquired result;
  result.previous = sweep_lease_in(db_, sweep_name);
  if (const auto& held = result.previous;
      held && !held->broken && held->expires_at > now && (!take_over || *take_over != held->id)) {
    return result;  // held by a valid lease we may not take: nothing written (rolled back)
  }
  if (result.previous && !result.previous->broken)
    Statement(db_, (std::string("UPDATE leases SET broken_at=") + kNow + ", broken_why=? WHERE id=?").c_str())
        .bind(1, result.previous->expires_at > now ? why : std::string("lapsed"))
        .bind(2, result.previous->id)
        .run();
  Statement(db_,
            "INSERT INTO leases(host, pid, pid_start, slurm_job_id, slurm_restart, expires_at) VALUES (?,?,?,?,?,?)")
      .bind(1, owner.host)
      .bind(2, owner.pid)
      .bind(3, owner.pid_start)
      .bind(4, owner.slurm_job_id)
      .bind(5, owner.slurm_restart)
      .bind(6, now + ttl_s)
      .run();
  const std::int64_t id = sqlite3_last_insert_rowid(db_);
  Statement(db_, "UPDATE sweeps SET lease_id = ? WHERE name = ?").bind(1, id).bind(2, sweep_name).run();
  if (sqlite3_changes(db_) != 1) throw InputError(path_ + ": no sweep named '" + sweep_name + "'");
  t.commit();
  result.lease_id = id;
  return result;
}

std::optional<Lease> Store::sweep_lease(const std::string& sweep_name) const { return sweep_lease_in(db_, sweep_name); }

std::optional<Lease> Store::lease(std::int64_t lease_id) const {
  Statement s(db_, (std::string("SELECT ") + kLeaseColumns + " FROM leases l WHERE l.id = ?").c_str());
  s.bind(1, lease_id);
  if (!s.step()) return std::nullopt;
  return lease_row(s, 0);
}

bool Store::renew_lease(std::int64_t lease_id, double ttl_s, double now) {
  Transaction t(db_);
  Statement(db_, "UPDATE leases SET expires_at = MAX(expires_at, ?) WHERE id = ? AND broken_at IS NULL")
      .bind(1, now + ttl_s)
      .bind(2, lease_id)
      .run();
  const bool held = sqlite3_changes(db_) == 1;
  t.commit();
  return held;
}

void Store::release_lease(std::int64_t lease_id) {
  Transaction t(db_);
  Statement(db_, (std::string("UPDATE leases SET broken_at=") + kNow +
                  ", broken_why='released' WHERE id = ? AND broken_at IS NULL")
                     .c_str())
      .bind(1, lease_id)
      .run();
  t.commit();
}

std::optional<std::int64_t> Store::claim_run(const std::string& run_key, int rank, int ranks,
                                             const std::string& host, std::int64_t lease_id, double now) {
  Transaction t(db_);
  Statement run(db_, "SELECT id, state FROM runs WHERE run_key = ?");
  run.bind(1, run_key);
  if (!run.step()) throw std::runtime_error("no run with key " + run_key);
  const std::int64_t run_id = run.i64(0);
  std::string state = run.text(1);
  if (state == "running" &&
      requeue_lapsed_in(db_, "lost: its coordinator's lease lapsed", now, run_id) > 0)
    state = "pending";
  if (state != "pending" && state != "preempted") return std::nullopt;  // rolled back
  const std::int64_t attempt_id = open_attempt_in(db_, run_id, rank, ranks, host, 0, lease_id);
  t.commit();
  return attempt_id;
}

std::vector<std::pair<std::string, std::string>> Store::run_states(const std::string& sweep) const {
  Statement s(db_,
              "SELECT r.run_key, r.state FROM runs r JOIN sweep_runs sr ON sr.run_id = r.id JOIN sweeps w ON "
              "w.id = sr.sweep_id WHERE w.name = ?");
  s.bind(1, sweep);
  std::vector<std::pair<std::string, std::string>> out;
  while (s.step()) out.emplace_back(s.text(0), s.text(1));
  return out;
}

std::int64_t Store::reopen_runs(const std::string& sweep, const std::string& from_state) {
  Transaction t(db_);
  const std::string members =
      "state=? AND id IN (SELECT sr.run_id FROM sweep_runs sr JOIN sweeps s ON s.id = sr.sweep_id WHERE s.name=?)";
  // The event comes first, while the runs still have their old state.
  Statement(db_, ("INSERT INTO events(run_id, kind, message) SELECT id, 'reopen', 'reopened: was ' || state "
                  "FROM runs WHERE " + members)
                     .c_str())
      .bind(1, from_state)
      .bind(2, sweep)
      .run();
  Statement(db_, (std::string("UPDATE runs SET state='pending', error=NULL, ") + kFreshRetryBudget +
                  ", updated_at=" + kNow + " WHERE " + members)
                     .c_str())
      .bind(1, from_state)
      .bind(2, sweep)
      .run();
  const std::int64_t reopened = sqlite3_changes(db_);
  t.commit();
  return reopened;
}

bool Store::reopen_run(const std::string& run_key, const std::string& reason) {
  Transaction t(db_);
  Statement(db_, (std::string("UPDATE runs SET state='pending', error=NULL, ") + kFreshRetryBudget +
                  ", updated_at=" + kNow + " WHERE run_key=? AND state IN ('done','failed','diverged')")
                     .c_str())
      .bind(1, run_key)
      .run();
  const bool reopened = sqlite3_changes(db_) == 1;
  if (reopened) {
    Statement(db_,
              "INSERT INTO events(run_id, kind, message) SELECT id, 'reopen', ? FROM runs WHERE run_key = ?")
        .bind(1, reason)
        .bind(2, run_key)
        .run();
  }
  t.commit();
  return reopened;
}

std::int64_t Store::count_attempts_since_reopen(const std::string& run_key, const std::string& exit_reason) const {
  Statement s(db_,
              "SELECT COUNT(*) FROM attempts a JOIN runs r ON r.id = a.run_id WHERE r.run_key=? AND "
              "a.exit_reason=? AND a.id > r.failures_counted_after");
  s.bind(1, run_key).bind(2, exit_reason);
  s.step();
  return s.i64(0);
}

void Store::add_event(const std::string& kind, const std::string& message, const std::string& run_key) {
  Transaction t(db_);
  Statement s(
      db_,
      "INSERT INTO events(run_id, kind, message) VALUES ((SELECT id FROM runs WHERE run_key = ?), ?, ?)");
  s.bind(1, run_key).bind(2, kind).bind(3, message).run();
  t.commit();
}

namespace {

// The `status` view's progress and flops columns (migration v3) over `runs r`.
constexpr const char* kStatusProgress =
    "(CASE WHEN r.state = 'done' THEN 1.0 ELSE MIN(1.0, MAX(0.0, CAST(r.tokens_done - "
    "COALESCE(r.branch_tokens, 0) AS REAL)) / COALESCE(r.trained_tokens, r.tokens)) END)";
constexpr const char* kStatusFlops = "(6.0 * r.n_act * COALESCE(r.trained_tokens, r.tokens))";
// The runs of one sweep, by name (bound as parameter 1).
constexpr const char* kRunOfSweep =
    "r.id IN (SELECT sr.run_id FROM sweep_runs sr JOIN sweeps w ON w.id = sr.sweep_id WHERE w.name = ?1)";

// The `status` view's columns, then the runs-table columns beside them (status_row reads them), from
// the tables. Through the view, which has no run id, runs was joined to itself by run_key and read in key
// order, a page read per row: 1.3 s at 100,000 runs (bench/status_bench.sh).
std::string status_select() {
  return std::string("SELECT r.run_key, r.state, r.n_act, r.tokens, r.experts, ") + kStatusProgress +
         ", r.step, r.last_loss, r.final_loss, r.tokens_per_s, a.rank, COALESCE(a.ranks, 0), r.attempts, "
         "r.updated_at, r.error, " +
         kStatusFlops +
         " AS flops, r.kind, COALESCE(t.run_key, ''), r.branch_step, COALESCE(r.trained_tokens, r.tokens) "
         "FROM runs r LEFT JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE run_id = r.id) "
         "LEFT JOIN runs t ON t.id = r.trunk_id";
}
// +: sorting by the key's index would read the runs in key order.
constexpr const char* kStatusOrder = " ORDER BY flops DESC, +r.run_key";

// Reads that must see one snapshot of the database: a deferred BEGIN … COMMIT (no lock for writers to
// wait on in WAL mode), unless the connection is inside a transaction already.
class ReadSnapshot {
 public:
  explicit ReadSnapshot(sqlite3* db) : db_(sqlite3_get_autocommit(db) ? db : nullptr) {
    if (db_) exec(db_, "BEGIN");
  }
  ReadSnapshot(const ReadSnapshot&) = delete;
  ReadSnapshot& operator=(const ReadSnapshot&) = delete;
  ~ReadSnapshot() {
    if (db_) sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  }

 private:
  sqlite3* db_;
};

}  // namespace

std::vector<StatusRow> Store::status(const std::optional<std::string>& sweep) const {
  const std::string where = sweep ? std::string(" WHERE ") + kRunOfSweep : "";
  Statement s(db_, (status_select() + where + kStatusOrder).c_str());
  if (sweep) s.bind(1, *sweep);
  std::vector<StatusRow> out;
  while (s.step()) out.push_back(status_row(s));
  return out;
}

StatusDigest Store::status_digest(const std::optional<std::string>& sweep,
                                  const std::vector<std::string>& listed) const {
  // Folded here rather than by GROUP BY, whose sort cost as much as the pass itself. Both reads see one
  // snapshot, so the listed rows are in the states the totals count them in.
  const ReadSnapshot snapshot(db_);
  StatusDigest out;
  std::string listed_ids;
  const std::string where = sweep ? std::string(" WHERE ") + kRunOfSweep : "";
  Statement s(db_, (std::string("SELECT r.id, r.state, r.kind, ") + kStatusFlops + ", " + kStatusFlops +
                    " * " + kStatusProgress + " FROM runs r" + where)
                       .c_str());
  if (sweep) s.bind(1, *sweep);
  while (s.step()) {
    const std::string state = s.text(1), kind = s.text(2);
    auto t = std::find_if(out.totals.begin(), out.totals.end(),
                          [&](const StatusTotals& x) { return x.state == state && x.kind == kind; });
    if (t == out.totals.end()) t = out.totals.insert(t, StatusTotals{state, kind});
    t->runs += 1;
    t->flops += s.f64(3);
    t->flops_done += s.f64(4);  // NULL (no tokens to train) counts 0, as status_row reads it
    if (std::find(listed.begin(), listed.end(), state) != listed.end())
      listed_ids += (listed_ids.empty() ? "" : ",") + std::to_string(s.i64(0));
  }
  std::sort(out.totals.begin(), out.totals.end(), [](const StatusTotals& x, const StatusTotals& y) {
    return std::tie(x.state, x.kind) < std::tie(y.state, y.kind);
  });
  if (listed_ids.empty()) return out;
  Statement rows(db_, (status_select() + " WHERE r.id IN (" + listed_ids + ")" + kStatusOrder).c_str());
  while (rows.step()) out.listed.push_back(status_row(rows));
  return out;
}

std::vector<SummaryRow> Store::summary(const std::optional<std::string>& sweep) const {
  Statement s(db_, sweep ? "SELECT * FROM sweep_summary WHERE sweep = ? ORDER BY sweep, state"
                         : "SELECT * FROM sweep_summary ORDER BY sweep, state");
  if (sweep) s.bind(1, *sweep);
  std::vector<SummaryRow> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.i64(2), s.f64(3), s.f64(4)});
  return out;
}

std::vector<FinishedRun> Store::finished_runs(const std::optional<std::string>& sweep) const {
  const char* all =
      "SELECT run_key, n_act, tokens, experts, final_loss FROM runs WHERE state='done' AND final_loss IS NOT "
      "NULL AND kind != 'trunk' "
      "ORDER BY run_key";
  const char* one =
      "SELECT r.run_key, r.n_act, r.tokens, r.experts, r.final_loss FROM runs r JOIN sweep_runs sr ON "
      "sr.run_id = "
      "r.id JOIN sweeps s ON s.id = sr.sweep_id WHERE s.name = ? AND r.state='done' AND r.final_loss IS NOT "
      "NULL AND r.kind != 'trunk' "
      "ORDER BY r.run_key";
  if (sweep && !this->sweep(*sweep)) throw InputError(path_ + ": no sweep named '" + *sweep + "'");
  Statement s(db_, sweep ? one : all);
  if (sweep) s.bind(1, *sweep);
  std::vector<FinishedRun> out;
  while (s.step()) out.push_back({s.text(0), s.i64(1), s.i64(2), s.i64(3), s.f64(4)});
  return out;
}

std::vector<std::vector<std::string>> Store::query(const std::string& sql) const {
  Statement s(db_, sql.c_str());
  std::vector<std::vector<std::string>> rows;
  while (s.step()) {
    std::vector<std::string> row;
    for (int c = 0; c < s.columns(); ++c) row.push_back(s.text(c));
    rows.push_back(std::move(row));
  }
  return rows;
}

namespace {

std::int64_t file_size_or_zero(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<std::int64_t>(size);
}

}  // namespace

WalCheck Store::maintain_wal(double now, std::int64_t truncate_above_bytes) {
  WalCheck check;
  if (journal() != Journal::Wal) return check;
  check.wal = true;
  const std::string wal_path = path_ + "-wal";
  check.wal_bytes = file_size_or_zero(wal_path);
  int log_frames = -1, checkpointed = -1;
  // PASSIVE neither waits for nor blocks anyone; BUSY means another checkpoint (the writer's automatic
  // one) was running, and this check learns nothing about pins.
  const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &checkpointed);
  const bool known = rc == SQLITE_OK && log_frames >= 0;
  check.log_frames = std::max(log_frames, 0);
  check.checkpointed_frames = std::max(checkpointed, 0);
  const bool behind = known && checkpointed < log_frames;
  {
    Transaction t(db_);
    Statement previous(db_, "SELECT pinned_since FROM wal_health WHERE id = 1");
    const std::optional<double> since = previous.step() ? previous.opt_f64(0) : std::nullopt;
    if (behind) check.pinned_since = since.value_or(now);
    if (!known) check.pinned_since = since;
    Statement(db_,
              "INSERT INTO wal_health(id, checked_at, wal_bytes, log_frames, checkpointed_frames, pinned_since) "
              "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET checked_at = excluded.checked_at, "
              "wal_bytes = excluded.wal_bytes, log_frames = excluded.log_frames, "
              "checkpointed_frames = excluded.checkpointed_frames, pinned_since = excluded.pinned_since")
        .bind(1, now)
        .bind(2, check.wal_bytes)
        .bind(3, check.log_frames)
        .bind(4, check.checkpointed_frames)
        .bind(5, check.pinned_since)
        .run();
    t.commit();
  }
  if (known && !behind && check.wal_bytes > truncate_above_bytes) {
    // TRUNCATE holds the write lock while it waits in the busy handler for readers to leave the WAL: with
    // the connection's 10 s it would stall every writer that long if a reader came in meanwhile. A reader
    // that stays makes it give up (BUSY); the next call tries again.
    sqlite3_busy_timeout(db_, 100);
    check.truncated =
        sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr) == SQLITE_OK;
    sqlite3_busy_timeout(db_, 10'000);
  }
  check.wal_bytes_after = file_size_or_zero(wal_path);
  return check;
}

std::optional<WalHealth> Store::wal_health() const {
  Statement s(db_,
              "SELECT checked_at, wal_bytes, log_frames, checkpointed_frames, pinned_since FROM wal_health "
              "WHERE id = 1");
  if (!s.step()) return std::nullopt;
  WalHealth h;
  h.checked_at = s.f64(0);
  h.recorded_wal_bytes = s.i64(1);
  h.log_frames = s.i64(2);
  h.checkpointed_frames = s.i64(3);
  h.pinned_since = s.opt_f64(4);
  h.wal_bytes = file_size_or_zero(path_ + "-wal");
  return h;
}

std::optional<std::string> wal_warning(const WalHealth& health, const std::string& db_path, double now) {
  // Only what a coordinator saw lately: with none running the WAL does not grow, and an old record may
  // name a reader long gone.
  constexpr double kFresh = 600;
  if (!health.pinned_since || health.wal_bytes <= kWalWarnBytes || now - health.checked_at > kFresh)
    return std::nullopt;
  const double held = health.checked_at - *health.pinned_since;
  if (held <= kWalWarnPinnedS) return std::nullopt;
  const std::time_t since = static_cast<std::time_t>(*health.pinned_since);
  std::tm local{};
  localtime_r(&since, &local);
  char clock[32];
  std::strftime(clock, sizeof clock, held < 86400 ? "%H:%M" : "%Y-%m-%d %H:%M", &local);
  char text[512];
  const std::string name = std::filesystem::path(db_path).filename().string() + "-wal";
  std::snprintf(text, sizeof text,
                held < 7200 ? "warning: %s is %.0f MiB and a reader has held a read transaction for %.0f min "
                              "(since %s): close forgotten sqlite3 shells or notebooks"
                            : "warning: %s is %.0f MiB and a reader has held a read transaction for %.1f h "
                              "(since %s): close forgotten sqlite3 shells or notebooks",
                name.c_str(), static_cast<double>(health.wal_bytes) / (1 << 20),
                held < 7200 ? held / 60 : held / 3600, clock);
  return std::string(text);
}

}  // namespace moesweep::db
