#pragma once
// The command backend's two pure halves (no processes, no MPI): the placeholders of a command template,
// and the protocol a child speaks on its stdout. command_backend.cpp starts the processes; the sweep
// loader checks templates with check_template, so a misspelt placeholder is refused before anything runs.
//
// Placeholders. `{name}` in an argument or an environment value becomes the run's value; `{{` and `}}`
// are literal braces. The names:
//   every key of a run's resolved configuration, bare or with its section: {d_model} or {model.d_model},
//     {tokens} or {train.tokens}, {lr} (the resolved rate, also for lr = "auto"), {train}/{val} or
//     {data.train}/{data.val}, {tokenizer}, ... (the keys of sweep_spec.h's canonical_json);
//   what the expansion derives: {n_act}, {n_total}, {flops} (6·N_act·D), {kind} (run, trunk, branch),
//     {run_key}, {trunk_key} (branches; else empty), {branch_tokens} (branches: the tokens at which the
//     branch leaves its trunk; else 0), {branch_points} (trunks: the token counts at which the trunk must
//     announce a checkpoint, comma-separated, ascending; else empty);
//   the attempt's: {run_dir} (WORKDIR/<run_key>, absolute), {attempt} (the store's attempt id),
//     {resume_from} (the newest checkpoint the run's children announced, absolute; empty when none),
//     {branch_from} (branches: the trunk's checkpoint at the branch point; else empty), {rank}, {ranks}
//     (the child's rank in the run's gang and the gang's size), {master_addr}, {master_port} (the gang
//     leader's host and a free port on it, for torch.distributed's env:// rendezvous), {threads}
//     (`moesweep run --threads`), {device} ("cpu" or "cuda:K") and {devices} ("K", or "" on CPU: the
//     value for CUDA_VISIBLE_DEVICES).
//
// Protocol. Each line of the child's stdout whose first non-blank character is `{` is one event, a JSON
// object; every other line is the run's log:
//   {"event": "progress", "step": S, "tokens": T, "loss": L}           (optional "lr", "tokens_per_s")
//   {"event": "checkpoint", "tokens": T, "path": "..."}                (optional "step")
//   {"event": "result", "eval_loss": L, "n_act": N, "n_total": M}      (optional "train_loss")
// Counts are whole numbers >= 0; losses finite numbers; other fields are ignored. A line that starts with
// `{` and is not such an object is a protocol error: parse_protocol_line throws ProtocolError, and the
// attempt fails with its message.
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "moesweep/orchestrator/sweep_spec.h"

namespace moesweep::orchestrator::command {

// Every placeholder name a template may use, sorted.
const std::vector<std::string>& placeholder_names();

// The first problem with a template string (an unknown placeholder, an unclosed `{`, a stray `}`), as
// "unknown placeholder '{dmodel}'; did you mean '{d_model}'?"; nullopt when there is none.
std::optional<std::string> check_template(const std::string& text);

// The run's own values: every name of placeholder_names() but the attempt's (run_dir, attempt,
// resume_from, branch_from, rank, ranks, master_addr, master_port, threads, device, devices).
std::map<std::string, std::string> run_values(const ExpandedRun& run);

// `text` with each placeholder replaced by its value in `values`. Throws std::invalid_argument naming a
// placeholder that has no value (check_template refuses those at load, so only a bug reaches it).
std::string expand(const std::string& text, const std::map<std::string, std::string>& values);

struct ProgressEvent {
  std::int64_t step = 0;
  std::int64_t tokens = 0;
  double loss = 0;
  std::optional<double> lr;
  std::optional<double> tokens_per_s;
};
struct CheckpointEvent {
  std::int64_t tokens = 0;
  std::string path;
  std::optional<std::int64_t> step;
};
struct ResultEvent {
  double eval_loss = 0;
  std::int64_t n_act = 0;
  std::int64_t n_total = 0;
  std::optional<double> train_loss;
};

struct Event {
  enum class Kind { log, progress, checkpoint, result };
  Kind kind = Kind::log;
  ProgressEvent progress;
  CheckpointEvent checkpoint;
  ResultEvent result;
};

// What is wrong with a protocol line, in one line (without the line itself; the caller adds where).
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One line of the child's stdout (without its newline). Throws ProtocolError.
Event parse_protocol_line(const std::string& line);

// A checkpoint a run's child announced, as RUN_DIR/checkpoints.json keeps them (in announcement order).
struct Announcement {
  std::int64_t tokens = 0;
  std::int64_t step = 0;  // the checkpoint's own "step", else the last progress step before it; 0: unknown
  std::string path;       // absolute
  std::int64_t attempt = 0;
};
std::string announcements_to_json(const std::vector<Announcement>& list);
// Throws std::runtime_error on a file that is not such a list.
std::vector<Announcement> announcements_from_json(const std::string& text);

// Where an attempt resumes: the newest announced checkpoint (the last one announced: a child that went
// back to an earlier one announces again from there) whose file still exists (`exists`) and, when `at_most_tokens` is given (a trunk that must write a
// branch point again), whose tokens do not pass it. nullopt: from scratch.
template <typename Exists>
std::optional<Announcement> newest_checkpoint(const std::vector<Announcement>& list, Exists exists,
                                              std::optional<std::int64_t> at_most_tokens = std::nullopt) {
  std::optional<Announcement> best;
  for (const Announcement& a : list) {
    if (at_most_tokens && a.tokens > *at_most_tokens) continue;
    if (!exists(a.path)) continue;
    best = a;
  }
  return best;
}

}  // namespace moesweep::orchestrator::command
