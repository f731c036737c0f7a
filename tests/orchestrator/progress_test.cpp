// The numbers `moesweep status` prints: compute progress and ETA from measured throughput.
#include "moesweep/orchestrator/progress.h"

#include <gtest/gtest.h>

namespace {

moesweep::db::StatusRow row(const std::string& state, std::int64_t n_act, std::int64_t tokens,
                            double progress, std::optional<double> tokens_per_s = std::nullopt) {
  moesweep::db::StatusRow r;
  r.state = state;
  r.n_act = n_act;
  r.tokens = tokens;
  r.progress = progress;
  r.tokens_per_s = tokens_per_s;
  r.flops = 6.0 * static_cast<double>(n_act) * static_cast<double>(tokens);
  return r;
}

TEST(Progress, CountsComputeNotRuns) {
  // One big run half done, three small runs done: by run count 75% is done, by compute far less.
  const auto p = moesweep::orchestrator::summarize({row("running", 1000, 1'000'000, 0.5, 100.0),
                                                    row("done", 10, 1000, 1.0), row("done", 10, 1000, 1.0),
                                                    row("done", 10, 1000, 1.0)});
  EXPECT_EQ(p.runs, 4);
  EXPECT_EQ(p.runs_by_state.at("done"), 3);
  EXPECT_DOUBLE_EQ(p.flops_total, 6.0 * 1000 * 1e6 + 3 * 6.0 * 10 * 1000);
  EXPECT_DOUBLE_EQ(p.flops_done, 6.0 * 1000 * 0.5e6 + 3 * 6.0 * 10 * 1000);
  // ETA: the remaining half of the big run at its measured 100 tokens/s.
  ASSERT_TRUE(p.eta_seconds.has_value());
  EXPECT_DOUBLE_EQ(*p.eta_seconds, 0.5e6 / 100.0);
}

TEST(Progress, NoEtaWithNothingRunningAndFailuresAreNotRemainingWork) {
  const auto idle = moesweep::orchestrator::summarize({row("pending", 100, 1000, 0.0)});
  EXPECT_FALSE(idle.eta_seconds.has_value());
  const auto p = moesweep::orchestrator::summarize({row("running", 100, 1000, 0.0, 10.0),
                                                    row("failed", 100, 1'000'000, 0.1),
                                                    row("diverged", 100, 1'000'000, 0.0)});
  EXPECT_DOUBLE_EQ(*p.eta_seconds, 1000 / 10.0);
}

// `moesweep status` reads totals per (state, kind) and the running runs' rows instead of every row: the
// same figures.
TEST(Progress, FromTotalsAndRunningRowsAsFromEveryRow) {
  const std::vector<moesweep::db::StatusRow> rows = {row("running", 1000, 1'000'000, 0.5, 100.0),
                                                     row("running", 50, 20'000, 0.25),  // no rate yet
                                                     row("done", 10, 1000, 1.0),
                                                     row("preempted", 100, 10'000, 0.3),
                                                     row("pending", 100, 10'000, 0.0),
                                                     row("failed", 100, 1'000'000, 0.1)};
  std::vector<moesweep::db::StatusTotals> totals;
  std::vector<moesweep::db::StatusRow> running;
  for (const auto& r : rows) {
    totals.push_back({r.state, "run", 1, r.flops, r.flops * r.progress});
    if (r.state == "running") running.push_back(r);
  }
  const auto all = moesweep::orchestrator::summarize(rows);
  const auto folded = moesweep::orchestrator::summarize(totals, running);
  EXPECT_EQ(folded.runs, all.runs);
  EXPECT_EQ(folded.runs_by_state, all.runs_by_state);
  EXPECT_DOUBLE_EQ(folded.flops_total, all.flops_total);
  EXPECT_DOUBLE_EQ(folded.flops_done, all.flops_done);
  EXPECT_DOUBLE_EQ(folded.flops_per_s, all.flops_per_s);
  ASSERT_TRUE(folded.eta_seconds.has_value());
  EXPECT_DOUBLE_EQ(*folded.eta_seconds, *all.eta_seconds);
}

}  // namespace
