#pragma once
// Checkpoint files (internal to the trainer). One file per checkpoint, ckpt-<step>.pt:
//   "MOESCKPT", u32 version, u32 zero, u64 step, u64 tokens, u64 config bytes, u64 payload bytes,
//   u64 checksum64(config ‖ payload), then the run's canonical config text, then a LibTorch archive
//   with the model, the AdamW state and the CPU RNG state.
// Written atomically (temp, fsync, rename); the newest two are kept so that a torn newest one falls
// back to the previous one.
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "moesweep/trainer/model.h"

namespace moesweep::trainer {

// The first line of every run config text a checkpoint carries since the authors' recipe (routing
// groups, capacity kept by position, their init and AdamW). A checkpoint whose config text lacks it was
// written by the older recipe and is refused for resume with a message that says so.
inline constexpr const char* kRecipeLine = "recipe = llm-random (routing groups, capacity kept by position)";

struct CheckpointPosition {
  std::int64_t step = 0;
  std::int64_t tokens = 0;
};

// Writes dir/ckpt-<step>.pt and deletes all but the newest `keep` checkpoints (0: deletes none).
// Returns the path.
std::filesystem::path save_checkpoint(const std::filesystem::path& dir, const CheckpointPosition& position,
                                      const std::string& config_text, MoeTransformerImpl& model,
                                      torch::optim::Optimizer& optimizer, std::size_t keep = 2,
                                      const std::function<bool()>& may_publish = {});

struct LoadedCheckpoint {
  std::filesystem::path path;
  CheckpointPosition position;
};

// Loads the newest valid checkpoint in `dir` into model and optimizer (and restores the RNG state).
// Torn or unreadable files are skipped with a warning; none at all gives nullopt. A valid checkpoint
// of another config is an InputError, as is a directory whose checkpoints are all torn.
std::optional<LoadedCheckpoint> load_latest_checkpoint(const std::filesystem::path& dir,
                                                       const std::string& config_text,
                                                       MoeTransformerImpl& model,
                                                       torch::optim::Optimizer& optimizer,
                                                       const std::function<void(const std::string&)>& warn);

// Loads one named checkpoint (a cooldown branch's start). Throws UnusableCheckpoint when the file is
// missing, torn or fails its checksum (nothing is loaded then), InputError when it is a valid checkpoint
// of another config or model.
LoadedCheckpoint load_checkpoint_file(const std::filesystem::path& path, const std::string& config_text,
                                      MoeTransformerImpl& model, torch::optim::Optimizer& optimizer);

}  // namespace moesweep::trainer
