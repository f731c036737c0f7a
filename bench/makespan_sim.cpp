// Makespan of a sweep under the scheduler, by discrete-event simulation (simulated time, so instant):
// the paper grid with its trunk → branch chains and gangs, against the lower bound
// max(longest chain at its gangs, Σ gang·time / worker ranks). Prints figures; never pass/fail.
//   makespan_sim [SWEEP.toml] [--ranks 32,128] [--rank-flops 4e14] [--wall-clock 48:00:00]
//                [--requeue-wait SECONDS] [--policy both|critical-path|most-work]
// The sweep's [resources] apply (rank_memory, max_attempts; wall_clock and rank_flops unless given
// here); without them the rank sustains the simulate backend's nominal 4e14 FLOP/s (an H100 at about
// 40% of its bf16 peak) and jobs last 48 hours.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "moesweep/input_error.h"
#include "moesweep/orchestrator/schedule_simulation.h"
#include "moesweep/orchestrator/scheduler.h"
#include "moesweep/orchestrator/slurm_submit.h"
#include "moesweep/orchestrator/sweep_spec.h"

namespace {

using namespace moesweep::orchestrator;
using namespace moesweep::orchestrator::scheduling;

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

constexpr double kDay = 86400;

void print_row(const char* policy, int ranks, const Scheduler& scheduler, double requeue_wait) {
  const int workers = ranks - 1;  // rank 0 coordinates
  const auto start = std::chrono::steady_clock::now();
  const SimulationResult sim = simulate(scheduler, {workers, scheduler.options().wall_clock_s, requeue_wait});
  const double cpu_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const MakespanBound bound = makespan_lower_bound(scheduler, workers);
  std::printf("%-14s %6d %13.2f %10.2f %10.2f %10.2f %7.3f %5d %6.1f%% %8.0f%s\n", policy, ranks,
              sim.makespan_s / kDay, bound.chain_s / kDay, bound.work_s / kDay, bound.bound_s() / kDay,
              sim.makespan_s / bound.bound_s(), sim.jobs, 100 * sim.busy_rank_s / (workers * sim.makespan_s),
              cpu_ms, sim.stuck ? "  STUCK: runs left queued" : "");
  for (const std::string& f : sim.failures) std::printf("    failed %s\n", f.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Makespan of a sweep under the scheduler, by discrete-event simulation"};
  std::string sweep_path = MOESWEEP_SOURCE_DIR "/sweeps/paper.toml";
  std::vector<int> ranks_list{32, 128};
  double rank_flops = 0;
  std::string wall_clock;
  double requeue_wait = 0;
  std::string policy = "both";
  app.add_option("sweep", sweep_path, "sweep file (default: sweeps/paper.toml)");
  app.add_option("--ranks", ranks_list, "job sizes in ranks, the coordinator included")->delimiter(',');
  app.add_option("--rank-flops", rank_flops, "FLOP/s one rank sustains (default: [resources] or 4e14)");
  app.add_option("--wall-clock", wall_clock,
                 "each job's time limit, Slurm format (default: [resources] or 48:00:00)");
  app.add_option("--requeue-wait", requeue_wait, "seconds from one job's end to the next one's start");
  app.add_option("--policy", policy, "critical-path, most-work (the order before issue 15), or both")
      ->check(CLI::IsMember({"both", "critical-path", "most-work"}));
  CLI11_PARSE(app, argc, argv);
  try {
    const Sweep sweep = load_sweep_file(sweep_path);
    SchedulerOptions options = scheduler_options(sweep.resources);
    if (rank_flops > 0) options.rank_flops = rank_flops;
    if (options.rank_flops <= 0) options.rank_flops = 4e14;
    for (const int ranks : ranks_list)
      if (ranks < 2)
        throw moesweep::InputError("--ranks: each job needs at least 2 ranks (rank 0 coordinates)");
    if (!wall_clock.empty()) {
      try {
        options.wall_clock_s = static_cast<double>(slurm::parse_slurm_time(wall_clock));
      } catch (const moesweep::InputError&) {
        throw moesweep::InputError("--wall-clock: '" + wall_clock +
                                   "' is not a Slurm time limit (e.g. 48:00:00)");
      }
    }
    if (options.wall_clock_s <= 0) options.wall_clock_s = 48 * 3600;
    const std::vector<RunFacts> facts = run_facts(sweep);

    double flops = 0;
    for (const RunFacts& f : facts) flops += f.flops;
    std::printf("machine: %s, %u hardware threads\n", cpu_model().c_str(),
                std::thread::hardware_concurrency());
    std::printf(
        "sweep: %s, %zu runs (%.3g FLOPs trained); rank %.3g FLOP/s, jobs of %.1f h, requeue wait %.0f s\n",
        sweep_path.c_str(), facts.size(), flops, options.rank_flops, options.wall_clock_s / 3600,
        requeue_wait);
    std::printf(
        "simulated days; bound = max(chain, work): chain = longest trunk+branch chain at its gangs, "
        "work = sum gang*time / workers,\n  each at its policy's gangs (most-work, the policy before "
        "issue 15: gangs by memory alone); busy = rank-time used / (workers * makespan)\n");
    std::printf("%-14s %6s %13s %10s %10s %10s %7s %5s %7s %8s\n", "policy", "ranks", "makespan_d", "chain_d",
                "work_d", "bound_d", "ratio", "jobs", "busy", "sim_ms");
    for (const int ranks : ranks_list) {
      if (policy != "most-work") print_row("critical-path", ranks, Scheduler(facts, options), requeue_wait);
      if (policy != "critical-path") {
        SchedulerOptions before = options;  // the coordinator's policy before issue 15
        before.order = Order::most_work;
        before.gangs_by_time = false;
        print_row("most-work", ranks, Scheduler(facts, before), requeue_wait);
      }
    }
  } catch (const moesweep::InputError& e) {
    std::fprintf(stderr, "makespan_sim: %s\n", e.what());
    return 2;
  }
  return 0;
}
