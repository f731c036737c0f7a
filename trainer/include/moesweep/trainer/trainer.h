#pragma once
// The native trainer: trains one RunConfig and reports through TrainingObserver. It knows nothing of
// sweeps or databases.
//
// Determinism: on CPU the training and evaluation kernels are deterministic for a fixed number of
// threads, data windows are a pure function of (seed, step), and a checkpoint holds the exact
// parameters, AdamW state and RNG state. The trainer sets the BLAS library's own thread pool to the
// intra-op count (TrainOptions::threads; the default is LibTorch's, the number of cores), whatever
// OPENBLAS_NUM_THREADS says. So the same binary, on the same CPU kernel family (the BLAS picks its GEMM
// kernel per CPU model), with the same thread count and rank count, gives a bit-identical eval_loss,
// resumed or not. Another CPU model or thread count can move the last digits, and through a flipped
// routing decision the loss by more. CUDA runs are reproducible only within float tolerance.
//
// Data parallelism: with an MPI communicator of k ranks, each rank takes whole routing groups of the
// global batch (model.routing_group sequences each); gradients (already scaled by each rank's share of
// the batch) are summed with one all-reduce (NCCL for CUDA tensors when built with it, MPI otherwise),
// so the update equals the single-rank one within float tolerance. Capacity and the auxiliary losses
// are computed per routing group, which is what makes the split irrelevant; the smallest batch must
// hold at least k groups. Rank 0 writes the checkpoints.
#include <mpi.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "moesweep/trainer/run_config.h"

namespace moesweep::trainer {

struct Progress {
  std::int64_t step = 0;      // optimizer steps done
  std::int64_t tokens = 0;    // training tokens consumed (all ranks)
  double train_loss = 0.0;    // this step's language-model loss (nats/token, global batch)
  double lr = 0.0;            // learning rate of this step
  double tokens_per_s = 0.0;  // since this process started training
  double eta_seconds = 0.0;   // to the end of training at that rate
};

class TrainingObserver {
 public:
  virtual ~TrainingObserver() = default;
  virtual void on_progress(const Progress& progress) {}
  virtual void on_checkpoint(std::int64_t step, std::int64_t tokens, const std::filesystem::path& path) {}
  // Non-fatal problems, e.g. a torn newest checkpoint skipped in favour of the previous one.
  virtual void on_warning(const std::string& message) {}
  // Polled once per step; true makes the trainer checkpoint and return Outcome::stopped (preemption).
  virtual bool stop_requested() { return false; }
};

struct TrainOptions {
  std::filesystem::path checkpoint_dir;   // empty: no checkpoints, and --resume is an error
  bool resume = false;                    // continue from the newest valid checkpoint, if any
  MPI_Comm communicator = MPI_COMM_NULL;  // data-parallel group (MPI must be initialised); null: one rank
  std::string device = "cpu";             // "cpu", "cuda", "cuda:1", ... (CUDA trains in bf16)
  int threads = 0;                        // intra-op threads; 0 keeps LibTorch's default

  // Cooldown trunks: at each of these token counts (each a step boundary of the run) also write a
  // checkpoint into keep_dir, where checkpoints are never rotated away (branches start from them).
  std::vector<std::int64_t> keep_checkpoints_at_tokens;
  std::filesystem::path keep_dir;

  // Cooldown branches: when `resume` finds no checkpoint of this run (or resume is off), start from
  // this checkpoint file, written by `start_from_config` (the trunk). That config may differ from this
  // run only in train.tokens and train.decay_fraction, and both must give every step before the
  // checkpoint the same learning rate. A missing, torn or corrupt file throws UnusableCheckpoint
  // before any training.
  std::filesystem::path start_from;
  std::optional<RunConfig> start_from_config;

  // Fencing: asked (on rank 0) just before each checkpoint is renamed into place. False means a newer
  // attempt of this run owns its directory: nothing is written and train() throws Superseded (file_io.h)
  // on every rank of the group. Empty: always write.
  std::function<bool()> may_write_checkpoints;
};

// A checkpoint a run was told to start from is missing, torn or fails its checksum; nothing trained.
class UnusableCheckpoint : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// dir/ckpt-<step, 12 digits>.pt: where the trainer writes the checkpoint of `step`.
std::filesystem::path checkpoint_path(const std::filesystem::path& dir, std::int64_t step);
// Steps of the checkpoint files in `dir` (by name, unverified), ascending.
std::vector<std::int64_t> checkpoint_steps(const std::filesystem::path& dir);

enum class Outcome { completed, stopped, diverged };
const char* to_string(Outcome outcome);

struct Result {
  Outcome outcome = Outcome::completed;
  double eval_loss = 0.0;   // final eval with eval_capacity_factor (NaN unless completed)
  double train_loss = 0.0;  // last step's language-model loss
  std::int64_t tokens = 0;
  std::int64_t steps = 0;
  std::int64_t n_act = 0;
  std::int64_t n_total = 0;
  double tokens_per_s = 0.0;
  double seconds = 0.0;                // wall time of this process's training and eval
  std::int64_t resumed_from_step = 0;  // 0: started fresh
  std::string message;                 // for diverged: what and where
};

// Trains `config` to completion, to a stop request or to divergence. Bad input (missing or corrupt
// shards, a shard from another tokenizer, a checkpoint of another config, an invalid config) throws
// InputError; divergence is an outcome, not an exception.
Result train(const RunConfig& config, const TrainOptions& options, TrainingObserver& observer);

// Throws InputError when the config cannot be trained (shapes, batch, token counts).
void validate(const RunConfig& config);

// The sequences [first, second) of a global batch of `sequences` that rank `rank` of `ranks` trains:
// whole routing groups (routing_group_size(model, sequences) each), split as evenly as possible.
std::pair<std::int64_t, std::int64_t> data_parallel_slice(const ModelConfig& model, std::int64_t sequences,
                                                          int rank, int ranks);

// The schedule (learning_rate_at, batch_sequences_at, step boundaries, cooldown branch points) is plain
// config arithmetic and lives in run_config.h, so that sweep expansion can use it without LibTorch.

}  // namespace moesweep::trainer
