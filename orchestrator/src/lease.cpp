#include "moesweep/orchestrator/lease.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace moesweep::orchestrator {
namespace {

std::string describe(const db::Lease& lease) {
  std::string who = "the coordinator on host " + lease.owner.host + " (pid " + std::to_string(lease.owner.pid);
  if (!lease.owner.slurm_job_id.empty()) who += ", Slurm job " + lease.owner.slurm_job_id;
  return who + ")";
}

// Field 22 of /proc/PID/stat: the process's start time in clock ticks after boot. 0 when unreadable.
long long start_time_of(long long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i)
    if (i == 22) return std::atoll(field.c_str());
  return 0;
}

}  // namespace

LeaseDecision decide_lease(const std::string& sweep_name, const std::optional<db::Lease>& held,
                           const db::LeaseOwner& me, const HolderFacts& facts, double now, bool take_over) {
  LeaseDecision d;
  if (!held || held->broken) return d;
  if (held->expires_at <= now) {
    d.message = "the lease of " + describe(*held) + " lapsed " +
                std::to_string(static_cast<long long>(std::ceil(now - held->expires_at))) + " s ago";
    return d;
  }
  if (facts.on_this_host && facts.process_gone) {
    d.action = LeaseDecision::Action::take_over;
    d.message = describe(*held) + " is gone from this host";
    return d;
  }
  if (!me.slurm_job_id.empty() && held->owner.slurm_job_id == me.slurm_job_id &&
      held->owner.slurm_restart < me.slurm_restart) {
    d.action = LeaseDecision::Action::take_over;
    d.message = describe(*held) + " was run " + std::to_string(held->owner.slurm_restart) +
                " of this requeued Slurm job";
    return d;
  }
  const long long left = static_cast<long long>(std::ceil(held->expires_at - now));
  if (take_over) {
    d.action = LeaseDecision::Action::wait;
    d.wait_until = held->expires_at;
    d.message = "sweep '" + sweep_name + "' is owned by " + describe(*held) + "; --take-over: waiting " +
                std::to_string(left) + " s for its lease to lapse";
    return d;
  }
  d.action = LeaseDecision::Action::refuse;
  d.message = "sweep '" + sweep_name + "' is owned by " + describe(*held) + ", whose lease holds for " +
              std::to_string(left) + " more s while it renews it; stop that job, or run again with --take-over " +
              "to take the sweep over once its lease lapses";
  return d;
}

bool process_alive(long long pid, long long pid_start) {
  if (pid <= 0) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  const long long started = start_time_of(pid);
  return pid_start == 0 || started == 0 || started == pid_start;
}

db::LeaseOwner this_process_owner() {
  db::LeaseOwner o;
  char name[256] = {0};
  gethostname(name, sizeof name - 1);
  o.host = name;
  o.pid = static_cast<long long>(getpid());
  o.pid_start = start_time_of(o.pid);
  if (const char* job = std::getenv("SLURM_JOB_ID")) o.slurm_job_id = job;
  if (const char* restart = std::getenv("SLURM_RESTART_COUNT")) o.slurm_restart = std::atoll(restart);
  return o;
}

}  // namespace moesweep::orchestrator
