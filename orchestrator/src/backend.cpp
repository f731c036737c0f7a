#include "backend.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include <cstdlib>

#include "command_backend.h"
#include "moesweep/analysis/law.h"
#include "moesweep/trainer/file_io.h"
#include "moesweep/trainer/trainer.h"

namespace moesweep::orchestrator {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int rank_in(MPI_Comm comm) {
  int rank = 0;
  if (comm != MPI_COMM_NULL) MPI_Comm_rank(comm, &rank);
  return rank;
}

// A branch found its trunk's checkpoint corrupt: move it aside (kept for a post-mortem) so that the
// branch is no longer runnable and the trunk writes it again.
void quarantine(const fs::path& file) {
  std::error_code ec;
  if (fs::exists(file, ec)) fs::rename(file, file.string() + ".corrupt", ec);
}

// A trunk that has passed a branch point whose checkpoint is gone (moved aside as corrupt, or deleted)
// rolls back to write it again: its own checkpoints at or past that point are removed, and if none is
// left before it, the newest kept branch-point checkpoint before it becomes the one to resume from.
void roll_trunk_back_to_missing_branch_point(const ExpandedRun& trunk, const fs::path& checkpoint_dir,
                                             const fs::path& keep_dir) {
  const std::vector<std::int64_t> own = trainer::checkpoint_steps(checkpoint_dir);
  if (own.empty()) return;
  const trainer::StepBoundary* missing = nullptr;
  for (const auto& point : trunk.branch_points)
    if (point.step <= own.back() && !fs::exists(trainer::checkpoint_path(keep_dir, point.step))) {
      missing = &point;
      break;
    }
  if (!missing) return;
  bool earlier = false;
  for (const std::int64_t step : own) {
    if (step >= missing->step)
      fs::remove(trainer::checkpoint_path(checkpoint_dir, step));
    else
      earlier = true;
  }
  if (earlier) return;
  for (auto it = trunk.branch_points.rbegin(); it != trunk.branch_points.rend(); ++it) {
    const fs::path kept = trainer::checkpoint_path(keep_dir, it->step);
    if (it->step >= missing->step || !fs::exists(kept)) continue;
    const fs::path target = trainer::checkpoint_path(checkpoint_dir, it->step);
    std::error_code ec;
    fs::create_hard_link(kept, target, ec);
    if (ec) {  // another file system: copy, then rename into place (never a torn checkpoint)
      const fs::path temp = target.string() + ".tmp";
      fs::copy_file(kept, temp, fs::copy_options::overwrite_existing);
      fs::rename(temp, target);
    }
    return;
  }
}

class TorchBackend : public Backend {
 public:
  explicit TorchBackend(const SweepRunOptions& options) : options_(options) {}

  WorkResult train(const ExpandedRun& run, const fs::path& run_dir, std::int64_t attempt, MPI_Comm gang,
                   WorkObserver& observer) override {
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
    topt.device = options_.device;  // "cuda:K": `moesweep run` placed this rank (placement.h)
    topt.threads = options_.threads;
    topt.may_write_checkpoints = [run_dir, attempt] { return run_dir_owned_by(run_dir, attempt); };
    WorkResult result;
    try {
      fs::create_directories(topt.checkpoint_dir);
      if (rank_in(gang) == 0) fence_run_dir(run_dir, attempt);
      if (gang != MPI_COMM_NULL) MPI_Barrier(gang);
      if (run.kind == RunKind::trunk) {
        topt.keep_dir = branch_points_dir(options_.workdir, run.run_key);
        for (const auto& point : run.branch_points) topt.keep_checkpoints_at_tokens.push_back(point.tokens);
        if (rank_in(gang) == 0)
          roll_trunk_back_to_missing_branch_point(run, topt.checkpoint_dir, topt.keep_dir);
        if (gang != MPI_COMM_NULL) MPI_Barrier(gang);
      } else if (run.kind == RunKind::branch) {
        topt.start_from = branch_point_file(options_.workdir, run);
        topt.start_from_config = run.trunk_config;
      }
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
    } catch (const trainer::Superseded& e) {
      result.outcome = "superseded";
      result.message = e.what();
    } catch (const trainer::UnusableCheckpoint& e) {
      result.outcome = "blocked";
      result.message = std::string("trunk checkpoint unusable: ") + e.what();
      if (rank_in(gang) == 0) quarantine(topt.start_from);
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

// Sleeps for the run's cost at a nominal throughput per rank (a gang of k ranks k times as fast) times
// the time scale, in heartbeat-sized slices, and reports the loss the published law predicts. Progress
// "checkpoints" are a one-line file, so a killed simulated sweep resumes exactly like a real one.
class SimulateBackend : public Backend {
 public:
  explicit SimulateBackend(const SweepRunOptions& options) : options_(options) {}

  // An H100 at about 40% of its bf16 peak.
  static constexpr double kNominalFlopsPerSecond = 4e14;

  WorkResult train(const ExpandedRun& run, const fs::path& run_dir, std::int64_t attempt, MPI_Comm gang,
                   WorkObserver& observer) override {
    try {
      if (rank_in(gang) == 0) fence_run_dir(run_dir, attempt);
      may_publish_ = [run_dir, attempt] { return run_dir_owned_by(run_dir, attempt); };
      return simulate(run, run_dir, gang, observer);
    } catch (const trainer::Superseded& e) {
      WorkResult result;
      result.outcome = "superseded";
      result.message = e.what();
      return result;
    } catch (const std::exception& e) {  // as the torch backend: the run fails, the rank goes on
      WorkResult result;
      result.outcome = "failed";
      result.message = e.what();
      return result;
    }
  }

 private:
  WorkResult simulate(const ExpandedRun& run, const fs::path& run_dir, MPI_Comm gang, WorkObserver& observer) {
    const auto& cfg = run.config;
    const bool writes_checkpoints = rank_in(gang) == 0;
    // A branch starts where its trunk left it; everything else from 0. Positions advance by whole
    // batches (no ramp), the last one capped at the run's tokens.
    const bool branch = run.kind == RunKind::branch;
    const std::int64_t start_step = branch ? run.branch_point.step : 0;
    const std::int64_t start_tokens = branch ? run.branch_point.tokens : 0;
    const std::int64_t batch = cfg.train.batch_tokens;
    const std::int64_t total_steps = start_step + (cfg.train.tokens - start_tokens + batch - 1) / batch;
    auto tokens_at = [&](std::int64_t s) {
      return std::min(cfg.train.tokens, start_tokens + (s - start_step) * batch);
    };
    const std::int64_t checkpoint_steps =
        std::max<std::int64_t>(1, cfg.train.checkpoint_every_tokens / batch);
    // A gang of k ranks trains k times as fast (perfect data-parallel scaling, as the scheduler assumes).
    int gang_ranks = 1;
    if (gang != MPI_COMM_NULL) MPI_Comm_size(gang, &gang_ranks);
    const double seconds_per_step = 6.0 * static_cast<double>(run.n_act) * static_cast<double>(batch) /
                                    (kNominalFlopsPerSecond * gang_ranks) * options_.time_scale;
    const fs::path progress_file = run_dir / "simulate.progress";

    WorkResult result;
    std::int64_t step = start_step;
    if (std::ifstream in(progress_file); in >> step) {
      result.resumed_from_step = step;
    } else if (branch) {
      // The simulated trunk "checkpoint" is a one-line marker; a wrong line is a failed checksum.
      step = start_step;
      const fs::path marker = branch_point_file(options_.workdir, run);
      std::ifstream marker_in(marker);
      std::string line;
      const bool readable = static_cast<bool>(marker_in);
      if (!readable || !std::getline(marker_in, line) || line != marker_line(run.branch_point)) {
        result.outcome = "blocked";
        result.message = "trunk checkpoint unusable: " + marker.string() +
                         (readable ? ": fails its checksum" : ": no such checkpoint");
        if (readable && writes_checkpoints) quarantine(marker);
        return result;
      }
      result.resumed_from_step = start_step;
    } else {
      step = 0;
    }
    std::size_t next_point = 0;  // trunks: the next branch point to mark
    auto mark_branch_points = [&](std::int64_t tokens) {
      if (run.kind != RunKind::trunk || !writes_checkpoints) return;
      for (; next_point < run.branch_points.size() && run.branch_points[next_point].tokens <= tokens;
           ++next_point) {
        const auto& point = run.branch_points[next_point];
        const fs::path marker = branch_point_path(options_.workdir, run.run_key, point.step);
        if (!fs::exists(marker)) save_line(marker, marker_line(point));  // also re-writes one moved aside
      }
    };
    mark_branch_points(tokens_at(step));
    const auto start = Clock::now();
    const analysis::Coefficients law = analysis::paper_coefficients();
    auto loss_at = [&](std::int64_t s) {
      return analysis::predict_loss(law, static_cast<double>(run.n_act),
                                    static_cast<double>(std::max<std::int64_t>(1, tokens_at(s))),
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
        if (writes_checkpoints && s % checkpoint_steps == 0) save_line(progress_file, std::to_string(s));
      step = next;
      mark_branch_points(tokens_at(step));
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const double tokens_done = static_cast<double>((step - result.resumed_from_step) * batch);
      observer.progress(
          {step, tokens_at(step), loss_at(step), cfg.train.lr, elapsed > 0 ? tokens_done / elapsed : 0.0});
    }
    if (result.outcome.empty()) result.outcome = "completed";
    if (result.outcome == "stopped" && writes_checkpoints) save_line(progress_file, std::to_string(step));
    result.steps = step;
    result.tokens = tokens_at(step);
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.tokens_per_s =
        result.seconds > 0 ? static_cast<double>((step - result.resumed_from_step) * batch) / result.seconds
                           : 0;
    result.train_loss = loss_at(step);
    result.eval_loss = loss_at(total_steps);
    return result;
  }

  static std::string marker_line(const trainer::StepBoundary& point) {
    return "moesweep simulated branch point: step " + std::to_string(point.step) + ", tokens " +
           std::to_string(point.tokens);
  }
  // Throws with the file and the system's reason (a full disk, say); the run then fails with that line.
  void save_line(const fs::path& file, const std::string& line) {
    fs::create_directories(file.parent_path());
    const std::string text = line + "\n";
    trainer::write_file_atomically(file, {{text.data(), text.size()}}, may_publish_);
  }
  SweepRunOptions options_;
  std::function<bool()> may_publish_;
};

}  // namespace

fs::path branch_points_dir(const std::string& workdir, const std::string& trunk_key) {
  return fs::path(workdir) / trunk_key / "branch-points";
}

fs::path branch_point_path(const std::string& workdir, const std::string& trunk_key, std::int64_t step) {
  return trainer::checkpoint_path(branch_points_dir(workdir, trunk_key), step);
}

fs::path branch_point_file(const std::string& workdir, const ExpandedRun& branch) {
  return branch_point_path(workdir, branch.trunk_key, branch.branch_point.step);
}

void fence_run_dir(const fs::path& run_dir, std::int64_t attempt) {
  fs::create_directories(run_dir);
  const std::string text = std::to_string(attempt) + "\n";
  trainer::write_file_atomically(run_dir / "attempt", {{text.data(), text.size()}});
  // Temporary files of earlier attempts (a torn checkpoint of a killed rank) are debris now: their
  // writers, if still alive, are fenced and would not publish them.
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(run_dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec) && it->path().filename().string().find(trainer::kTemporarySuffix) != std::string::npos)
      fs::remove(it->path(), ec);
  }
}

bool run_dir_owned_by(const fs::path& run_dir, std::int64_t attempt) {
  std::ifstream in(run_dir / "attempt");
  std::int64_t owner = 0;
  return in >> owner && owner == attempt;
}

std::unique_ptr<Backend> make_backend(const SweepRunOptions& options, const Sweep& sweep) {
  if (options.backend == "simulate") return std::make_unique<SimulateBackend>(options);
  if (options.backend == "command") return make_command_backend(options, sweep.command);
  return std::make_unique<TorchBackend>(options);
}

}  // namespace moesweep::orchestrator
