#pragma once
// "How far along is it": counts per state, progress by compute, and an ETA from measured throughput.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moesweep/db/store.h"

namespace moesweep::orchestrator {

struct SweepProgress {
  std::map<std::string, std::int64_t> runs_by_state;  // every state present, with its count
  std::int64_t runs = 0;
  double flops_done = 0;  // done runs in full, running ones up to their last heartbeat
  double flops_total = 0;
  double flops_per_s = 0;             // Σ over running runs of 6·N_act·tokens/s
  std::optional<double> eta_seconds;  // remaining FLOPs / flops_per_s, when anything is running
};

SweepProgress summarize(const std::vector<db::StatusRow>& rows);
// The same from the store's totals per (state, kind) and the rows of the running runs (their measured
// throughput), without every run's row; equal up to the order of the floating-point sums.
SweepProgress summarize(const std::vector<db::StatusTotals>& totals,
                        const std::vector<db::StatusRow>& running);

}  // namespace moesweep::orchestrator
