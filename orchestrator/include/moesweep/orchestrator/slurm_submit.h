#pragma once
// `moesweep submit`: the batch script (rendered from slurm/moesweep.sbatch, built into the binary) and
// the small pieces of Slurm it talks to (sbatch, sinfo, squeue, sacct), run as child processes.
//
// The script asks for `--requeue`, `--signal=B:USR1@<margin>` and `--open-mode=append`, launches
// `moesweep run` with `srun --mpi=pmix` (or mpirun inside the allocation), forwards USR1/TERM to it and
// requeues the job itself when the run exits kExitPreempted, so a time limit or a preemption costs only
// the minutes since the last checkpoint.
//
// Slurm's silences are not answers. A busy controller can time out an sbatch that did queue the job,
// and a squeue that would have listed it: sbatch's failures are sorted into refusals (Slurm said no:
// nothing was queued) and unknown outcomes (no answer: the job may be queued), and a job's state is
// active, finished, or unknown. `submit` submits only when no job of the sweep may be queued or running.
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moesweep::orchestrator::slurm {

struct SubmitOptions {
  std::string sweep_path;
  std::string db_path;
  std::string workdir = "runs";  // `moesweep run --workdir`: checkpoints
  int nodes = 1;
  // MPI ranks per node; rank 0 (on the first node) coordinates and never trains. Unset: 2 without GPUs;
  // with GPUs one training rank per GPU on every node, plus the coordinator on the first (task_layout).
  std::optional<int> ranks_per_node;
  int gpus_per_node = 0;  // > 0: --gpus-per-node and `run --device cuda --gpus-per-node`
  int cpus_per_rank = 0;  // > 0: --cpus-per-task and `run --threads`
  std::string time;       // Slurm time limit ("HH:MM:SS", "D-HH:MM", ...); empty: the partition's
  std::string partition, account, qos;
  int signal_margin_s = 300;      // USR1 this long before the time limit
  std::string launcher = "auto";  // auto (srun --mpi=pmix if this Slurm has it, else mpirun) | srun | mpirun
  std::string template_path;      // empty: the built-in template
  std::vector<std::string> run_args;  // more arguments for `moesweep run` (e.g. --backend simulate)
};

// What the rendering needs besides the options: resolved absolute paths and the sweep's name.
struct ScriptContext {
  std::string sweep_name;
  std::string moesweep_binary;  // absolute
  std::string sweep_path;       // absolute
  std::string db_path;          // absolute
  std::string workdir;          // absolute
  std::string submit_dir;       // the job's working directory (relative data paths resolve here)
};

// Slurm's time formats: "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S" → seconds. Throws InputError.
long parse_slurm_time(const std::string& text);

// The tasks the job asks Slurm for. Rank 0 coordinates on the first node and never trains; each other
// rank trains on a GPU of its own, the node's GPUs taken in the order of the training ranks' node-local
// ranks (`moesweep run`), so no node may have more training ranks than --gpus-per-node.
//   without GPUs:               ranks_per_node (default 2) on every node;
//   GPUs G, ranks_per_node unset: G + 1 ranks on the first node, G on every other: `--ntasks=nodes·G+1`
//                               with `--ntasks-per-node=G+1`, a maximum per node when --ntasks is given
//                               (sbatch(1)). Slurm (22.05, measured) then allocates G + 1 slots on every
//                               node (SLURM_TASKS_PER_NODE) and keeps nodes·G+1 in SLURM_NTASKS; srun
//                               lays those out in blocks, one more on the first node (ranks 0..G), and
//                               the batch script spells the same layout out for mpirun (-np, --host),
//                               which would otherwise fill every slot;
//   GPUs G, ranks_per_node K:   K on every node, refused unless K − 1 <= G (the first node) and, on more
//                               than one node, K <= G (the others).
struct TaskLayout {
  int nodes = 1;
  int ntasks = 1;           // every rank of the job
  int ntasks_per_node = 1;  // the first node's ranks, the most of any node
  bool uneven() const { return ntasks != nodes * ntasks_per_node; }  // render --ntasks too
};
// Throws InputError (one line: the counts, and a layout that fits) for a layout that puts more training
// ranks on a node than it has GPUs, or numbers out of range.
TaskLayout task_layout(const SubmitOptions& options);

// Layout numbers (task_layout), launcher, the time limit against the signal margin. Throws InputError.
void validate_options(const SubmitOptions& options);

// The built-in template (slurm/moesweep.sbatch at build time).
const std::string& builtin_template();

// "moesweep-<sweep name>", with characters unusual in a file name replaced: the job's name and log.
std::string job_name(const std::string& sweep_name);

// Fills the template's {{NAME}} placeholders. Throws InputError for an unknown placeholder or a path
// that an #SBATCH line cannot carry (whitespace).
std::string render_batch_script(const std::string& template_text, const SubmitOptions& options,
                                const ScriptContext& context);

// 'single-quoted' for bash, unless the word needs no quoting.
std::string shell_quote(const std::string& word);

// "12345" or "12345;cluster" (sbatch --parsable) → "12345". Throws std::runtime_error otherwise.
std::string parse_job_id(const std::string& sbatch_output);

// A state squeue/sacct prints (RUNNING, PENDING, REQUEUED, ...) that means the job will still run.
bool job_state_active(const std::string& state);

// Child processes.
struct CommandResult {
  int status = -1;  // exit status; 127 when the program could not be run
  std::string out;
  std::string err;
};
bool on_path(const std::string& program);
CommandResult run_command(const std::vector<std::string>& argv, const std::string& stdin_text = "");

// What Slurm says about a job: active (queued or running: it will still run), finished, or unknown
// (squeue and sacct gave no answer). Only an answer is taken as one: a squeue that times out says
// nothing about the job.
struct JobStatus {
  enum class Kind { Active, Finished, Unknown };
  Kind kind = Kind::Unknown;
  std::string state;  // squeue's or sacct's word (PENDING, RUNNING, COMPLETED, ...); may be empty when
                      // Finished (squeue no longer lists the job and no sacct knows it)
  std::string why;    // Unknown: why not (squeue's and sacct's error lines), one line
};
// squeue --jobs: listed → its state; "Invalid job id specified" (or nothing listed) → no longer in the
// queue: sacct's final state where sacct answers, else Finished. squeue failing otherwise (a timeout,
// not on the PATH) → sacct's state where sacct answers with one, else Unknown.
JobStatus job_status(const std::string& job_id);

// job_status's state word, where Slurm gave one (for display); nullopt otherwise, and for "".
std::optional<std::string> job_state(const std::string& job_id);

// The jobs squeue lists under a job name for the calling user (`squeue --name --user`, every state
// squeue still shows), oldest job id first; `answered` false (and `why`) when squeue gave no answer.
struct NamedJobs {
  bool answered = false;
  std::vector<std::pair<std::string, std::string>> jobs;  // (job id, state)
  std::string why;
};
NamedJobs jobs_named(const std::string& job_name);

// What an `sbatch --parsable` run says about the job. Queued: it printed a job id (whatever its exit
// status). Refused: Slurm or sbatch said no (an invalid account, partition, QoS, limit, option or
// script): nothing was queued. Unknown: no answer (a timeout, the controller unreachable, sbatch killed
// by a signal, or a success without a job id): the job may or may not be queued.
struct SbatchOutcome {
  enum class Kind { Queued, Refused, Unknown };
  Kind kind = Kind::Unknown;
  std::string job_id;  // Queued
  std::string detail;  // sbatch's error line (Refused, Unknown), one line
};
SbatchOutcome classify_sbatch(const CommandResult& result);

// Partition names sinfo knows (hidden ones included). Throws std::runtime_error when sinfo fails.
std::vector<std::string> partitions();

}  // namespace moesweep::orchestrator::slurm
