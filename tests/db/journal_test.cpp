// The store's journal: WAL on local disks, a rollback journal on network file systems (and the overrides),
// switching an existing file, read-only opens that never change or recover it, and the WAL's upkeep
// while a reader pins it (issue 16).
#include "moesweep/db/journal.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "moesweep/db/store.h"
#include "moesweep/input_error.h"

namespace fs = std::filesystem;
using moesweep::InputError;
using moesweep::db::choose_journal;
using moesweep::db::Journal;
using moesweep::db::network_filesystem;
using moesweep::db::Store;

namespace {

// Sets MOESWEEP_JOURNAL for one scope, and puts back what was there.
class JournalEnv {
 public:
  explicit JournalEnv(const char* value) {
    if (const char* old = std::getenv(moesweep::db::kJournalEnv)) old_ = old;
    if (value)
      setenv(moesweep::db::kJournalEnv, value, 1);
    else
      unsetenv(moesweep::db::kJournalEnv);
  }
  ~JournalEnv() {
    if (old_)
      setenv(moesweep::db::kJournalEnv, old_->c_str(), 1);
    else
      unsetenv(moesweep::db::kJournalEnv);
  }

 private:
  std::optional<std::string> old_;
};

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moesweep_journal_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string db_path() const { return (dir_ / "sweep.db").string(); }
  static std::string mode_of(const Store& store) { return store.query("PRAGMA journal_mode")[0][0]; }

  fs::path dir_;
  JournalEnv env_{nullptr};  // whatever the shell running the tests has set does not count
};

TEST(NetworkFileSystem, KnowsTheClusterAndNetworkFileSystemsByTheirStatfsMagic) {
  EXPECT_STREQ(network_filesystem(0x6969), "nfs");
  EXPECT_STREQ(network_filesystem(0x517B), "smb");
  EXPECT_STREQ(network_filesystem(0xFF534D42), "cifs");
  EXPECT_STREQ(network_filesystem(0xFE534D42), "smb2");
  EXPECT_STREQ(network_filesystem(0x0BD00BD0), "lustre");
  EXPECT_STREQ(network_filesystem(0x47504653), "gpfs");
  EXPECT_STREQ(network_filesystem(0x19830326), "beegfs");
  EXPECT_STREQ(network_filesystem(0x00C36400), "cephfs");
  EXPECT_STREQ(network_filesystem(0x5346414F), "afs");
  EXPECT_STREQ(network_filesystem(0x6B414653), "kafs");
  EXPECT_STREQ(network_filesystem(0x01021997), "9p");
  EXPECT_STREQ(network_filesystem(0x01161970), "gfs2");
  EXPECT_STREQ(network_filesystem(0x7461636F), "ocfs2");
  EXPECT_STREQ(network_filesystem(0x20030528), "orangefs");
  EXPECT_STREQ(network_filesystem(0x65735546), "fuse");
  EXPECT_STREQ(network_filesystem(0x564C), "ncp");
  EXPECT_STREQ(network_filesystem(0x73757245), "coda");
  // Local: ext2/3/4, XFS, btrfs, tmpfs, overlayfs (a container's root), ZFS.
  for (unsigned long local : {0xEF53ul, 0x58465342ul, 0x9123683Eul, 0x01021994ul, 0x794C7630ul, 0x2FC12FC1ul})
    EXPECT_EQ(network_filesystem(local), nullptr) << std::hex << local;
}

TEST(ChooseJournal, AutoGoesByTheFileSystemAndTheEnvironmentBeatsTheCaller) {
  auto nfs = choose_journal(Journal::Auto, nullptr, 0x6969ul, "/scratch/sweeps");
  EXPECT_EQ(nfs.journal, Journal::Rollback);
  EXPECT_EQ(nfs.reason, "rollback: nfs (statfs 0x6969) at /scratch/sweeps");
  auto local = choose_journal(Journal::Auto, "", 0xEF53ul, "/home/me");
  EXPECT_EQ(local.journal, Journal::Wal);
  EXPECT_EQ(local.reason, "wal: local file system (statfs 0xef53) at /home/me");
  // statfs failed: the journal that is safe everywhere.
  EXPECT_EQ(choose_journal(Journal::Auto, nullptr, std::nullopt, "/x").journal, Journal::Rollback);
  // The caller's choice beats the file system; the environment beats the caller.
  EXPECT_EQ(choose_journal(Journal::Wal, nullptr, 0x6969ul, "/x").journal, Journal::Wal);
  auto forced = choose_journal(Journal::Wal, "rollback", 0xEF53ul, "/x");
  EXPECT_EQ(forced.journal, Journal::Rollback);
  EXPECT_EQ(forced.reason, "rollback: forced by MOESWEEP_JOURNAL=rollback");
  EXPECT_EQ(choose_journal(Journal::Rollback, "wal", 0x6969ul, "/x").journal, Journal::Wal);
  // MOESWEEP_JOURNAL=auto undoes a caller's choice too.
  auto back_to_auto = choose_journal(Journal::Wal, "auto", 0x0BD00BD0ul, "/lustre/x");
  EXPECT_EQ(back_to_auto.journal, Journal::Rollback);
  EXPECT_NE(back_to_auto.reason.find("lustre"), std::string::npos);
}

TEST(ChooseJournal, ABadValueIsAnInputErrorNamingWhereItCameFrom) {
  try {
    choose_journal(Journal::Auto, "WAL2", 0xEF53ul, "/x");
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("MOESWEEP_JOURNAL"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("WAL2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(moesweep::db::parse_journal("delete", "store.journal"), InputError);
  EXPECT_EQ(moesweep::db::parse_journal("rollback", "store.journal"), Journal::Rollback);
}

TEST_F(JournalTest, TheEnvironmentBeatsTheCallerAtOpen) {
  JournalEnv env("rollback");
  Store store = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Wal);
  EXPECT_EQ(store.journal(), Journal::Rollback);
  EXPECT_EQ(mode_of(store), "delete");
  EXPECT_EQ(store.journal_choice().reason, "rollback: forced by MOESWEEP_JOURNAL=rollback");
}

TEST_F(JournalTest, ABadEnvironmentValueRefusesToOpen) {
  JournalEnv env("sometimes");
  EXPECT_THROW(Store::open(db_path()), InputError);
  EXPECT_FALSE(fs::exists(db_path()));
}

TEST_F(JournalTest, AnExistingDatabaseSwitchesModeWhenOpenedForWriting) {
  {
    Store store = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Wal);
    EXPECT_EQ(mode_of(store), "wal");
    EXPECT_EQ(store.query("PRAGMA synchronous")[0][0], "1");  // NORMAL
    EXPECT_EQ(store.query("PRAGMA journal_size_limit")[0][0],
              std::to_string(moesweep::db::kWalSizeLimitBytes));
    store.add_event("note", "written in WAL mode");
    EXPECT_TRUE(fs::exists(db_path() + "-wal"));
  }
  {
    Store store = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Rollback);
    EXPECT_EQ(store.journal(), Journal::Rollback);
    EXPECT_EQ(mode_of(store), "delete");
    EXPECT_EQ(store.query("PRAGMA synchronous")[0][0], "2");  // FULL
    EXPECT_FALSE(fs::exists(db_path() + "-wal"));             // what it held is in the database file
    EXPECT_EQ(store.query("SELECT COUNT(*) FROM events WHERE kind = 'note'")[0][0], "1");
    store.add_event("note", "written with a rollback journal");
  }
  EXPECT_FALSE(fs::exists(db_path() + "-journal"));
  Store store = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Wal);
  EXPECT_EQ(store.journal(), Journal::Wal);
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM events WHERE kind = 'note'")[0][0], "2");
}

TEST_F(JournalTest, AReadOnlyOpenNeverChangesTheMode) {
  Store::open(db_path(), Store::Mode::ReadWrite, Journal::Wal);
  {
    Store reader = Store::open(db_path(), Store::Mode::ReadOnly, Journal::Rollback);
    EXPECT_EQ(reader.journal(), Journal::Wal);
    EXPECT_EQ(reader.journal_choice().journal, Journal::Rollback);  // what a writer here would do
  }
  EXPECT_EQ(Store::open(db_path(), Store::Mode::ReadOnly).journal(), Journal::Wal);

  Store::open(db_path(), Store::Mode::ReadWrite, Journal::Rollback);
  {
    JournalEnv env("wal");
    EXPECT_EQ(Store::open(db_path(), Store::Mode::ReadOnly).journal(), Journal::Rollback);
  }
  EXPECT_EQ(Store::open(db_path(), Store::Mode::ReadOnly).journal(), Journal::Rollback);
  EXPECT_FALSE(fs::exists(db_path() + "-wal"));
}

TEST_F(JournalTest, ASwitchAnotherConnectionBlocksGoesOnInTheFilesModeWithAWarning) {
  // Leaving WAL needs every other connection closed: a coordinator (or a sqlite3 shell) keeps it open.
  Store holder = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Wal);
  ::testing::internal::CaptureStderr();
  Store second = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Rollback);  // waits 10 s
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(second.journal(), Journal::Wal);
  EXPECT_NE(said.find("stays in WAL mode"), std::string::npos) << said;
  second.add_event("note", "still writes");
  EXPECT_EQ(holder.query("SELECT COUNT(*) FROM events WHERE kind = 'note'")[0][0], "1");
}

TEST_F(JournalTest, AHotJournalFailsAReadOnlyOpenAndTheNextWriterRollsItBack) {
  {
    Store store = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Rollback);
    store.add_event("note", "committed");
  }
  // A writer killed mid-transaction: its cache is too small for the transaction, so changed pages
  // spill into the database file before the commit, and only the journal can undo them.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      Store store = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Rollback);
      store.query("PRAGMA cache_size = 2");
      store.query("BEGIN IMMEDIATE");
      store.query(
          "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 2000) "
          "INSERT INTO events(kind, message) SELECT 'lost', hex(randomblob(500)) FROM n");
      _exit(0);  // no COMMIT, no ROLLBACK, no close
    } catch (...) {
      _exit(1);
    }
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_TRUE(fs::exists(db_path() + "-journal"));
  const auto db_bytes = fs::file_size(db_path());

  try {
    Store::open(db_path(), Store::Mode::ReadOnly);
    FAIL() << "a read-only open read past a hot journal";
  } catch (const InputError& e) {
    const std::string said = e.what();
    EXPECT_NE(said.find("a writer died in the middle of a transaction"), std::string::npos) << said;
    EXPECT_NE(said.find("the next read-write open"), std::string::npos) << said;
  }
  EXPECT_TRUE(fs::exists(db_path() + "-journal"));  // left for the writer
  EXPECT_EQ(fs::file_size(db_path()), db_bytes);

  Store store = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Rollback);
  EXPECT_FALSE(fs::exists(db_path() + "-journal"));
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM events WHERE kind = 'lost'")[0][0], "0");
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM events WHERE kind = 'note'")[0][0], "1");
  EXPECT_EQ(store.query("PRAGMA integrity_check")[0][0], "ok");
  EXPECT_NO_THROW(Store::open(db_path(), Store::Mode::ReadOnly));
}

TEST_F(JournalTest, MaintainWalReportsAPinningReaderAndEmptiesTheWalOnceItLeaves) {
  Store writer = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Wal);
  writer.add_event("note", "before the reader");
  // A forgotten sqlite3 shell: a read transaction left open holds its snapshot.
  Store reader = Store::open(db_path(), Store::Mode::ReadOnly);
  reader.query("BEGIN");
  ASSERT_EQ(reader.query("SELECT COUNT(*) FROM events")[0][0], "1");

  const std::string payload(8000, 'x');
  for (int i = 0; i < 2500; ++i) writer.add_event("beat", payload);  // ≈ 20 MB of heartbeats
  const auto pinned_bytes = static_cast<std::int64_t>(fs::file_size(db_path() + "-wal"));
  EXPECT_GT(pinned_bytes, moesweep::db::kWalTruncateAboveBytes);

  const auto first = writer.maintain_wal(1000.0);
  EXPECT_TRUE(first.wal);
  EXPECT_LT(first.checkpointed_frames, first.log_frames);
  ASSERT_TRUE(first.pinned_since);
  EXPECT_EQ(*first.pinned_since, 1000.0);
  EXPECT_FALSE(first.truncated);
  EXPECT_GE(first.wal_bytes_after, pinned_bytes);  // SQLite cannot shrink it under the reader

  const auto second = writer.maintain_wal(1400.0);
  ASSERT_TRUE(second.pinned_since);
  EXPECT_EQ(*second.pinned_since, 1000.0);  // the same pin, still
  {
    const auto health = Store::open(db_path(), Store::Mode::ReadOnly).wal_health();
    ASSERT_TRUE(health);
    EXPECT_EQ(health->checked_at, 1400.0);
    ASSERT_TRUE(health->pinned_since);
    EXPECT_EQ(*health->pinned_since, 1000.0);
    EXPECT_GT(health->wal_bytes, moesweep::db::kWalTruncateAboveBytes);
  }

  reader.query("COMMIT");  // the shell is closed
  const auto third = writer.maintain_wal(1500.0);
  EXPECT_FALSE(third.pinned_since);
  EXPECT_EQ(third.checkpointed_frames, third.log_frames);
  EXPECT_TRUE(third.truncated);
  EXPECT_EQ(third.wal_bytes_after, 0);
  EXPECT_EQ(fs::file_size(db_path() + "-wal"), 0u);
  EXPECT_EQ(writer.query("SELECT COUNT(*) FROM events WHERE kind = 'beat'")[0][0], "2500");
  const auto health = writer.wal_health();
  ASSERT_TRUE(health);
  EXPECT_FALSE(health->pinned_since);
}

TEST_F(JournalTest, AWalWithoutAReaderIsLeftForSqliteToReuse) {
  Store writer = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Wal);
  writer.add_event("note", "small");
  const auto check = writer.maintain_wal(10.0);
  EXPECT_TRUE(check.wal);
  EXPECT_FALSE(check.pinned_since);
  EXPECT_FALSE(check.truncated);  // far below kWalTruncateAboveBytes
  EXPECT_GT(check.wal_bytes_after, 0);
}

TEST_F(JournalTest, MaintainWalDoesNothingWithARollbackJournal) {
  Store store = Store::open(db_path(), Store::Mode::ReadWrite, Journal::Rollback);
  const auto check = store.maintain_wal(10.0);
  EXPECT_FALSE(check.wal);
  EXPECT_FALSE(store.wal_health());
}

TEST(WalWarning, NamesALongPinOfALargeWalSeenLately) {
  moesweep::db::WalHealth h;
  const double now = 1'700'000'000;
  h.checked_at = now - 5;
  h.pinned_since = now - 5 - 38 * 60;
  h.wal_bytes = 210ll << 20;
  const auto warning = moesweep::db::wal_warning(h, "/scratch/sweep.db", now);
  ASSERT_TRUE(warning);
  EXPECT_EQ(
      warning->rfind("warning: sweep.db-wal is 210 MiB and a reader has held a read transaction for 38 min "
                     "(since ",
                     0),
      0u)
      << *warning;
  EXPECT_NE(warning->find("close forgotten sqlite3 shells or notebooks"), std::string::npos);

  auto small = h;
  small.wal_bytes = 10ll << 20;
  EXPECT_FALSE(moesweep::db::wal_warning(small, "sweep.db", now));
  auto brief = h;
  brief.pinned_since = now - 60;
  EXPECT_FALSE(moesweep::db::wal_warning(brief, "sweep.db", now));
  auto unpinned = h;
  unpinned.pinned_since.reset();
  EXPECT_FALSE(moesweep::db::wal_warning(unpinned, "sweep.db", now));
  auto stale = h;  // no coordinator has looked for an hour
  EXPECT_FALSE(moesweep::db::wal_warning(stale, "sweep.db", now + 3600));
}

}  // namespace
