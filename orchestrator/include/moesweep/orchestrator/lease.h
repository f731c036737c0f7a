#pragma once
// One owner per sweep: what a coordinator does when the sweep it is asked to run already has a lease.
// Pure policy over the store's lease row and facts about this process; `moesweep run` applies it.
//
// A lease is valid until it lapses (its holder renews it every few seconds; `--lease` sets how long it
// lasts unrenewed) or is broken. Its holder is provably gone, and the sweep is taken over at once, when
//   - it ran on this host and its process is gone (no such pid, or a pid reused by a process that
//     started at another time), or
//   - it was an earlier run of this same Slurm job (a requeued job keeps its id and counts
//     SLURM_RESTART_COUNT up; Slurm never runs two of them at once).
// Otherwise a valid lease is refused (exit 2, one line naming the holder and how to take over), unless
// --take-over was given, which waits for the lease to lapse and then takes the sweep.
#include <optional>
#include <string>

#include "moesweep/db/store.h"

namespace moesweep::orchestrator {

struct LeaseDecision {
  enum class Action {
    acquire,    // no valid lease: take the sweep (breaking a lapsed one)
    take_over,  // a valid lease whose holder is provably gone: break it now
    wait,       // --take-over: wait until wait_until (the lease's expiry), then decide again
    refuse,     // a live holder: exit 2 with `message`
  };
  Action action = Action::acquire;
  double wait_until = 0;  // wait: unix seconds
  std::string message;    // refuse: the one line; take_over/acquire over an earlier lease: why
};

// Facts about the lease's holder that only this host can tell (the caller looks them up).
struct HolderFacts {
  bool on_this_host = false;
  bool process_gone = false;  // on this host: no process with its pid and start time
};

LeaseDecision decide_lease(const std::string& sweep_name, const std::optional<db::Lease>& held,
                           const db::LeaseOwner& me, const HolderFacts& facts, double now, bool take_over);

// The owner facts of this process: host name, pid, pid start time, SLURM_JOB_ID, SLURM_RESTART_COUNT.
db::LeaseOwner this_process_owner();
// Whether process `pid` that started at `pid_start` (clock ticks after boot) still runs on this host.
bool process_alive(long long pid, long long pid_start);

}  // namespace moesweep::orchestrator
