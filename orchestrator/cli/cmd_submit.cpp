// moesweep submit SWEEP.toml --db FILE [--nodes N] [--ranks-per-node K] [--time HH:MM:SS] ... [--dry-run]:
// renders the requeue-safe batch script (slurm/moesweep.sbatch) and hands it to sbatch, after checking
// the sweep, the layout and the partition; registers the sweep and records what sbatch answered (the job
// id, or an unknown outcome) in the store. A sweep gets one job at a time: while a job of the sweep may be
// queued or running (Slurm says so, or cannot say), `submit` refuses (exit 2) unless --force.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
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

// Why a job of the sweep may be queued or running, if one may: what `submit` must not double.
struct Blocker {
  std::string what;   // for "sweep 'x' <what>": "is already submitted as Slurm job 17 (RUNNING)", ...
  std::string check;  // the squeue command that tells
};

// Looks at what the store recorded for the sweep and asks Slurm about it. When the last sbatch's outcome
// is unknown and squeue answers, the job is looked up by its name; the one found is recorded as queued.
std::optional<Blocker> job_that_may_run(db::Store& store, const std::string& sweep) {
  const std::string name = slurm::job_name(sweep);
  const auto info = store.sweep(sweep);
  if (!info) return std::nullopt;
  const auto submissions = store.submissions(sweep);
  std::string job_id = info->slurm_job_id;  // also a job recorded before submissions were (schema v4)
  if (!submissions.empty() && submissions.back().outcome == "unknown") {
    const db::Submission& unknown = submissions.back();
    const auto named = slurm::jobs_named(name);
    const std::string after = "an unknown sbatch outcome at " + unknown.at;
    if (!named.answered)
      return Blocker{"may already be queued: " + after + " (" + one_line(unknown.detail) +
                         "), and squeue cannot say (" + named.why + ")",
                     "squeue --me --name " + name};
    // squeue answered. The newest job of this name that is newer than the sweep's last known job is the
    // one the unknown sbatch queued (job ids count up); any active job of this name blocks.
    const auto newer = [&](const std::string& id) {
      return job_id.empty() ||
             std::strtoll(id.c_str(), nullptr, 10) > std::strtoll(job_id.c_str(), nullptr, 10);
    };
    std::optional<std::pair<std::string, std::string>> found, active;
    for (const auto& job : named.jobs) {
      if (newer(job.first)) found = job;
      if (slurm::job_state_active(job.second)) active = job;
    }
    if (found)
      store.record_submission(sweep, db::Submission{0, found->first, "queued",
                                                    "found by its name " + name + " after " + after, ""});
    if (active)
      return Blocker{"is already submitted as Slurm job " + active->first + " (" + active->second + ")" +
                         (found && found->first == active->first ? ", found by its name after " + after : ""),
                     "squeue --jobs " + active->first};
    if (found)
      std::cerr << "moesweep: " << after << " queued sweep '" << sweep << "' as Slurm job " << found->first
                << " (found by its name), which has ended (" << found->second << "); recorded\n";
    return std::nullopt;  // no job of this name in the queue: none of the sweep's jobs will run
  }
  if (job_id.empty()) return std::nullopt;
  const auto status = slurm::job_status(job_id);
  switch (status.kind) {
    case slurm::JobStatus::Kind::Active:
      return Blocker{"is already submitted as Slurm job " + job_id + " (" + status.state + ")",
                     "squeue --jobs " + job_id};
    case slurm::JobStatus::Kind::Unknown:
      return Blocker{
          "may still have Slurm job " + job_id + " queued or running: Slurm cannot say (" + status.why + ")",
          "squeue --jobs " + job_id};
    case slurm::JobStatus::Kind::Finished:
      break;
  }
  return std::nullopt;
}

std::vector<db::RunSpec> run_specs(const orchestrator::Sweep& sweep) {
  std::vector<db::RunSpec> specs;
  specs.reserve(sweep.runs.size());
  for (const auto& run : sweep.runs) specs.push_back(orchestrator::to_run_spec(run));
  return specs;
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

  // 3. One job per sweep: none while a job of the sweep may be queued or running, as far as Slurm can
  //    tell; when it cannot tell, none either. (--force overrides; the job's coordinator then still
  //    takes the sweep's lease, so two jobs never run the sweep at once.)
  if (fs::exists(o.db_path)) {
    db::Store store = db::Store::open(o.db_path, db::Store::Mode::ReadWrite, sweep.journal);
    if (const auto blocker = job_that_may_run(store, sweep.name)) {
      if (!cli.force)
        throw InputError("sweep '" + sweep.name + "' " + blocker->what +
                         "; not submitting it again (check with `" + blocker->check +
                         "`; --force submits anyway)");
      std::cerr << "moesweep: --force: submitting although sweep '" << sweep.name << "' " << blocker->what
                << "\n";
    }
  }

  // 4. Submit, then register the sweep and its runs and record what sbatch answered (the job registers
  //    them too; both are idempotent by run key).
  const auto outcome = slurm::classify_sbatch(slurm::run_command({"sbatch", "--parsable"}, script));
  if (outcome.kind == slurm::SbatchOutcome::Kind::Refused)  // nothing queued: the user's input
    throw InputError("sbatch refused the job: " + outcome.detail);
  db::Store store = db::Store::open(o.db_path, db::Store::Mode::ReadWrite, sweep.journal);
  store.register_sweep(sweep.name, context.sweep_path, run_specs(sweep));
  const std::string name = slurm::job_name(sweep.name);
  if (outcome.kind == slurm::SbatchOutcome::Kind::Unknown) {
    store.record_submission(sweep.name, db::Submission{0, "", "unknown", outcome.detail, ""});
    store.add_event("submit", "unknown sbatch outcome for sweep '" + sweep.name + "': " + outcome.detail);
    std::cerr << "moesweep: sbatch gave no answer for sweep '" << sweep.name << "' (" << outcome.detail
              << "): the job may or may not be queued; check with `squeue --me --name " << name
              << "`; recorded as unknown, so submit refuses until squeue shows whether it was (--force "
                 "submits anyway)\n";
    throw ExitStatus{1};
  }
  store.record_submission(sweep.name, db::Submission{0, outcome.job_id, "queued", "", ""});
  store.add_event("submit", "Slurm job " + outcome.job_id + " for sweep '" + sweep.name + "'");
  std::cerr << "moesweep: submitted sweep '" << sweep.name << "' (" << sweep.runs.size()
            << " runs) as Slurm job " << outcome.job_id << "; log " << context.submit_dir << "/" << name
            << "-" << outcome.job_id << ".out\n";
  std::cout << outcome.job_id << "\n";
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
  cmd->add_option(
      "--ranks-per-node", o.ranks_per_node,
      "MPI ranks per node; rank 0 coordinates, the rest train (default: 2; with --gpus-per-node G, "
      "G + 1 on the first node and G on each other, one training rank per GPU)");
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
  cmd->add_flag("--force", cli->force,
                "Submit even while a job of the sweep may be queued or running (or Slurm cannot say)");
  cmd->callback([cli] { run_submit(*cli); });
}

}  // namespace moesweep::cli
