#include "moesweep/orchestrator/progress.h"

#include <algorithm>

namespace moesweep::orchestrator {

SweepProgress summarize(const std::vector<db::StatusRow>& rows) {
  SweepProgress p;
  for (const db::StatusRow& r : rows) {
    ++p.runs_by_state[r.state];
    ++p.runs;
    p.flops_total += r.flops;
    p.flops_done += r.flops * std::clamp(r.progress, 0.0, 1.0);
    if (r.state == "running" && r.tokens_per_s)
      p.flops_per_s += 6.0 * static_cast<double>(r.n_act) * *r.tokens_per_s;
  }
  // Failed and diverged runs will not be trained further; their remaining work is not "to do".
  double remaining = 0;
  for (const db::StatusRow& r : rows)
    if (r.state == "pending" || r.state == "running" || r.state == "preempted")
      remaining += r.flops * (1.0 - std::clamp(r.progress, 0.0, 1.0));
  if (p.flops_per_s > 0) p.eta_seconds = remaining / p.flops_per_s;
  return p;
}

SweepProgress summarize(const std::vector<db::StatusTotals>& totals,
                        const std::vector<db::StatusRow>& running) {
  SweepProgress p;
  double remaining = 0;
  for (const db::StatusTotals& t : totals) {
    p.runs_by_state[t.state] += t.runs;
    p.runs += t.runs;
    p.flops_total += t.flops;
    p.flops_done += t.flops_done;
    if (t.state == "pending" || t.state == "running" || t.state == "preempted")
      remaining += t.flops - t.flops_done;
  }
  for (const db::StatusRow& r : running)
    if (r.state == "running" && r.tokens_per_s)
      p.flops_per_s += 6.0 * static_cast<double>(r.n_act) * *r.tokens_per_s;
  if (p.flops_per_s > 0) p.eta_seconds = remaining / p.flops_per_s;
  return p;
}

}  // namespace moesweep::orchestrator
