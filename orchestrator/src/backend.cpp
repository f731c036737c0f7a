#include "backend.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include <torch/cuda.h>

#include <cstdlib>

#include "moesweep/analysis/law.h"
#include "moesweep/trainer/trainer.h"

namespace moesweep::orchestrator {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// "cuda" means one GPU per worker: the rank's index on its node (from the launcher) modulo the node's GPUs.
// On the coordinator's node that still gives every worker a GPU of its own when there are GPUs + 1 ranks.
std::string device_of_this_rank(const std::string& device) {
  if (device != "cuda") return device;
  const auto gpus = static_cast<long>(torch::cuda::device_count());
  if (gpus == 0) return device;  // the trainer says there is no GPU
  for (const char* variable : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"})
    if (const char* local = std::getenv(variable)) return "cuda:" + std::to_string(std::atol(local) % gpus);
  return device;
}

class TorchBackend : public Backend {
 public:
  explicit TorchBackend(const SweepRunOptions& options) : options_(options) {}

  WorkResult train(const ExpandedRun& run, const fs::path& run_dir, MPI_Comm gang, WorkObserver& observer) override {
    struct Adapter : trainer::TrainingObserver {
      WorkObserver& out;
      explicit Adapter(WorkObserver& o) : out(o) {}
      void on_progress(const trainer::Progress& p) override {
        out.progress({p.step, p.tokens, p.train_loss, p.lr, p.tokens_per_s});
      }
      bool stop_requested() override { return out.stop_requested(); }
    } adapter(observer);

    trainer::TrainOptions topt;
    topt.checkpoint_dir = run_dir / "checkpoints";
    topt.resume = true;  // from the newest valid checkpoint when an earlier attempt left one
    topt.communicator = gang;
    topt.device = device_of_this_rank(options_.device);
    topt.threads = options_.threads;
    WorkResult result;
    try {
      fs::create_directories(topt.checkpoint_dir);
      const trainer::Result r = trainer::train(run.config, topt, adapter);
      result.outcome = trainer::to_string(r.outcome);
      result.eval_loss = r.eval_loss;
      result.train_loss = r.train_loss;
      result.tokens = r.tokens;
      result.steps = r.steps;
      result.tokens_per_s = r.tokens_per_s;
      result.seconds = r.seconds;
      result.resumed_from_step = r.resumed_from_step;
      result.message = r.message;
    } catch (const std::exception& e) {
      result.outcome = "failed";
      const std::string message = e.what();  // LibTorch appends a backtrace; the store keeps one line
      result.message = message.substr(0, message.find('\n'));
    }
    return result;
  }

 private:
  SweepRunOptions options_;
};

// Sleeps for the run's cost at a nominal throughput times the time scale, in heartbeat-sized slices,
// and reports the loss the published law predicts. Progress "checkpoints" are a one-line file, so a
// killed simulated sweep resumes exactly like a real one.
class SimulateBackend : public Backend {
 public:
  explicit SimulateBackend(const SweepRunOptions& options) : options_(options) {}

  // An H100 at about 40% of its bf16 peak.
  static constexpr double kNominalFlopsPerSecond = 4e14;

  WorkResult train(const ExpandedRun& run, const fs::path& run_dir, MPI_Comm gang, WorkObserver& observer) override {
    const auto& cfg = run.config;
    const std::int64_t total_steps = (cfg.train.tokens + cfg.train.batch_tokens - 1) / cfg.train.batch_tokens;
    const std::int64_t checkpoint_steps = std::max<std::int64_t>(1, cfg.train.checkpoint_every_tokens / cfg.train.batch_tokens);
    const double seconds_per_step = 6.0 * static_cast<double>(run.n_act) * static_cast<double>(cfg.train.batch_tokens) /
                                    kNominalFlopsPerSecond * options_.time_scale;
    const fs::path progress_file = run_dir / "simulate.progress";
    const bool writes_checkpoints = gang == MPI_COMM_NULL || rank_in(gang) == 0;

    WorkResult result;
    std::int64_t step = 0;
    if (std::ifstream in(progress_file); in >> step) result.resumed_from_step = step;
    const auto start = Clock::now();
    const analysis::Coefficients law = analysis::paper_coefficients();
    auto loss_at = [&](std::int64_t s) {
      return analysis::predict_loss(law, static_cast<double>(run.n_act),
                                    static_cast<double>(std::max<std::int64_t>(1, s * cfg.train.batch_tokens)),
                                    static_cast<double>(cfg.model.experts));
    };
    // Sleep in slices so stop requests are seen promptly and heartbeats flow.
    const std::int64_t steps_per_slice =
        std::max<std::int64_t>(1, static_cast<std::int64_t>(0.05 / std::max(seconds_per_step, 1e-9)));
    while (step < total_steps) {
      if (observer.stop_requested()) {
        result.outcome = "stopped";
        break;
      }
      const std::int64_t next = std::min(total_steps, step + steps_per_slice);
      std::this_thread::sleep_for(std::chrono::duration<double>(seconds_per_step * static_cast<double>(next - step)));
      for (std::int64_t s = step + 1; s <= next; ++s)
        if (writes_checkpoints && s % checkpoint_steps == 0) save_progress(progress_file, s);
      step = next;
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const double tokens_done = static_cast<double>((step - result.resumed_from_step) * cfg.train.batch_tokens);
      observer.progress({step, step * cfg.train.batch_tokens, loss_at(step), cfg.train.lr,
                         elapsed > 0 ? tokens_done / elapsed : 0.0});
    }
    if (result.outcome.empty()) result.outcome = "completed";
    if (result.outcome == "stopped" && writes_checkpoints) save_progress(progress_file, step);
    result.steps = step;
    result.tokens = std::min(cfg.train.tokens, step * cfg.train.batch_tokens);
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.tokens_per_s =
        result.seconds > 0 ? static_cast<double>((step - result.resumed_from_step) * cfg.train.batch_tokens) / result.seconds : 0;
    result.train_loss = loss_at(step);
    result.eval_loss = loss_at(total_steps);
    return result;
  }

 private:
  static int rank_in(MPI_Comm comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    return rank;
  }
  static void save_progress(const fs::path& file, std::int64_t step) {
    fs::create_directories(file.parent_path());
    const fs::path temp = file.string() + ".tmp";
    std::ofstream(temp) << step << "\n";
    fs::rename(temp, file);
  }
  SweepRunOptions options_;
};

}  // namespace

std::unique_ptr<Backend> make_backend(const SweepRunOptions& options) {
  if (options.backend == "simulate") return std::make_unique<SimulateBackend>(options);
  return std::make_unique<TorchBackend>(options);
}

}  // namespace moesweep::orchestrator
