// The scheduling policy (scheduler.h) on small hand-built snapshots, rule by rule, and its makespan
// simulation (schedule_simulation.h): what a user would see in `moesweep status` and the log: which run
// starts, on how many ranks, which fails and why.
#include "moesweep/orchestrator/scheduler.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moesweep/input_error.h"
#include "moesweep/orchestrator/schedule_simulation.h"
#include "moesweep/orchestrator/sweep_spec.h"
#include "sweep_files.h"

namespace {

using moesweep::InputError;
using moesweep::orchestrator::load_sweep_file;
using moesweep::orchestrator::RunKind;
using moesweep::orchestrator::Sweep;
using moesweep::orchestrator::testing::kData;
using moesweep::orchestrator::testing::TempFiles;
using namespace moesweep::orchestrator::scheduling;
using Action = Decision::Action;

constexpr double kDay = 86400;

RunFacts independent(const std::string& name, double flops) {
  RunFacts r;
  r.name = name;
  r.flops = flops;
  r.checkpoint_flops = flops / 10;
  return r;
}
RunFacts trunk(const std::string& name, double flops) {
  RunFacts r = independent(name, flops);
  r.kind = RunKind::trunk;
  return r;
}
// A branch that leaves trunk `t` at `step`, where the trunk has trained `at_flops`.
RunFacts branch(const std::string& name, double flops, std::size_t t, std::int64_t step, double at_flops) {
  RunFacts r = independent(name, flops);
  r.kind = RunKind::branch;
  r.trunk = t;
  r.branch_point_step = step;
  r.branch_point_flops = at_flops;
  return r;
}

Snapshot snapshot(const std::vector<RunFacts>& runs, int idle, int workers) {
  Snapshot s;
  s.runs.resize(runs.size());
  s.idle_ranks = idle;
  s.worker_ranks = workers;
  return s;
}

// One rank trains 1 FLOP/s in these tests, so FLOPs read as rank-seconds.
SchedulerOptions unit_options() {
  SchedulerOptions o;
  o.rank_flops = 1;
  return o;
}

TEST(Scheduler, StartsTheTrunkBeforeItsBranchesAndTheBranchesWait) {
  const std::vector<RunFacts> runs = {trunk("trunk", 80), branch("short", 40, 0, 5, 40),
                                      branch("long", 50, 0, 10, 80)};
  const Scheduler scheduler(runs, unit_options());
  Snapshot s = snapshot(runs, 3, 3);
  const Decision first = scheduler.decide(s);
  ASSERT_EQ(first.action, Action::start);
  EXPECT_EQ(first.run, 0u);
  EXPECT_EQ(first.ranks, 1);
  // With the trunk running and no branch point written, both branches wait though two ranks idle.
  s.runs[0].state = RunState::running;
  s.idle_ranks = 2;
  EXPECT_EQ(scheduler.decide(s).action, Action::wait);
  EXPECT_FALSE(scheduler.deadline_blocks_everything(s));
}

TEST(Scheduler, ABranchStartsOnceItsTrunkHasWrittenItsBranchPoint) {
  const std::vector<RunFacts> runs = {trunk("trunk", 80), branch("short", 40, 0, 5, 40),
                                      branch("long", 50, 0, 10, 80)};
  const Scheduler scheduler(runs, unit_options());
  Snapshot s = snapshot(runs, 2, 3);
  s.runs[0].state = RunState::running;
  s.runs[0].branch_points_written = 4;  // not yet step 5
  EXPECT_EQ(scheduler.decide(s).action, Action::wait);
  s.runs[0].branch_points_written = 5;
  Decision d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 1u);  // the short branch; the long one still waits for step 10
  s.runs[1].state = RunState::running;
  s.idle_ranks = 1;
  EXPECT_EQ(scheduler.decide(s).action, Action::wait);
  // The trunk is done, and the caller found the long branch's checkpoint on disk.
  s.runs[0].state = RunState::done;
  s.runs[2].branch_point_found = true;
  d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 2u);
}

TEST(Scheduler, ABranchWhoseTrunkFailedOrDivergedFailsWithTheReason) {
  std::vector<RunFacts> runs = {trunk("0123456789abcdef", 80), branch("b", 40, 0, 7, 40)};
  const Scheduler scheduler(runs, unit_options());
  for (const RunState ended : {RunState::failed, RunState::diverged}) {
    Snapshot s = snapshot(runs, 1, 1);
    s.runs[0].state = ended;
    const Decision d = scheduler.decide(s);
    ASSERT_EQ(d.action, Action::fail);
    EXPECT_EQ(d.run, 1u);
    EXPECT_EQ(d.failure, Decision::Failure::no_trunk_checkpoint);
    const std::string how = ended == RunState::failed ? "failed" : "diverged";
    EXPECT_EQ(d.reason, "its trunk 0123456789ab ended " + how + " without a usable checkpoint at step 7");
  }
  // A branch whose trunk the sweep does not have.
  runs[1].trunk.reset();
  const Scheduler no_trunk(runs, unit_options());
  Snapshot s = snapshot(runs, 1, 1);
  s.runs[0].state = RunState::done;
  const Decision d = no_trunk.decide(s);
  ASSERT_EQ(d.action, Action::fail);
  EXPECT_EQ(d.run, 1u);
  EXPECT_NE(d.reason.find("its trunk is not in the sweep"), std::string::npos) << d.reason;
}

TEST(Scheduler, AMissingBranchPointReopensTheDoneTrunkAtMostMaxAttemptsTimes) {
  const std::vector<RunFacts> runs = {trunk("0123456789abcdef", 80), branch("b", 40, 0, 7, 40)};
  SchedulerOptions options = unit_options();
  options.max_attempts = 2;
  const Scheduler scheduler(runs, options);
  Snapshot s = snapshot(runs, 1, 1);
  s.runs[0].state = RunState::done;  // done, but the checkpoint at step 7 is gone
  int reopened = 0;
  Decision d;
  // What the coordinator does with each answer: reopen (pending again), the trunk trains and ends
  // done without writing the point, again.
  for (int round = 0; round < 5; ++round) {
    d = scheduler.decide(s);
    if (d.action != Action::reopen_trunk) break;
    EXPECT_EQ(d.run, 0u);
    EXPECT_EQ(d.branch, 1u);
    EXPECT_EQ(d.reason, "branch point at step 7 is missing; the trunk trains again to write it");
    ++reopened;
    ++s.runs[0].reopens;
    s.runs[0].state = RunState::queued;
    const Decision trains = scheduler.decide(s);
    ASSERT_EQ(trains.action, Action::start);
    EXPECT_EQ(trains.run, 0u);
    s.runs[0].state = RunState::done;
  }
  EXPECT_EQ(reopened, 2);
  ASSERT_EQ(d.action, Action::fail);
  EXPECT_EQ(d.run, 1u);
  EXPECT_EQ(d.reason,
            "its trunk 0123456789ab ended done without a usable checkpoint at step 7 (reopened 2 times)");
}

TEST(Scheduler, ARunThatCannotReachItsFirstCheckpointBeforeTheDeadlineWaits) {
  // Checkpoints every 10% of the run: 100 s for the big one, 10 s for the small one at 1 FLOP/s.
  const std::vector<RunFacts> runs = {independent("big", 1000), independent("small", 100)};
  const Scheduler scheduler(runs, unit_options());
  Snapshot s = snapshot(runs, 1, 1);
  s.now = 1000;
  s.deadline = 1050;  // the big run's first checkpoint would come at 1100
  Decision d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 1u);
  EXPECT_FALSE(scheduler.deadline_blocks_everything(s));
  s.deadline = 1005;  // neither reaches a checkpoint: the job may end and leave both to the next
  EXPECT_EQ(scheduler.decide(s).action, Action::wait);
  EXPECT_TRUE(scheduler.deadline_blocks_everything(s));
  // A measured throughput replaces the stated one: at 100 FLOP/s the big run checkpoints in 1 s.
  s.measured_rank_flops = 100;
  d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 0u);
  // Without a throughput, the deadline cannot be judged and holds nothing back (as before).
  const Scheduler unknown(runs, SchedulerOptions{});
  s.measured_rank_flops = 0;
  EXPECT_EQ(unknown.decide(s).action, Action::start);
}

TEST(Scheduler, ARunTooBigForOneRanksMemoryGetsTheGangItsMemoryNeeds) {
  // 10 GB replicated + 30 GB of activations, in 20 GB ranks: 10 + 30/k ≤ 20 from k = 3.
  RunFacts big = independent("big", 100);
  big.memory = {10e9, 30e9};
  const std::vector<RunFacts> runs = {big, independent("small", 10)};
  SchedulerOptions options = unit_options();
  options.rank_memory_bytes = 20e9;
  const Scheduler scheduler(runs, options);
  Snapshot s = snapshot(runs, 4, 4);
  Decision d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 0u);
  EXPECT_EQ(d.ranks, 3);
  // Two idle ranks are too few for it; the small run takes one meanwhile.
  s.idle_ranks = 2;
  d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 1u);
  EXPECT_EQ(d.ranks, 1);
  // Its plan: three ranks at least and at most (nothing widens it for time); none in a job of two
  // workers; one rank when rank_memory is not stated.
  EXPECT_EQ(scheduler.plan(0, s).ranks, 3);
  EXPECT_EQ(scheduler.plan(0, s).min_ranks, 3);
  EXPECT_EQ(scheduler.plan(0, snapshot(runs, 2, 2)).ranks, 0);
  EXPECT_EQ(Scheduler(runs, unit_options()).plan(0, s).ranks, 1);
}

TEST(Scheduler, ARunTooLongForTheWallClockOnOneRankGetsTheSmallestGangThatFinishes) {
  // 10 days of one rank, in 2-day allocations: 5 ranks finish it in one.
  RunFacts run = independent("long", 10 * kDay);
  SchedulerOptions options = unit_options();
  options.wall_clock_s = 2 * kDay;
  {
    const Scheduler scheduler({run}, options);
    const Decision d = scheduler.decide(snapshot({run}, 8, 8));
    ASSERT_EQ(d.action, Action::start);
    EXPECT_EQ(d.ranks, 5);
    EXPECT_EQ(d.note, "");  // it finishes within the allocation
    EXPECT_FALSE(scheduler.plan(0, snapshot({run}, 8, 8)).across_jobs);
  }
  {  // Its batches make only 4 routing groups: 4 ranks, 2.5 days, across two jobs, not failed.
    run.max_gang = 4;
    const Scheduler scheduler({run}, options);
    const Decision d = scheduler.decide(snapshot({run}, 8, 8));
    ASSERT_EQ(d.action, Action::start);
    EXPECT_EQ(d.ranks, 4);
    EXPECT_NE(d.note.find("needs 2.5 days on 4 rank(s), the most it can use"), std::string::npos) << d.note;
    EXPECT_NE(d.note.find("continues across requeued jobs"), std::string::npos) << d.note;
  }
  {  // A job of 3 worker ranks: 3.
    const Scheduler scheduler({run}, options);
    EXPECT_EQ(scheduler.decide(snapshot({run}, 3, 3)).ranks, 3);
  }
  {  // A run that fits the wall clock stays on one rank; without a wall clock every run does.
    const RunFacts short_run = independent("short", kDay);
    EXPECT_EQ(Scheduler({short_run}, options).decide(snapshot({short_run}, 8, 8)).ranks, 1);
    EXPECT_EQ(Scheduler({run}, unit_options()).decide(snapshot({run}, 8, 8)).ranks, 1);
  }
  {  // The gang is by the whole run: resumed with a day left, it keeps its 4 ranks.
    const Scheduler scheduler({run}, options);
    Snapshot s = snapshot({run}, 8, 8);
    s.runs[0].flops_done = 9 * kDay;
    EXPECT_EQ(scheduler.decide(s).ranks, 4);
  }
}

TEST(Scheduler, RanksThatWouldIdleTakeATimeWidenedRunNarrowerOnlyOffTheCriticalPath) {
  // Three workers, two busy; what is queued wants two ranks each for the 2-day wall clock.
  const std::vector<RunFacts> runs = {independent("a", 3 * kDay), independent("b", 3 * kDay),
                                      independent("running", 30 * kDay)};
  SchedulerOptions options = unit_options();
  options.wall_clock_s = 2 * kDay;
  const Scheduler scheduler(runs, options);
  Snapshot s = snapshot(runs, 1, 3);
  s.runs[2].state = RunState::running;
  // The remaining work (36 rank-days over 3 ranks, 12 days) outlasts "a" on one rank (3 days).
  Decision d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 0u);
  EXPECT_EQ(d.ranks, 1);
  EXPECT_NE(d.note.find("starts on 1 of the 2 ranks its time asks for"), std::string::npos) << d.note;
  // When the queued run is the critical path (nothing else is left), it waits for its two ranks.
  s.runs[2].state = RunState::done;
  s.runs[1].state = RunState::running;
  s.runs[1].flops_done = 3 * kDay - 100;
  EXPECT_EQ(scheduler.decide(s).action, Action::wait);
}

TEST(Scheduler, ARunNoGangCanTrainFailsWithTheReason) {
  SchedulerOptions options = unit_options();
  options.rank_memory_bytes = 20e9;
  {  // Parameters and optimizer state alone exceed a rank.
    RunFacts run = independent("huge", 100);
    run.memory = {25e9, 1e9};
    const Decision d =
        Scheduler({run}, options).decide(snapshot({run}, 0, 8));  // failed even with no rank idle
    ASSERT_EQ(d.action, Action::fail);
    EXPECT_EQ(d.failure, Decision::Failure::unschedulable);
    EXPECT_EQ(d.reason,
              "needs 25 GB of parameters and optimizer state per rank; [resources] rank_memory is 20 GB");
  }
  {  // Its memory needs 3 ranks, its smallest batch makes 2 routing groups.
    RunFacts run = independent("wide", 100);
    run.memory = {10e9, 30e9};
    run.max_gang = 2;
    Decision d = Scheduler({run}, options).decide(snapshot({run}, 8, 8));
    ASSERT_EQ(d.action, Action::fail);
    EXPECT_EQ(d.reason,
              "[resources] rank_memory needs a gang of 3 ranks, but its smallest batch makes only 2 routing "
              "group(s) and each rank takes whole groups");
    run.gang_problem =
        "the smallest batch, 128 sequences, makes 2 routing group(s) of 64 ...";  // run_facts' text
    d = Scheduler({run}, options).decide(snapshot({run}, 8, 8));
    EXPECT_EQ(d.reason, "[resources] rank_memory needs a gang of 3 ranks, but " + run.gang_problem);
  }
  {  // More ranks than the job has.
    RunFacts run = independent("wide", 100);
    run.memory = {10e9, 30e9};
    const Decision d = Scheduler({run}, options).decide(snapshot({run}, 2, 2));
    ASSERT_EQ(d.action, Action::fail);
    EXPECT_EQ(d.reason, "[resources] rank_memory needs a gang of 3 ranks; this job has 2 worker rank(s)");
  }
}

TEST(Scheduler, ARunAnotherCoordinatorHoldsIsPassedOverAndItsBranchesWait) {
  // The trunk is the critical path, but another coordinator holds it (a run shared with its sweep).
  RunFacts held = trunk("trunk", 80);
  const std::vector<RunFacts> runs = {held, branch("branch", 40, 0, 5, 40), independent("other", 10)};
  const Scheduler scheduler(runs, unit_options());
  Snapshot s = snapshot(runs, 2, 2);
  s.runs[0].held_elsewhere = true;
  Decision d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 2u);
  // The rest waits: the branch on its trunk, still queued here, and the trunk on its holder.
  s.runs[2].state = RunState::running;
  s.idle_ranks = 1;
  EXPECT_EQ(scheduler.decide(s).action, Action::wait);
  EXPECT_FALSE(scheduler.deadline_blocks_everything(s));
  // Let go (its holder was preempted, or its lease lapsed): it starts here.
  s.runs[0].held_elsewhere = false;
  d = scheduler.decide(s);
  ASSERT_EQ(d.action, Action::start);
  EXPECT_EQ(d.run, 0u);
}

TEST(Scheduler, ARunAnotherCoordinatorHoldsIsNotFailedHere) {
  RunFacts run = independent("huge", 100);
  run.memory = {25e9, 1e9};  // more than a 20 GB rank holds: this job would fail it
  SchedulerOptions options = unit_options();
  options.rank_memory_bytes = 20e9;
  const Scheduler scheduler({run}, options);
  Snapshot s = snapshot({run}, 1, 1);
  s.runs[0].held_elsewhere = true;
  EXPECT_EQ(scheduler.decide(s).action, Action::wait);
  s.runs[0].held_elsewhere = false;
  EXPECT_EQ(scheduler.decide(s).action, Action::fail);
}

// Two chains on two ranks. Chain A: a trunk whose memory needs both ranks (2 s on them), then a 10 s
// branch. Chain B: a 5 s trunk, then a 1 s branch. "Most work first" starts B's bigger trunk, so A's
// trunk waits for two free ranks until 5 s and its long branch ends at 17 s; the critical path (A: 12 s,
// B: 6 s) starts A first and ends at 12 s, the lower bound.
std::vector<RunFacts> two_chains() {
  RunFacts trunk_a = trunk("trunk-a", 4);
  trunk_a.memory = {10e9, 20e9};  // 10 + 20/k ≤ 20 GB from k = 2
  return {trunk_a, branch("branch-a", 10, 0, 1, 4), trunk("trunk-b", 5), branch("branch-b", 1, 2, 1, 5)};
}

TEST(Scheduler, CriticalPathOrderBeatsMostWorkFirstOnTwoChains) {
  SchedulerOptions options = unit_options();
  options.rank_memory_bytes = 20e9;
  const Scheduler critical(two_chains(), options);
  options.order = Order::most_work;
  const Scheduler most_work(two_chains(), options);

  // The first decision already differs.
  const Snapshot start = snapshot(two_chains(), 2, 2);
  EXPECT_EQ(critical.queue_order(start), (std::vector<std::size_t>{0, 1, 2, 3}));
  EXPECT_EQ(most_work.queue_order(start), (std::vector<std::size_t>{2, 0, 1, 3}));  // trunks first
  EXPECT_DOUBLE_EQ(critical.critical_path(0, start), 12);
  EXPECT_DOUBLE_EQ(critical.critical_path(2, start), 6);
  EXPECT_EQ(critical.decide(start).run, 0u);
  EXPECT_EQ(critical.decide(start).ranks, 2);
  EXPECT_EQ(most_work.decide(start).run, 2u);

  const SimulationResult fast = simulate(critical, {2});
  const SimulationResult slow = simulate(most_work, {2});
  EXPECT_DOUBLE_EQ(fast.makespan_s, 12);
  EXPECT_DOUBLE_EQ(slow.makespan_s, 17);
  EXPECT_EQ(fast.runs_done, 4);
  EXPECT_EQ(slow.runs_done, 4);
  const MakespanBound bound = makespan_lower_bound(critical, 2);
  EXPECT_DOUBLE_EQ(bound.chain_s, 12);  // trunk A (2 s on its two ranks) + branch A
  EXPECT_DOUBLE_EQ(bound.work_s, 10);   // (2·2 + 10 + 5 + 1) rank-seconds over 2 ranks
}

TEST(Simulation, JobsEndAtTheWallClockAndRunsResumeWhereTheyStopped) {
  // One rank, a 5-day run in 2-day jobs on a rank that cannot widen it (max_gang 1): three jobs.
  RunFacts run = independent("long", 5 * kDay);
  run.max_gang = 1;
  run.checkpoint_flops = 0.1 * kDay;
  SchedulerOptions options = unit_options();
  options.wall_clock_s = 2 * kDay;
  const SimulationResult r = simulate(Scheduler({run}, options), {1, 2 * kDay, 3600});
  EXPECT_EQ(r.jobs, 3);
  EXPECT_EQ(r.runs_done, 1);
  ASSERT_EQ(r.attempts.size(), 3u);
  EXPECT_FALSE(r.attempts[0].finished);
  EXPECT_TRUE(r.attempts[2].finished);
  EXPECT_DOUBLE_EQ(r.makespan_s, 5 * kDay + 2 * 3600);  // the work plus two requeue waits
  EXPECT_FALSE(r.stuck);
}

TEST(Simulation, ARunNoRankCanHoldFailsAndTheRestFinish) {
  RunFacts huge = independent("huge", 100);
  huge.memory = {30e9, 0};
  SchedulerOptions options = unit_options();
  options.rank_memory_bytes = 20e9;
  const SimulationResult r = simulate(Scheduler({huge, independent("fine", 10)}, options), {2});
  EXPECT_EQ(r.runs_done, 1);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_NE(r.failures[0].find("huge: needs 30 GB"), std::string::npos) << r.failures[0];
}

// The figure: the simulated paper grid, with trunk → branch chains and gangs sized for 48-hour
// jobs at the simulate backend's nominal 4e14 FLOP/s, within 5% of its lower bound at 32 and 128 ranks
// (simulated time: a property of the policy, not of this machine), and well ahead of the old order.
TEST(Simulation, ThePaperGridIsWithinFivePercentOfItsLowerBound) {
  const Sweep sweep = load_sweep_file(MOESWEEP_SOURCE_DIR "/sweeps/paper.toml");
  SchedulerOptions options = scheduler_options(sweep.resources);
  options.rank_flops = 4e14;
  options.wall_clock_s = 48 * 3600;
  const Scheduler scheduler(run_facts(sweep), options);
  options.order = Order::most_work;
  options.gangs_by_time = false;
  const Scheduler before(run_facts(sweep), options);
  for (const int ranks : {32, 128}) {
    const SimulationResult r = simulate(scheduler, {ranks - 1, 48 * 3600});
    const MakespanBound bound = makespan_lower_bound(scheduler, ranks - 1);
    EXPECT_EQ(r.runs_done, static_cast<int>(sweep.runs.size())) << ranks;
    EXPECT_TRUE(r.failures.empty()) << ranks;
    EXPECT_LE(r.makespan_s, 1.05 * bound.bound_s()) << ranks << " ranks";
    EXPECT_LT(r.makespan_s, 0.6 * simulate(before, {ranks - 1, 48 * 3600}).makespan_s) << ranks;
  }
}

class ResourcesSection : public TempFiles {
 protected:
  Sweep sweep_with(const std::string& resources) {
    return load_sweep_file(
        write("s.toml", std::string(kData) + "[train]\ntokens = 1000000\n[resources]\n" + resources));
  }
};

TEST_F(ResourcesSection, WallClockAndRankFlopsAreRead) {
  const Sweep s = sweep_with("wall_clock = \"2-00:00:00\"\nrank_flops = 4e14\nrank_memory = \"80GB\"\n");
  EXPECT_DOUBLE_EQ(s.resources.wall_clock_s, 2 * kDay);
  EXPECT_DOUBLE_EQ(s.resources.rank_flops, 4e14);
  const SchedulerOptions o = scheduler_options(s.resources);
  EXPECT_DOUBLE_EQ(o.wall_clock_s, 2 * kDay);
  EXPECT_DOUBLE_EQ(o.rank_flops, 4e14);
  EXPECT_DOUBLE_EQ(o.rank_memory_bytes, 80e9);
  EXPECT_EQ(sweep_with("wall_clock = \"48:00:00\"\n").resources.wall_clock_s, 48 * 3600);
  // Unstated: gangs by memory alone, as before.
  EXPECT_EQ(sweep_with("max_attempts = 2\n").resources.wall_clock_s, 0);
  EXPECT_EQ(sweep_with("max_attempts = 2\n").resources.rank_flops, 0);
}

TEST_F(ResourcesSection, BadValuesNameTheFileTheLineAndTheKey) {
  auto message = [&](const std::string& resources) {
    try {
      sweep_with(resources);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const std::string file = (dir_ / "s.toml").string();
  EXPECT_EQ(
      message("wall_clock = \"two days\"\n"),
      file +
          ":7: resources.wall_clock: 'two days' is not a Slurm time limit (M, M:S, H:M:S, D-H, D-H:M or "
          "D-H:M:S; e.g. \"48:00:00\")");
  EXPECT_EQ(message("wall_clock = 48\n"),
            file + ":7: resources.wall_clock: expected a string, got an integer");
  EXPECT_EQ(message("wall_clock = \"0:00:00\"\n").find(file + ":7: resources.wall_clock: '0:00:00'"), 0u);
  EXPECT_EQ(message("rank_flops = -4e14\n"),
            file + ":7: resources.rank_flops: must be greater than 0, got -4e+14");
  EXPECT_EQ(message("rank_flops = \"fast\"\n"),
            file + ":7: resources.rank_flops: expected a number, got a string");
}

// run_facts: what the coordinator hands the scheduler for an expanded sweep.
TEST_F(ResourcesSection, RunFactsOfABranchedSweep) {
  const Sweep s = load_sweep_file(
      write("b.toml",
            std::string(kData) +
                "[model]\nseq_len = 64\nrouting_group = 4\n[train]\nbatch_tokens = 1024\nlr = 0.003\n"
                "warmup_tokens = 1024\ncheckpoint_every_tokens = 4096\n"
                "[[grid]]\nbranching = \"cooldown\"\nshape = [{d_model = 32, n_layers = 2, n_heads = 2}]\n"
                "experts = [1]\ntokens = [16384, 32768]\n"));
  const std::vector<RunFacts> facts = run_facts(s);
  ASSERT_EQ(facts.size(), s.runs.size());
  int branches = 0;
  for (std::size_t i = 0; i < facts.size(); ++i) {
    const auto& run = s.runs[i];
    EXPECT_EQ(facts[i].name, run.run_key);
    EXPECT_DOUBLE_EQ(facts[i].flops, run.trained_flops);
    EXPECT_DOUBLE_EQ(facts[i].checkpoint_flops, 6.0 * static_cast<double>(run.n_act) * 4096);
    EXPECT_EQ(facts[i].max_gang, 4);  // 16 sequences a batch in routing groups of 4
    EXPECT_GT(facts[i].memory.replicated_bytes, 0);
    if (run.kind != RunKind::branch) continue;
    ++branches;
    ASSERT_TRUE(facts[i].trunk.has_value());
    EXPECT_EQ(s.runs[*facts[i].trunk].run_key, run.trunk_key);
    EXPECT_EQ(facts[i].branch_point_step, run.branch_point.step);
    EXPECT_DOUBLE_EQ(facts[i].branch_point_flops,
                     6.0 * static_cast<double>(run.n_act) * run.branch_point.tokens);
  }
  EXPECT_EQ(branches, 2);
}

TEST(Scheduler, RunStateReadsTheStoresStates) {
  EXPECT_EQ(run_state("pending"), RunState::queued);
  EXPECT_EQ(run_state("preempted"), RunState::queued);
  EXPECT_EQ(run_state("running"), RunState::running);
  EXPECT_EQ(run_state("done"), RunState::done);
  EXPECT_EQ(run_state("failed"), RunState::failed);
  EXPECT_EQ(run_state("diverged"), RunState::diverged);
  EXPECT_THROW(run_state("lost"), std::invalid_argument);
}

}  // namespace
