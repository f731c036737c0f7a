// `moesweep train RUN.toml [--checkpoint-dir DIR] [--resume] [--json]`: one training run, no database.
//
// Exit status: 0 trained and evaluated; 2 bad input; 3 diverged (the loss became NaN or infinite);
// 4 stopped by SIGTERM, SIGUSR1 or SIGINT after writing a checkpoint (rerun with --resume); 1 otherwise.
// Under mpirun/srun with several ranks the run is data-parallel over all of them; rank 0 prints.
#include <mpi.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "commands.h"
#include "format.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/sweep_spec.h"
#include "moesweep/trainer/trainer.h"
#include "rank_placement.h"

namespace moesweep::cli {
namespace {

constexpr int kExitDiverged = 3;
constexpr int kExitStopped = 4;

struct TrainCommandOptions {
  std::string run_file;
  std::string checkpoint_dir;
  bool resume = false;
  bool json = false;
  std::string device = "cpu";
  int gpus_per_node = 0;  // 0: the GPUs CUDA shows this process
  int threads = 0;
};

// Set from the signal handler, polled by the trainer once per step.
volatile std::sig_atomic_t stop_signal = 0;
extern "C" void request_stop(int signal_number) { stop_signal = signal_number; }

// Prints progress to stderr at most every two seconds (and always the last step). The header line waits
// for the trainer's first word, so a run refused on its inputs (a torn shard, say) prints one line only.
class ConsoleObserver final : public trainer::TrainingObserver {
 public:
  ConsoleObserver(std::int64_t total_tokens, bool quiet, std::string header)
      : total_tokens_(total_tokens), quiet_(quiet), header_(std::move(header)) {}

  void announce() {
    if (quiet_ || announced_) return;
    announced_ = true;
    std::fprintf(stderr, "%s\n", header_.c_str());
  }
  void on_progress(const trainer::Progress& p) override {
    announce();
    const auto now = std::chrono::steady_clock::now();
    if (quiet_ || (now - last_print_ < std::chrono::seconds(2) && p.tokens < total_tokens_)) return;
    last_print_ = now;
    std::fprintf(stderr, "step %lld  tokens %s/%s  loss %.4f  lr %.3g  %s tok/s  ETA %s\n",
                 static_cast<long long>(p.step), human_count(static_cast<double>(p.tokens)).c_str(),
                 human_count(static_cast<double>(total_tokens_)).c_str(), p.train_loss, p.lr,
                 human_count(p.tokens_per_s).c_str(), human_duration(p.eta_seconds).c_str());
  }
  void on_checkpoint(std::int64_t step, std::int64_t tokens, const std::filesystem::path& path) override {
    announce();
    if (!quiet_)
      std::fprintf(stderr, "checkpoint at step %lld: %s\n", static_cast<long long>(step), path.c_str());
  }
  void on_warning(const std::string& message) override {
    announce();
    if (!quiet_) std::fprintf(stderr, "moesweep: warning: %s\n", message.c_str());
  }
  bool stop_requested() override { return stop_signal != 0; }

 private:
  std::int64_t total_tokens_;
  bool quiet_;
  std::string header_;
  bool announced_ = false;
  std::chrono::steady_clock::time_point last_print_{};
};

// Data-parallel when started by an MPI launcher (Open MPI, PMI/PMIx: srun, mpirun of MPICH).
bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

// MPI for the lifetime of the command, when a launcher started us and nobody initialised it yet.
class MpiSession {
 public:
  MpiSession() {
    if (!launched_by_mpi()) return;
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      MPI_Init(nullptr, nullptr);
      owned_ = true;
    }
    communicator_ = MPI_COMM_WORLD;
    MPI_Comm_rank(communicator_, &rank_);
  }
  ~MpiSession() {
    if (owned_) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  MPI_Comm communicator() const { return communicator_; }
  int rank() const { return rank_; }

 private:
  bool owned_ = false;
  MPI_Comm communicator_ = MPI_COMM_NULL;
  int rank_ = 0;
};

void run_train(const TrainCommandOptions& options) {
  const auto config = orchestrator::load_run_file(options.run_file);
  try {
    trainer::validate(config);
  } catch (const InputError& e) {
    throw InputError(options.run_file + ": " + e.what());
  }
  MpiSession mpi;
  const bool printing = mpi.rank() == 0;

  trainer::TrainOptions train_options;
  train_options.checkpoint_dir =
      options.checkpoint_dir.empty()
          ? std::filesystem::path("runs") / orchestrator::run_key_of(config).substr(0, 16)
          : std::filesystem::path(options.checkpoint_dir);
  train_options.resume = options.resume;
  train_options.communicator = mpi.communicator();
  // Every rank trains, each on a GPU of its own ("cuda" becomes cuda:<its index on its node>). A layout
  // with two ranks on one GPU is refused by every rank alike; rank 0 alone says why.
  try {
    train_options.device = orchestrator::place_on_gpu(options.device, mpi.communicator(),
                                                      orchestrator::kNoCoordinator, options.gpus_per_node);
  } catch (const InputError&) {
    if (printing) throw;
    throw ExitStatus{2};
  }
  train_options.threads = options.threads;

  for (const int signal_number : {SIGTERM, SIGUSR1, SIGINT}) std::signal(signal_number, request_stop);
  char header[8192];  // two paths at most
  std::snprintf(header, sizeof header, "train %s: N_act %s, N_total %s, E %lld, D %s, lr %.3g; checkpoints in %s",
                options.run_file.c_str(),
                human_count(static_cast<double>(trainer::active_params(config.model))).c_str(),
                human_count(static_cast<double>(trainer::total_params(config.model))).c_str(),
                static_cast<long long>(config.model.experts),
                human_count(static_cast<double>(config.train.tokens)).c_str(), config.train.lr,
                train_options.checkpoint_dir.c_str());
  ConsoleObserver observer(config.train.tokens, !printing, header);
  const auto result = trainer::train(config, train_options, observer);
  observer.announce();  // a run resumed at its end trains no step
  for (const int signal_number : {SIGTERM, SIGUSR1, SIGINT}) std::signal(signal_number, SIG_DFL);

  if (printing) {
    if (result.resumed_from_step > 0) {
      std::fprintf(stderr, "resumed from step %lld\n", static_cast<long long>(result.resumed_from_step));
    }
    if (options.json) {
      const nlohmann::json summary = {{"outcome", trainer::to_string(result.outcome)},
                                      {"eval_loss", result.eval_loss},  // NaN (no eval) is written as null
                                      {"train_loss", result.train_loss},
                                      {"tokens", result.tokens},
                                      {"steps", result.steps},
                                      {"n_act", result.n_act},
                                      {"n_total", result.n_total},
                                      {"tokens_per_s", result.tokens_per_s},
                                      {"seconds", result.seconds},
                                      {"resumed_from_step", result.resumed_from_step},
                                      {"checkpoint_dir", train_options.checkpoint_dir.string()}};
      std::cout << summary.dump() << std::endl;
    } else if (result.outcome == trainer::Outcome::completed) {
      std::printf("eval_loss %.6f  train_loss %.6f  tokens %lld  steps %lld  %s tok/s  %s\n",
                  result.eval_loss, result.train_loss, static_cast<long long>(result.tokens),
                  static_cast<long long>(result.steps), human_count(result.tokens_per_s).c_str(),
                  human_duration(result.seconds).c_str());
    }
  }
  if (result.outcome == trainer::Outcome::diverged) {
    if (printing) std::fprintf(stderr, "moesweep: run diverged: %s\n", result.message.c_str());
    throw ExitStatus{kExitDiverged};
  }
  if (result.outcome == trainer::Outcome::stopped) {
    if (printing) {
      std::fprintf(stderr, "moesweep: stopped by signal %d at step %lld; rerun with --resume to continue\n",
                   static_cast<int>(stop_signal), static_cast<long long>(result.steps));
    }
    throw ExitStatus{kExitStopped};
  }
}

}  // namespace

void add_train(CLI::App& app) {
  auto options = std::make_shared<TrainCommandOptions>();
  auto* command = app.add_subcommand("train", kTrainDescription);
  command->add_option("run_file", options->run_file, "run file (TOML: [data], [model], [train])")->required();
  command->add_option("--checkpoint-dir", options->checkpoint_dir,
                      "where checkpoints go (default: runs/<run key prefix>)");
  command->add_flag("--resume", options->resume,
                    "continue from the newest valid checkpoint, if there is one");
  command->add_flag("--json", options->json, "print the result as one JSON object on the last stdout line");
  command
      ->add_option("--device", options->device,
                   "cpu, cuda (each rank a GPU of its own on its node) or cuda:N (CUDA trains in bf16)")
      ->capture_default_str();
  command
      ->add_option("--gpus-per-node", options->gpus_per_node,
                   "--device cuda: GPUs per node; default: the devices CUDA shows this process")
      ->check(kPositive);
  command
      ->add_option("--threads", options->threads,
                   "intra-op CPU threads (0: LibTorch's default). Resume bit-identically with the same count")
      ->check(kNonNegative)
      ->capture_default_str();
  command->callback([options] { run_train(*options); });
}

}  // namespace moesweep::cli
