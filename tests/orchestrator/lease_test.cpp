// The lease policy (lease.h): who may take a sweep that another coordinator holds, and what a refusal says.
#include "moesweep/orchestrator/lease.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace moesweep::orchestrator {
namespace {

using Action = LeaseDecision::Action;

db::Lease held_by(const std::string& host, long long pid, double expires_at, const std::string& job = "",
                  long long restart = 0) {
  db::Lease l;
  l.id = 7;
  l.owner.host = host;
  l.owner.pid = pid;
  l.owner.slurm_job_id = job;
  l.owner.slurm_restart = restart;
  l.expires_at = expires_at;
  return l;
}

db::LeaseOwner me(const std::string& job = "", long long restart = 0) {
  db::LeaseOwner o;
  o.host = "login1";
  o.pid = 99;
  o.slurm_job_id = job;
  o.slurm_restart = restart;
  return o;
}

TEST(Lease, AFreeOrLapsedSweepIsTakenAndALapseIsSaid) {
  EXPECT_EQ(decide_lease("s", std::nullopt, me(), {}, 100, false).action, Action::acquire);
  const auto lapsed = decide_lease("s", held_by("gpu3", 5, 90), me(), {}, 100, false);
  EXPECT_EQ(lapsed.action, Action::acquire);
  EXPECT_NE(lapsed.message.find("lapsed 10 s ago"), std::string::npos) << lapsed.message;
}

TEST(Lease, ALiveOwnerIsRefusedWithOneLineNamingItAndHowToTakeOver) {
  const auto d = decide_lease("paper", held_by("gpu3", 4242, 160, "881"), me(), {}, 100, false);
  EXPECT_EQ(d.action, Action::refuse);
  for (const char* part : {"sweep 'paper'", "host gpu3", "pid 4242", "Slurm job 881", "60 more s", "--take-over"})
    EXPECT_NE(d.message.find(part), std::string::npos) << part << " missing from: " << d.message;
  EXPECT_EQ(d.message.find('\n'), std::string::npos);
}

TEST(Lease, TakeOverWaitsForTheLapseOfALiveOwner) {
  const auto d = decide_lease("s", held_by("gpu3", 4242, 160), me(), {}, 100, true);
  EXPECT_EQ(d.action, Action::wait);
  EXPECT_DOUBLE_EQ(d.wait_until, 160);
}

TEST(Lease, AnOwnerProvablyGoneIsTakenOverAtOnce) {
  // On this host with its process gone.
  HolderFacts gone{true, true};
  EXPECT_EQ(decide_lease("s", held_by("login1", 5, 160), me(), gone, 100, false).action, Action::take_over);
  // On this host and alive: not gone.
  HolderFacts alive{true, false};
  EXPECT_EQ(decide_lease("s", held_by("login1", 5, 160), me(), alive, 100, false).action, Action::refuse);
  // An earlier run of this requeued Slurm job, on any host.
  EXPECT_EQ(decide_lease("s", held_by("gpu3", 5, 160, "881", 0), me("881", 1), {}, 100, false).action,
            Action::take_over);
  // The same run of the job (two coordinators in one allocation), or another job: alive as far as we know.
  EXPECT_EQ(decide_lease("s", held_by("gpu3", 5, 160, "881", 1), me("881", 1), {}, 100, false).action,
            Action::refuse);
  EXPECT_EQ(decide_lease("s", held_by("gpu3", 5, 160, "880", 0), me("881", 1), {}, 100, false).action,
            Action::refuse);
}

TEST(Lease, ProcessAliveTellsAReusedPidFromTheOwner) {
  const db::LeaseOwner self = this_process_owner();
  EXPECT_EQ(self.pid, static_cast<long long>(::getpid()));
  ASSERT_GT(self.pid_start, 0);
  EXPECT_TRUE(process_alive(self.pid, self.pid_start));
  EXPECT_FALSE(process_alive(self.pid, self.pid_start + 1)) << "same pid, another start time: another process";
  EXPECT_FALSE(process_alive(0x3fffffff, 0));
}

}  // namespace
}  // namespace moesweep::orchestrator
