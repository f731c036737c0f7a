#pragma once
// Run files and sweep files (TOML) → fully resolved runs with stable keys.
//
// A run file holds [data], [model] and [train]. A sweep file holds the same sections as defaults, plus
// [sweep] (name, backend), [backend] (the command backend's template), [resources], [store] (journal), [filters] and [[grid]] blocks; each block is the product of its lists and
// the sweep is the union of its blocks (a grid point listed twice is one run). Relative data paths are
// kept as written (they resolve against the working directory when a run opens them), so a run's key is
// the same on every machine.
//
// Every problem in a file throws moesweep::InputError naming the file, the line and the key.
#include <cstdint>
#include <string>
#include <vector>

#include "moesweep/db/store.h"
#include "moesweep/trainer/run_config.h"

namespace moesweep::orchestrator {

// How a run trains. An independent run trains its D tokens from scratch. With branching = "cooldown" a
// grid block's token budgets of one model (every key but tokens equal) share a trunk: the trunk trains
// at constant learning rate after warm-up up to its largest branch point and keeps a checkpoint at
// every branch point; each budget is a branch that starts from its trunk's checkpoint at
// trainer::cooldown_branch_point(config) and decays over the rest of its D tokens, exactly as the
// independent run would.
enum class RunKind { independent, trunk, branch };
const char* to_string(RunKind kind);  // "run", "trunk", "branch" (the store's `kind` column)

struct ExpandedRun {
  std::string run_key;         // SHA-256 (hex) of canonical_json
  std::string canonical_json;  // the run's specification (see canonical_json below)
  trainer::RunConfig config;   // independent and branch: the run's own config; trunk: the trunk's
  std::int64_t n_act = 0;
  std::int64_t n_total = 0;
  double flops = 0;  // 6·N_act·D

  RunKind kind = RunKind::independent;
  std::int64_t trained_tokens = 0;  // what it trains itself: D, the trunk's length, or D − branch point
  double trained_flops = 0;         // 6·N_act·trained_tokens

  // Branches: the trunk's key and config, and where the branch leaves it.
  std::string trunk_key;
  trainer::RunConfig trunk_config;
  trainer::StepBoundary branch_point;
  // Trunks: every branch point of their branches, ascending and distinct.
  std::vector<trainer::StepBoundary> branch_points;
};

struct Resources {
  std::int64_t rank_memory_bytes = 0;  // one rank's memory budget; 0 = no limit
  int max_attempts = 3;                // tries of a run that throws before it is left failed
  double heartbeat_timeout_s = 300;    // a silent worker's run is requeued after this
  // Gangs sized by time (scheduler.h): one allocation's time limit (wall_clock, a Slurm time such as
  // "48:00:00") and the FLOP/s one rank sustains (rank_flops, measured or stated; 6·N_act FLOPs per
  // token). A run one rank cannot finish within the wall clock gets the smallest gang that can. 0: not stated.
  double wall_clock_s = 0;
  double rank_flops = 0;
};

// [backend]: what the command backend (backend = "command") starts for each attempt of a run, with
// placeholders ({d_model}, {run_dir}, {resume_from}, ...: command_backend_protocol.h lists them, and the
// loader refuses an unknown one).
struct CommandTemplate {
  std::vector<std::string> argv;                         // command = [...]; empty: no [backend] table
  std::vector<std::pair<std::string, std::string>> env;  // env = { NAME = "value" }, set over the worker's
  // stop_timeout_s: how long a child may take to stop after the forwarded USR1/TERM before its process
  // group is SIGKILLed (the run is then preempted and resumes from its newest announced checkpoint). A
  // child hung in a collective would otherwise hold the stop until Slurm's own kill. Seconds, > 0.
  double stop_timeout_s = 120;
};

struct Sweep {
  std::string path;
  std::string name;  // [sweep] name, default: the file's stem
  // [sweep] backend = "torch" | "simulate" | "command"; empty when the file does not say (`moesweep run
  // --backend` decides, torch by default). With "command", [backend] command is required and [data] is
  // optional (the user's trainer reads its own data; given, {train} and {val} pass it on).
  std::string backend;
  CommandTemplate command;
  Resources resources;
  // [store] journal = "auto" | "wal" | "rollback": the database's journal (db/journal.h: auto is a
  // rollback journal on a network file system, WAL elsewhere; MOESWEEP_JOURNAL overrides it).
  db::Journal journal = db::Journal::Auto;
  std::vector<ExpandedRun> runs;  // canonical order: by FLOPs, then N_act, E, D, kind, key

  // load_sweep_file refuses (InputError, naming the file, line and key) a sweep whose grid points add up
  // to more tokens than int64 holds, so these never overflow for a loaded sweep; for one built by hand
  // they throw std::overflow_error rather than wrap.
  std::int64_t total_tokens() const;          // Σ D over the runs that are grid points (not trunks)
  std::int64_t total_trained_tokens() const;  // Σ trained_tokens over every run, trunks included
};

trainer::RunConfig load_run_file(const std::string& path);
Sweep load_sweep_file(const std::string& path);

// A run's specification, the canonical JSON its key hashes (keys sorted, no whitespace), and the key
// itself. The specification holds what the user wrote (the sweep's defaults and the grid point's
// values; the same value written as 2e9 or 2_000_000_000 is the same), never a value a rule derives
// from it by floating-point arithmetic: with lr = "auto" (config.train.lr_auto) the learning rate is
// the rule's name and version, trainer::kAutoLearningRateRule, and config.train.lr is not read, because
// the rate trainer::auto_learning_rate computes can differ in its last bit from build to build (fused
// multiply-add, another libm) and the key must not. So a grid point has the same key on every machine
// and build. A run whose learning rate is written as a number keeps the key it had before the rule got
// a version. `branching` ("" for an independent run, "cooldown" for a branch, "cooldown-trunk" for a
// trunk) becomes a top-level key when given, so a branch and the equivalent independent run have
// different keys; a trunk's train.tokens is its largest branch point (an exact integer, the same on
// every build).
std::string canonical_json(const trainer::RunConfig& config, const std::string& branching = "");
std::string run_key_of(const trainer::RunConfig& config, const std::string& branching = "");

// The row the store keeps for an expanded run.
db::RunSpec to_run_spec(const ExpandedRun& run);

// "80GB", "24GiB", "512MB", or a plain byte count → bytes. Throws InputError on anything else.
std::int64_t parse_bytes(const std::string& text);

}  // namespace moesweep::orchestrator
