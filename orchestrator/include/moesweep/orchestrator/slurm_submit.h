#pragma once
// `moesweep submit`: the batch script (rendered from slurm/moesweep.sbatch, built into the binary) and
// the small pieces of Slurm it talks to (sbatch, sinfo, squeue, sacct), run as child processes.
//
// The script asks for `--requeue`, `--signal=B:USR1@<margin>` and `--open-mode=append`, launches
// `moesweep run` with `srun --mpi=pmix` (or mpirun inside the allocation), forwards USR1/TERM to it and
// requeues the job itself when the run exits kExitPreempted, so a time limit or a preemption costs only
// the minutes since the last checkpoint.
#include <optional>
#include <string>
#include <vector>

namespace moesweep::orchestrator::slurm {

struct SubmitOptions {
  std::string sweep_path;
  std::string db_path;
  std::string workdir = "runs";  // `moesweep run --workdir`: checkpoints
  int nodes = 1;
  int ranks_per_node = 2;  // MPI ranks per node; rank 0 (on the first node) coordinates and never trains
  int gpus_per_node = 0;   // > 0: --gpus-per-node and `run --device cuda`
  int cpus_per_rank = 0;   // > 0: --cpus-per-task and `run --threads`
  std::string time;        // Slurm time limit ("HH:MM:SS", "D-HH:MM", ...); empty: the partition's
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

// Layout numbers, launcher, the time limit against the signal margin. Throws InputError.
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

// The job's state from squeue, else sacct; nullopt when neither is on the PATH or knows the job.
std::optional<std::string> job_state(const std::string& job_id);

// Partition names sinfo knows (hidden ones included). Throws std::runtime_error when sinfo fails.
std::vector<std::string> partitions();

}  // namespace moesweep::orchestrator::slurm
