#include "moesweep/analysis/runs.h"
#include "moesweep/db/store.h"
#include "moesweep/input_error.h"

namespace moesweep::analysis {

std::vector<Run> read_runs_db(const std::string& path, const std::optional<std::string>& sweep) {
  const db::Store store = db::Store::open(path, db::Store::Mode::ReadOnly);
  if (sweep && !store.sweep(*sweep))
    throw InputError::at(path, 0, "--sweep", "no sweep named '" + *sweep + "'");
  std::vector<Run> runs;
  for (const db::FinishedRun& run : store.finished_runs(sweep)) {
    if (run.n_act <= 0 || run.tokens <= 0 || run.experts < 1 || !(run.final_loss > 0))
      throw InputError::at(path, 0, run.run_key,
                           "finished run has a non-positive n_act, tokens, experts or loss");
    runs.push_back(Run{static_cast<double>(run.n_act), static_cast<double>(run.tokens),
                       static_cast<double>(run.experts), run.final_loss, run.run_key});
  }
  if (runs.empty()) throw InputError::at(path, 0, sweep ? "--sweep" : "", "no finished runs to fit");
  return runs;
}

}  // namespace moesweep::analysis
