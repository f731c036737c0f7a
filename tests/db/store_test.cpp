// The store: idempotent registration, attempts and heartbeats, the monitoring views, migrations, and
// refusing files that are not ours.
#include "moesweep/db/store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "moesweep/input_error.h"

namespace fs = std::filesystem;
using moesweep::db::AttemptEnd;
using moesweep::db::Heartbeat;
using moesweep::db::RunSpec;
using moesweep::db::Store;

namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moesweep_store_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string db_path() const { return (dir_ / "sweep.db").string(); }

  static RunSpec run(const std::string& key, std::int64_t n_act, std::int64_t tokens,
                     std::int64_t experts = 1) {
    RunSpec r;
    r.run_key = key;
    r.config_json = "{\"key\":\"" + key + "\"}";
    r.n_act = n_act;
    r.n_total = n_act * experts;
    r.tokens = tokens;
    r.experts = experts;
    r.d_model = 64;
    r.n_layers = 2;
    r.n_heads = 4;
    r.lr = 1e-3;
    r.flops = 6.0 * static_cast<double>(n_act) * static_cast<double>(tokens);
    return r;
  }

  fs::path dir_;
};

TEST_F(StoreTest, RegisteringTheSameSweepTwiceAddsNothing) {
  Store store = Store::open(db_path());
  std::vector<RunSpec> runs = {run("a", 1000, 10000), run("b", 2000, 10000), run("c", 4000, 20000, 4)};
  EXPECT_EQ(store.register_sweep("s", "sweeps/s.toml", runs), 3);
  EXPECT_EQ(store.register_sweep("s", "sweeps/s.toml", runs), 0);
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM runs")[0][0], "3");
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM sweep_runs")[0][0], "3");
  EXPECT_EQ(store.sweeps().size(), 1u);
}

TEST_F(StoreTest, ARunSharedByTwoSweepsIsOneRowInBoth) {
  Store store = Store::open(db_path());
  store.register_sweep("first", "a.toml", {run("a", 1000, 10000), run("b", 2000, 10000)});
  EXPECT_EQ(store.register_sweep("second", "b.toml", {run("b", 2000, 10000), run("c", 3000, 10000)}), 1);
  EXPECT_EQ(store.status("first").size(), 2u);
  EXPECT_EQ(store.status("second").size(), 2u);
  EXPECT_EQ(store.status().size(), 3u);
}

TEST_F(StoreTest, ASweepIsWhatItsFileExpandsToNow) {
  // A sweep file changed (another grid, another training recipe: new run keys) and registered again:
  // the sweep's status, summary and fit see the new runs only; the old ones keep their rows.
  Store store = Store::open(db_path());
  store.register_sweep("s", "s.toml", {run("old", 1000, 10000), run("both", 2000, 10000)});
  EXPECT_EQ(store.register_sweep("s", "s.toml", {run("both", 2000, 10000), run("new", 3000, 10000)}), 1);
  std::vector<std::string> keys;
  for (const auto& row : store.status("s")) keys.push_back(row.run_key);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"both", "new"}));
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM runs")[0][0], "3");
}

TEST_F(StoreTest, WalModeAndSchemaVersion) {
  Store store = Store::open(db_path());
  EXPECT_EQ(store.query("PRAGMA journal_mode")[0][0], "wal");
  EXPECT_EQ(store.schema_version(), moesweep::db::latest_schema_version());
}

// Store::status reads the tables, not the view (the view has no run id to join on): the same columns.
// status_digest's totals and listed rows are those of status(), a run shared by two sweeps counted once.
TEST_F(StoreTest, StatusDigestAgreesWithEveryRowAndStatusWithTheView) {
  Store store = Store::open(db_path());
  RunSpec trunk = run("trunk", 3000, 40000, 4);
  trunk.kind = "trunk";
  trunk.trained_tokens = 32000;
  RunSpec branch = run("branch", 3000, 40000, 4);
  branch.kind = "branch";
  branch.trunk_key = "trunk";
  branch.branch_step = 8;
  branch.branch_tokens = 32000;
  branch.trained_tokens = 8000;
  store.register_sweep("first", "a.toml",
                       {run("a", 1000, 10000), run("b", 2000, 10000), trunk, branch, run("f", 500, 10000)});
  store.register_sweep("second", "b.toml", {run("b", 2000, 10000), run("c", 3000, 10000)});
  const auto a = store.start_attempt("a", 1, 1, "node1");
  store.record_heartbeats({Heartbeat{a, 20, 5000, 3.2, std::nullopt, 1300.0, 1e-3}});
  const auto t = store.start_attempt("trunk", 2, 2, "node1");
  store.finish_attempt(t, AttemptEnd{"done", "completed", 3.0, 3.1, ""});
  const auto b = store.start_attempt("branch", 3, 1, "node2");
  store.record_heartbeats({Heartbeat{b, 10, 36000, 3.4, std::nullopt, 900.0, 1e-3}});  // 4000 of its 8000
  const auto f1 = store.start_attempt("f", 1, 1, "node2");
  store.finish_attempt(f1, AttemptEnd{"failed", "exception", std::nullopt, std::nullopt, "boom"});

  const std::vector<std::optional<std::string>> sweeps = {std::nullopt, "first", "second"};
  for (const auto& sweep : sweeps) {
    const auto rows = store.status(sweep);
    std::map<std::pair<std::string, std::string>, moesweep::db::StatusTotals> folded;
    std::vector<std::string> listed;
    for (const auto& r : rows) {
      auto& f = folded[{r.state, r.kind}];
      f.runs += 1;
      f.flops += r.flops;
      f.flops_done += r.flops * r.progress;
      if (r.state == "running" || r.state == "failed") listed.push_back(r.run_key);
    }
    const auto digest = store.status_digest(sweep, {"running", "failed"});
    ASSERT_EQ(digest.totals.size(), folded.size()) << sweep.value_or("all");
    for (const auto& got : digest.totals) {
      const auto& want = folded.at({got.state, got.kind});
      EXPECT_EQ(got.runs, want.runs) << got.state << " " << got.kind;
      EXPECT_DOUBLE_EQ(got.flops, want.flops) << got.state << " " << got.kind;
      EXPECT_DOUBLE_EQ(got.flops_done, want.flops_done) << got.state << " " << got.kind;
    }
    std::vector<std::string> got_listed;
    for (const auto& r : digest.listed) got_listed.push_back(r.run_key);
    EXPECT_EQ(got_listed, listed) << sweep.value_or("all");  // and in the same order
  }
  EXPECT_EQ(store.status().size(), 6u);
  const auto second = store.status_digest("second", {"running"});
  ASSERT_EQ(second.totals.size(), 1u);  // b and c, both pending runs
  EXPECT_EQ(second.totals[0].runs, 2);
  EXPECT_TRUE(second.listed.empty());

  // Each row's view columns are the view's.
  std::map<std::string, std::vector<std::string>> view;
  for (auto& row : store.query("SELECT * FROM status")) view[row[0]] = row;
  for (const auto& r : store.status()) {
    const auto& v = view.at(r.run_key);
    EXPECT_EQ(v[1], r.state);
    EXPECT_DOUBLE_EQ(std::stod(v[5]), r.progress) << r.run_key;
    EXPECT_EQ(v[10], r.rank ? std::to_string(*r.rank) : "") << r.run_key;
    EXPECT_EQ(std::stoll(v[11]), r.ranks) << r.run_key;
    EXPECT_DOUBLE_EQ(std::stod(v[15]), r.flops) << r.run_key;
  }
  const auto rows = store.status();
  const auto& br = *std::find_if(rows.begin(), rows.end(), [](auto& r) { return r.run_key == "branch"; });
  EXPECT_DOUBLE_EQ(br.progress, 0.5);
  EXPECT_EQ(br.trunk_key, "trunk");
}

TEST_F(StoreTest, StatusViewFollowsAnAttemptFromStartToDone) {
  Store store = Store::open(db_path());
  store.register_sweep("s", "s.toml", {run("a", 1000, 10000), run("b", 2000, 10000)});
  const auto attempt = store.start_attempt("a", 1, 1, "node1");
  store.record_heartbeats({Heartbeat{attempt, 10, 2500, 3.5, std::nullopt, 1234.0, 1e-3},
                           Heartbeat{attempt, 20, 5000, 3.2, std::nullopt, 1300.0, 1e-3}});

  auto rows = store.status("s");
  const auto& a = *std::find_if(rows.begin(), rows.end(), [](auto& r) { return r.run_key == "a"; });
  EXPECT_EQ(a.state, "running");
  EXPECT_DOUBLE_EQ(a.progress, 0.5);
  EXPECT_EQ(a.step, 20);
  EXPECT_DOUBLE_EQ(*a.last_loss, 3.2);
  EXPECT_DOUBLE_EQ(*a.tokens_per_s, 1300.0);
  EXPECT_EQ(*a.rank, 1);
  EXPECT_EQ(a.attempts, 1);

  // Summary by compute: half of run a is done, none of b.
  for (const auto& s : store.summary("s")) {
    if (s.state == "running") {
      EXPECT_DOUBLE_EQ(s.flops_done, 6.0 * 1000 * 5000);
    }
    if (s.state == "pending") {
      EXPECT_DOUBLE_EQ(s.flops_done, 0.0);
    }
  }

  store.finish_attempt(attempt, AttemptEnd{"done", "completed", 2.9, 3.1, ""});
  rows = store.status("s");
  const auto& done = *std::find_if(rows.begin(), rows.end(), [](auto& r) { return r.run_key == "a"; });
  EXPECT_EQ(done.state, "done");
  EXPECT_DOUBLE_EQ(done.progress, 1.0);
  EXPECT_DOUBLE_EQ(*done.final_loss, 2.9);

  auto finished = store.finished_runs("s");
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].run_key, "a");
  EXPECT_DOUBLE_EQ(finished[0].final_loss, 2.9);
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM metrics WHERE attempt_id = " + std::to_string(attempt))[0][0],
            "2");
}

TEST_F(StoreTest, SweepSummaryCountsComputeByState) {
  Store store = Store::open(db_path());
  store.register_sweep("s", "s.toml", {run("a", 1000, 10000), run("b", 2000, 10000), run("c", 3000, 10000)});
  const auto attempt = store.start_attempt("a", 1, 1, "node1");
  store.finish_attempt(attempt, AttemptEnd{"done", "completed", 3.0, 3.0, ""});
  const auto failed = store.start_attempt("b", 2, 1, "node1");
  store.finish_attempt(failed, AttemptEnd{"failed", "exception", std::nullopt, std::nullopt, "boom"});

  std::map<std::string, moesweep::db::SummaryRow> by_state;
  for (const auto& s : store.summary("s")) by_state[s.state] = s;
  ASSERT_EQ(by_state.size(), 3u);
  EXPECT_EQ(by_state["done"].runs, 1);
  EXPECT_DOUBLE_EQ(by_state["done"].flops_done, 6.0 * 1000 * 10000);
  EXPECT_DOUBLE_EQ(by_state["failed"].flops_total, 6.0 * 2000 * 10000);
  EXPECT_DOUBLE_EQ(by_state["pending"].flops_done, 0.0);
  // The same view answers plain SQL, as users query it with sqlite3.
  EXPECT_EQ(store.query("SELECT runs FROM sweep_summary WHERE state='done'")[0][0], "1");
  EXPECT_EQ(store.query("SELECT error FROM status WHERE run_key='b'")[0][0], "boom");
}

TEST_F(StoreTest, ADoneRunCannotStartAgainAndAnAttemptEndsOnce) {
  Store store = Store::open(db_path());
  store.register_sweep("s", "s.toml", {run("a", 1000, 10000)});
  const auto attempt = store.start_attempt("a", 1, 1, "node1");
  store.finish_attempt(attempt, AttemptEnd{"done", "completed", 3.0, 3.0, ""});
  EXPECT_THROW(store.start_attempt("a", 1, 1, "node1"), std::runtime_error);
  // A second end (a fenced attempt's late result) writes nothing and says so.
  EXPECT_FALSE(store.finish_attempt(attempt, AttemptEnd{"failed", "again", std::nullopt, std::nullopt, "x"}));
  EXPECT_EQ(store.query("SELECT state, attempts FROM runs")[0], (std::vector<std::string>{"done", "1"}));
}

TEST_F(StoreTest, ReopeningFailedRunsGivesThemTheirWholeRetryBudgetAgain) {
  Store store = Store::open(db_path());
  store.register_sweep("s", "s.toml", {run("a", 1000, 10000), run("b", 1000, 20000)});
  const auto fail = [&](const std::string& key, const std::string& state) {
    store.finish_attempt(store.start_attempt(key, 1, 1, "node1"),
                         AttemptEnd{state, "failed", std::nullopt, std::nullopt, "boom"});
  };
  fail("a", "pending");
  fail("a", "failed");
  fail("b", "pending");  // b is still pending: reopening failed runs must not reset its count
  EXPECT_EQ(store.count_attempts_since_reopen("a", "failed"), 2);

  EXPECT_EQ(store.reopen_runs("s", "failed"), 1);
  EXPECT_EQ(store.query("SELECT state FROM runs WHERE run_key = 'a'")[0][0], "pending");
  EXPECT_EQ(store.count_attempts_since_reopen("a", "failed"), 0);
  EXPECT_EQ(store.count_attempts_since_reopen("b", "failed"), 1);
  EXPECT_EQ(store.query("SELECT message FROM events e JOIN runs r ON r.id = e.run_id WHERE e.kind = 'reopen'"),
            (std::vector<std::vector<std::string>>{{"reopened: was failed"}}));
  fail("a", "pending");
  EXPECT_EQ(store.count_attempts_since_reopen("a", "failed"), 1);
  EXPECT_EQ(store.query("SELECT attempts FROM runs WHERE run_key = 'a'")[0][0], "3");  // history is kept
}

TEST_F(StoreTest, AFailedWriteLeavesNoHalfWrittenRows) {
  Store store = Store::open(db_path());
  store.register_sweep("s", "s.toml", {run("a", 1000, 10000)});
  const auto attempt = store.start_attempt("a", 1, 1, "node1");
  // The second heartbeat names an attempt that does not exist: the whole batch is rolled back.
  EXPECT_THROW(store.record_heartbeats({Heartbeat{attempt, 1, 100, 3.0, std::nullopt, 10, 1e-3},
                                        Heartbeat{attempt + 99, 2, 200, 3.0, std::nullopt, 10, 1e-3}}),
               std::runtime_error);
  EXPECT_EQ(store.query("SELECT COUNT(*) FROM metrics")[0][0], "0");
  EXPECT_EQ(store.query("SELECT step FROM runs")[0][0], "0");
}

TEST_F(StoreTest, MigratesAnOlderSchemaForwardKeepingItsRows) {
  {
    Store old = Store::open_at_version(db_path(), 1);
    EXPECT_EQ(old.schema_version(), 1);
    // A version-1 database has no live-progress columns and no views yet.
    EXPECT_TRUE(old.query("SELECT name FROM sqlite_master WHERE name='status'").empty());
    old.query("INSERT INTO sweeps(name, spec_path) VALUES ('s', 's.toml')");
    old.query(
        "INSERT INTO runs(run_key, config_json, n_act, n_total, tokens, experts, d_model, n_layers, n_heads, "
        "lr, "
        "flops, state, final_loss) VALUES ('old', '{}', 1000, 1000, 10000, 1, 64, 2, 4, 0.001, 6e7, 'done', "
        "2.5)");
    old.query("INSERT INTO sweep_runs VALUES (1, 1)");
  }
  Store store = Store::open(db_path());
  EXPECT_EQ(store.schema_version(), moesweep::db::latest_schema_version());
  auto rows = store.status("s");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].state, "done");
  EXPECT_DOUBLE_EQ(rows[0].progress, 1.0);
  EXPECT_DOUBLE_EQ(*rows[0].final_loss, 2.5);
  EXPECT_DOUBLE_EQ(store.summary("s")[0].flops_done, 6e7);  // tokens_done back-filled for done runs
}

TEST_F(StoreTest, ReadOnlyOpenRefusesMissingOldAndForeignFiles) {
  EXPECT_THROW(Store::open(db_path(), Store::Mode::ReadOnly), moesweep::InputError);
  EXPECT_FALSE(fs::exists(db_path()));  // a read-only open never creates the file

  { Store::open_at_version(db_path(), 1); }
  EXPECT_THROW(Store::open(db_path(), Store::Mode::ReadOnly), moesweep::InputError);

  const std::string text = (dir_ / "notes.txt").string();
  std::ofstream(text) << "this is not a database, just some text that is long enough to have a header\n";
  EXPECT_THROW(Store::open(text), moesweep::InputError);

  const std::string foreign = (dir_ / "foreign.db").string();
  sqlite3* raw = nullptr;
  sqlite3_open(foreign.c_str(), &raw);
  sqlite3_exec(raw, "CREATE TABLE t(x)", nullptr, nullptr, nullptr);
  sqlite3_close(raw);
  EXPECT_THROW(Store::open(foreign), moesweep::InputError);
}

TEST_F(StoreTest, ReadersSeeCommittedStateWhileTheWriterHoldsTheFile) {
  Store writer = Store::open(db_path());
  writer.register_sweep("s", "s.toml", {run("a", 1000, 10000)});
  Store reader = Store::open(db_path(), Store::Mode::ReadOnly);
  const auto attempt = writer.start_attempt("a", 1, 1, "node1");
  EXPECT_EQ(reader.status()[0].state, "running");
  writer.finish_attempt(attempt, AttemptEnd{"done", "completed", 3.0, 3.0, ""});
  EXPECT_EQ(reader.status()[0].state, "done");
}

// Schema v3 (cooldown branching): a v2 database keeps its runs as independent runs that train their D,
// with the same progress and FLOPs as before.
TEST_F(StoreTest, MigratesAVersion2DatabaseToBranchingKeepingItsFigures) {
  {
    // Rows as a version-2 build wrote them (this build's writes already use the v3 columns).
    Store old = Store::open_at_version(db_path(), 2);
    old.query("INSERT INTO sweeps(name, spec_path) VALUES ('s', 's.toml')");
    old.query(
        "INSERT INTO runs(run_key, config_json, n_act, n_total, tokens, experts, d_model, n_layers, n_heads, "
        "lr, "
        "flops, state, final_loss, tokens_done) VALUES "
        "('a', '{}', 1000, 1000, 10000, 1, 64, 2, 4, 0.001, 6e7, 'done', 3.0, 10000), "
        "('b', '{}', 2000, 2000, 10000, 1, 64, 2, 4, 0.001, 1.2e8, 'running', NULL, 2500)");
    old.query("INSERT INTO sweep_runs VALUES (1, 1), (1, 2)");
  }
  Store store = Store::open(db_path());
  EXPECT_EQ(store.schema_version(), moesweep::db::latest_schema_version());
  EXPECT_EQ(
      store.query("SELECT group_concat(kind || ':' || trained_tokens, ' ') FROM runs ORDER BY id")[0][0],
      "run:10000 run:10000");
  const auto rows = store.status("s");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].run_key, "b");  // the larger run first
  EXPECT_DOUBLE_EQ(rows[0].progress, 0.25);
  EXPECT_DOUBLE_EQ(rows[0].flops, 6.0 * 2000 * 10000);
  EXPECT_EQ(rows[0].kind, "run");
  EXPECT_TRUE(rows[0].trunk_key.empty());
  EXPECT_FALSE(rows[0].branch_step.has_value());
  double done = 0, total = 0;
  for (const auto& s : store.summary("s")) done += s.flops_done, total += s.flops_total;
  EXPECT_DOUBLE_EQ(done, 6.0 * 1000 * 10000 + 6.0 * 2000 * 2500);
  EXPECT_DOUBLE_EQ(total, 6.0 * 1000 * 10000 + 6.0 * 2000 * 10000);
  EXPECT_EQ(store.finished_runs("s").size(), 1u);
}

}  // namespace

// --- Leases (schema v5): one owner per sweep, runs claimed once, only lapsed owners requeued --------------

namespace {

moesweep::db::LeaseOwner owner(const std::string& host, std::int64_t pid) {
  moesweep::db::LeaseOwner o;
  o.host = host;
  o.pid = pid;
  return o;
}

}  // namespace

TEST_F(StoreTest, ASweepHasOneLeaseHolderUntilItsLeaseLapses) {
  Store store = Store::open(db_path());
  store.register_sweep("s", "s.toml", {run("a", 1000, 10000)});
  const auto first = store.acquire_sweep("s", owner("n1", 10), 60, 1000.0);
  ASSERT_TRUE(first.lease_id);
  // A second coordinator while the first lease holds: nothing taken, the holder named.
  const auto second = store.acquire_sweep("s", owner("n2", 20), 60, 1030.0);
  EXPECT_FALSE(second.lease_id);
  ASSERT_TRUE(second.previous);
  EXPECT_EQ(second.previous->owner.host, "n1");
  EXPECT_EQ(second.previous->owner.pid, 10);
  // Renewed at 1050, it holds until 1110; at 1111 it has lapsed and is taken, and broken for good.
  EXPECT_TRUE(store.renew_lease(*first.lease_id, 60, 1050.0));
  EXPECT_FALSE(store.acquire_sweep("s", owner("n2", 20), 60, 1100.0).lease_id);
  const auto third = store.acquire_sweep("s", owner("n2", 20), 60, 1111.0);
  ASSERT_TRUE(third.lease_id);
  EXPECT_FALSE(store.renew_lease(*first.lease_id, 60, 1112.0)) << "a broken lease must not come back";
  EXPECT_TRUE(store.lease(*first.lease_id)->broken);
  // Taking over a live lease needs its id (the caller proved its holder dead); a wrong id takes nothing.
  EXPECT_FALSE(store.acquire_sweep("s", owner("n1", 30), 60, 1120.0, *first.lease_id).lease_id);
  EXPECT_TRUE(store.acquire_sweep("s", owner("n1", 30), 60, 1120.0, *third.lease_id).lease_id);
  // A released lease frees the sweep at once.
  const auto now_held = store.sweep_lease("s");
  ASSERT_TRUE(now_held);
  store.release_lease(now_held->id);
  EXPECT_TRUE(store.acquire_sweep("s", owner("n3", 40), 60, 1121.0).lease_id);
}

TEST_F(StoreTest, ARunIsClaimedByOneAttemptAndRequeuedOnlyWhenItsOwnersLeaseLapsed) {
  Store store = Store::open(db_path());
  store.register_sweep("A", "a.toml", {run("shared", 1000, 10000), run("a", 1000, 20000)});
  store.register_sweep("B", "b.toml", {run("shared", 1000, 10000), run("b", 1000, 30000)});
  const auto a = *store.acquire_sweep("A", owner("n1", 1), 60, 1000.0).lease_id;
  const auto b = *store.acquire_sweep("B", owner("n2", 2), 60, 1000.0).lease_id;
  const auto attempt = store.claim_run("shared", 1, 1, "n1", a, 1001.0);
  ASSERT_TRUE(attempt);
  // B's coordinator can neither claim the shared run nor requeue it while A's lease holds.
  EXPECT_FALSE(store.claim_run("shared", 1, 1, "n2", b, 1002.0));
  EXPECT_EQ(store.requeue_lapsed("lost", 1002.0), 0);
  EXPECT_EQ(store.query("SELECT state, attempts FROM runs WHERE run_key='shared'")[0],
            (std::vector<std::string>{"running", "1"}));
  // Once A's lease lapses, B claims it: A's attempt is closed as lost first, and A's late result is refused.
  const auto taken = store.claim_run("shared", 1, 1, "n2", b, 1061.0);
  ASSERT_TRUE(taken);
  EXPECT_EQ(store.query("SELECT exit_reason FROM attempts WHERE id=" + std::to_string(*attempt))[0][0],
            "lost: its coordinator's lease lapsed");
  EXPECT_FALSE(store.finish_attempt(*attempt, AttemptEnd{"done", "completed", 9.9, 9.9, ""}));
  EXPECT_FALSE(store.renew_lease(a, 60, 1062.0)) << "the lapsed lease B acted on is broken";
  EXPECT_TRUE(store.finish_attempt(*taken, AttemptEnd{"done", "completed", 3.0, 3.0, ""}));
  EXPECT_EQ(store.query("SELECT state, final_loss FROM runs WHERE run_key='shared'")[0],
            (std::vector<std::string>{"done", "3.0"}));
  EXPECT_FALSE(store.claim_run("shared", 1, 1, "n2", b, 1063.0)) << "a done run is never claimed";
}

TEST_F(StoreTest, RequeueLapsedLeavesLiveOwnersAloneAndTakesOldJobsAttempts) {
  Store store = Store::open(db_path());
  store.register_sweep("A", "a.toml", {run("live", 1000, 10000), run("dead", 1000, 20000), run("old", 1000, 5000)});
  const auto live = *store.acquire_sweep("A", owner("n1", 1), 60, 1000.0).lease_id;
  ASSERT_TRUE(store.claim_run("live", 1, 1, "n1", live, 1000.0));
  // An attempt under a lease that lapsed, and one of an older moesweep (no lease at all).
  store.register_sweep("D", "d.toml", {run("dead", 1000, 20000)});
  const auto dead = *store.acquire_sweep("D", owner("n2", 2), 5, 1000.0).lease_id;
  ASSERT_TRUE(store.claim_run("dead", 1, 1, "n2", dead, 1000.0));
  store.start_attempt("old", 1, 1, "n3");
  EXPECT_EQ(store.requeue_lapsed("lost", 1010.0), 2);
  EXPECT_EQ(store.query("SELECT group_concat(run_key || ':' || state, ' ') FROM (SELECT * FROM runs ORDER BY run_key)")[0][0],
            "dead:pending live:running old:pending");
  EXPECT_TRUE(store.lease(dead)->broken);
  EXPECT_FALSE(store.lease(live)->broken);
}

TEST_F(StoreTest, AClosedAttemptsLateHeartbeatDoesNotMoveItsRun) {
  Store store = Store::open(db_path());
  store.register_sweep("A", "a.toml", {run("r", 1000, 100000)});
  const auto lease = *store.acquire_sweep("A", owner("n1", 1), 5, 1000.0).lease_id;
  const auto stale = *store.claim_run("r", 1, 1, "n1", lease, 1000.0);
  const auto fresh = *store.claim_run("r", 2, 1, "n1",
                                      *store.acquire_sweep("A", owner("n1", 2), 60, 1010.0).lease_id, 1010.0);
  store.record_heartbeats({Heartbeat{fresh, 40, 40000, 3.0, std::nullopt, 100, 1e-3}});
  store.record_heartbeats({Heartbeat{stale, 90, 90000, 2.0, std::nullopt, 100, 1e-3}});
  EXPECT_EQ(store.query("SELECT step, tokens_done FROM runs")[0], (std::vector<std::string>{"40", "40000"}));
}

TEST_F(StoreTest, TwoProcessesCreatingTheSameDatabaseAtOnceBothSucceed) {
  // Two `moesweep run`s started together on a database that does not exist yet: both migrate it.
  for (int trial = 0; trial < 10; ++trial) {
    const std::string path = (dir_ / ("race" + std::to_string(trial) + ".db")).string();
    std::vector<pid_t> children;
    for (int i = 0; i < 2; ++i) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        try {
          Store::open(path);
          std::_Exit(0);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "child: %s\n", e.what());
          std::_Exit(1);
        }
      }
      children.push_back(pid);
    }
    for (const pid_t pid : children) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "trial " << trial;
    }
    EXPECT_EQ(Store::open(path).schema_version(), moesweep::db::latest_schema_version());
  }
}
