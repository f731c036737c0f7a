// moesweep submit SWEEP.toml --db FILE [--nodes N] [--ranks-per-node K] [--time HH:MM:SS] ... [--dry-run]:
// renders the requeue-safe batch script (slurm/moesweep.sbatch) and hands it to sbatch, after checking
// the sweep, the layout and the partition; registers the sweep and records the job id in the store.
// Idempotent: while the recorded job is still queued or running, a second submit submits nothing.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "moesweep/db/store.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/slurm_submit.h"
#include "moesweep/orchestrator/sweep_spec.h"

namespace moesweep::cli {
namespace {

namespace fs = std::filesystem;
namespace slurm = orchestrator::slurm;

struct SubmitCli {
  slurm::SubmitOptions options;
  bool dry_run = false;
  bool force = false;
};

std::string absolute(const std::string& path) { return fs::absolute(path).lexically_normal().string(); }

std::string read_template(const std::string& path) {
  if (path.empty()) return slurm::builtin_template();
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot read the template");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string one_line(const std::string& text) {
  std::string s = text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

void run_submit(const SubmitCli& cli) {
  const auto& o = cli.options;
  // 1. Everything that needs no Slurm and no database: the sweep, the layout, the time, the template.
  const orchestrator::Sweep sweep = orchestrator::load_sweep_file(o.sweep_path);
  slurm::validate_options(o);
  const fs::path db_dir = fs::absolute(o.db_path).parent_path();
  if (!fs::is_directory(db_dir)) throw InputError("--db: directory " + db_dir.string() + " does not exist");

  slurm::ScriptContext context;
  context.sweep_name = sweep.name;
  context.moesweep_binary = fs::read_symlink("/proc/self/exe").string();
  context.sweep_path = absolute(o.sweep_path);
  context.db_path = absolute(o.db_path);
  context.workdir = absolute(o.workdir);
  context.submit_dir = fs::current_path().string();
  const std::string script = slurm::render_batch_script(read_template(o.template_path), o, context);
  if (cli.dry_run) {
    std::cout << script;
    return;
  }

  // 2. Slurm itself: sbatch on the PATH, the partition known to it.
  if (!slurm::on_path("sbatch"))
    throw InputError("sbatch is not on the PATH: run this on a Slurm login node (or use --dry-run)");
  if (!o.partition.empty()) {
    const auto known = slurm::partitions();
    if (std::find(known.begin(), known.end(), o.partition) == known.end()) {
      std::string list;
      for (const auto& p : known) list += (list.empty() ? "" : ", ") + p;
      throw InputError("--partition: Slurm has no partition '" + o.partition + "' (it has: " + list + ")");
    }
  }

  // 3. Idempotence: the job recorded for this sweep, if it is still queued or running.
  if (fs::exists(o.db_path)) {
    const db::Store store = db::Store::open(o.db_path, db::Store::Mode::ReadOnly);
    if (const auto info = store.sweep(sweep.name); info && !info->slurm_job_id.empty()) {
      const auto state = slurm::job_state(info->slurm_job_id);
      if (state && slurm::job_state_active(*state)) {
        if (!cli.force) {
          std::cerr << "moesweep: sweep '" << sweep.name << "' is already submitted as Slurm job "
                    << info->slurm_job_id << " (" << *state << "); not submitting it again (--force does)\n";
          std::cout << info->slurm_job_id << "\n";
          return;
        }
        std::cerr << "moesweep: --force: submitting although Slurm job " << info->slurm_job_id << " ("
                  << *state << ") works on sweep '" << sweep.name << "'\n";
      }
    }
  }

  // 4. Submit, then register the sweep and its runs and record the job (the job registers them too;
  //    both are idempotent by run key).
  const auto result = slurm::run_command({"sbatch", "--parsable"}, script);
  if (result.status != 0) {
    // sbatch refuses what Slurm does not accept (account, QoS, layout): that is the user's input.
    throw InputError("sbatch refused the job: " + one_line(result.err.empty() ? result.out : result.err));
  }
  const std::string job_id = slurm::parse_job_id(result.out);
  std::vector<db::RunSpec> specs;
  specs.reserve(sweep.runs.size());
  for (const auto& run : sweep.runs) specs.push_back(orchestrator::to_run_spec(run));
  db::Store store = db::Store::open(o.db_path);
  store.register_sweep(sweep.name, context.sweep_path, specs);
  store.set_slurm_job(sweep.name, job_id);
  store.add_event("submit", "Slurm job " + job_id + " for sweep '" + sweep.name + "'");
  std::cerr << "moesweep: submitted sweep '" << sweep.name << "' (" << sweep.runs.size()
            << " runs) as Slurm job " << job_id << "; log " << context.submit_dir << "/"
            << slurm::job_name(sweep.name) << "-" << job_id << ".out\n";
  std::cout << job_id << "\n";
}

}  // namespace

void add_submit(CLI::App& app) {
  auto* cmd = app.add_subcommand("submit", "Submit a sweep to Slurm as a requeue-safe batch job");
  auto cli = std::make_shared<SubmitCli>();
  auto& o = cli->options;
  cmd->add_option("sweep", o.sweep_path, "Sweep file (TOML)")->required();
  cmd->add_option("--db", o.db_path, "Sweep database (SQLite; created if missing)")->required();
  cmd->add_option("--workdir", o.workdir, "Checkpoints go to WORKDIR/<run_key>/")->capture_default_str();
  cmd->add_option("--nodes", o.nodes, "Nodes")->capture_default_str();
  cmd->add_option("--ranks-per-node", o.ranks_per_node,
                  "MPI ranks per node (rank 0 coordinates, the rest train)")
      ->capture_default_str();
  cmd->add_option("--gpus-per-node", o.gpus_per_node, "GPUs per node (the runs train with --device cuda)");
  cmd->add_option("--cpus-per-rank", o.cpus_per_rank, "CPUs per rank (also the ranks' intra-op threads)");
  cmd->add_option("--time", o.time, "Time limit: HH:MM:SS, D-HH:MM:SS, ... (default: the partition's)");
  cmd->add_option("--partition", o.partition, "Slurm partition");
  cmd->add_option("--account", o.account, "Slurm account");
  cmd->add_option("--qos", o.qos, "Slurm QoS");
  cmd->add_option("--signal-margin", o.signal_margin_s, "Seconds before the time limit that Slurm sends USR1")
      ->capture_default_str();
  cmd->add_option("--launcher", o.launcher,
                  "auto (srun --mpi=pmix where available, else mpirun), srun or mpirun")
      ->capture_default_str();
  cmd->add_option("--template", o.template_path,
                  "Batch script template (default: the built-in slurm/moesweep.sbatch)");
  cmd->add_option("--run-arg", o.run_args,
                  "Pass an argument on to moesweep run (repeat; e.g. --run-arg=--backend --run-arg=simulate)")
      ->allow_extra_args(false);
  cmd->add_flag("--dry-run", cli->dry_run, "Print the batch script instead of submitting it");
  cmd->add_flag("--force", cli->force, "Submit even while the sweep's recorded job is queued or running");
  cmd->callback([cli] { run_submit(*cli); });
}

}  // namespace moesweep::cli
