#pragma once
// Which journal the store's database uses: the decision, apart from the SQLite calls that apply it
// (store.cpp).
//
// WAL (write-ahead log) lets readers run beside the writer, but its processes coordinate through a
// memory-mapped `-shm` file, so "all processes using a database must be on the same host computer; WAL
// does not work over a network filesystem" (https://www.sqlite.org/wal.html, "Overview", disadvantage
// 2). Across hosts users meet SQLITE_PROTOCOL, stale reads and "database disk image is malformed". A
// sweep's database normally lives in the submit directory on NFS, Lustre or GPFS, written by the login
// node (`moesweep submit`) and a compute node (the job's coordinator): there the store uses a rollback
// journal (journal_mode = DELETE), which needs only POSIX advisory locks (fcntl), which these file
// systems provide across hosts when mounted with locking (NFS: lockd or NFSv4, not `nolock`; Lustre:
// `flock`, not `localflock`). See https://www.sqlite.org/useovernet.html.
#include <optional>
#include <string>

namespace moesweep::db {

enum class Journal {
  Auto,      // Rollback on a network or cluster file system (network_filesystem), Wal elsewhere
  Wal,       // journal_mode = WAL, synchronous = NORMAL: readers never block the writer; one host only
  Rollback,  // journal_mode = DELETE, synchronous = FULL: any number of hosts; a reader delays a commit
};

// The environment variable that overrides every caller's choice (e.g. a sweep's [store] journal):
// auto, wal or rollback.
inline constexpr const char* kJournalEnv = "MOESWEEP_JOURNAL";

// "auto", "wal", "rollback".
const char* journal_name(Journal journal);
// The inverse; anything else throws InputError naming `what` (a TOML key, the environment variable).
Journal parse_journal(const std::string& text, const std::string& what);

// The network or cluster file system whose statfs(2) f_type this is ("nfs", "lustre", "gpfs", ...), or
// nullptr for a local one. Magic numbers from Linux's include/uapi/linux/magic.h where it has them, else
// from GNU coreutils' src/stat.c (whose list marks each type "local" or "remote"). FUSE counts as
// network: sshfs, GlusterFS, JuiceFS, s3fs and CernVM-FS mount through it, and statfs cannot tell them
// from a local FUSE file system, which then only pays the rollback journal's slower commits.
const char* network_filesystem(unsigned long f_type);

// What a read-write open applies, and why, in one line for logs and `moesweep status`:
// "rollback: nfs (statfs 0x6969) at /scratch/sweeps", "wal: forced by MOESWEEP_JOURNAL=wal".
struct JournalChoice {
  Journal journal = Journal::Wal;  // Wal or Rollback, never Auto
  std::string reason;
};

// Pure: `env` (the value of MOESWEEP_JOURNAL; nullptr or "" when unset) overrides `requested`; Auto then
// goes by `f_type`, the statfs(2) of `dir`, and a statfs that failed (nullopt) gives Rollback, the
// journal that is safe everywhere. Throws InputError for a bad `env`.
JournalChoice choose_journal(Journal requested, const char* env, std::optional<unsigned long> f_type,
                             const std::string& dir);
// The same for a database file: reads the environment and statfs(2)s the file, or its directory while
// the file does not exist yet.
JournalChoice choose_journal_for(const std::string& db_path, Journal requested);

}  // namespace moesweep::db
