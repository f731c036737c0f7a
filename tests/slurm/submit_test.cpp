// moesweep submit's pieces without Slurm: time limits, validation, the rendered batch script, job ids
// and states, the child-process helper.
#include <gtest/gtest.h>

#include <string>

#include "moesweep/input_error.h"
#include "moesweep/orchestrator/slurm_submit.h"

namespace slurm = moesweep::orchestrator::slurm;
using moesweep::InputError;

namespace {

slurm::ScriptContext context() {
  slurm::ScriptContext c;
  c.sweep_name = "smoke";
  c.moesweep_binary = "/opt/moe sweep/bin/moesweep";
  c.sweep_path = "/home/u/sweeps/smoke.toml";
  c.db_path = "/home/u/sweep.db";
  c.workdir = "/home/u/runs";
  c.submit_dir = "/home/u";
  return c;
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

}  // namespace

TEST(SlurmTime, AllOfSlurmsFormats) {
  EXPECT_EQ(slurm::parse_slurm_time("30"), 30 * 60);
  EXPECT_EQ(slurm::parse_slurm_time("5:30"), 5 * 60 + 30);
  EXPECT_EQ(slurm::parse_slurm_time("01:00:00"), 3600);
  EXPECT_EQ(slurm::parse_slurm_time("48:00:00"), 48 * 3600);
  EXPECT_EQ(slurm::parse_slurm_time("2-00"), 2 * 86400);
  EXPECT_EQ(slurm::parse_slurm_time("1-12:30"), 86400 + 12 * 3600 + 30 * 60);
  EXPECT_EQ(slurm::parse_slurm_time("1-00:00:10"), 86400 + 10);
}

TEST(SlurmTime, RejectsWhatSlurmWouldNot) {
  for (const char* bad : {"", "abc", "1:2:3:4", "-1", "1h", "00:00:00", "1:-5", "1-", "99999999999"})
    EXPECT_THROW(slurm::parse_slurm_time(bad), InputError) << bad;
}

TEST(SubmitValidation, TimeMustExceedTheSignalMargin) {
  slurm::SubmitOptions o;
  o.signal_margin_s = 300;
  o.time = "00:05:00";  // exactly the margin: the warning would come at the start
  EXPECT_THROW(slurm::validate_options(o), InputError);
  o.time = "00:04:00";
  try {
    slurm::validate_options(o);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), "signal margin")) << e.what();
  }
  o.time = "00:05:01";
  EXPECT_NO_THROW(slurm::validate_options(o));
  o.time.clear();  // the partition's limit
  EXPECT_NO_THROW(slurm::validate_options(o));
}

TEST(SubmitValidation, Layout) {
  slurm::SubmitOptions o;
  o.nodes = 0;
  EXPECT_THROW(slurm::validate_options(o), InputError);
  o.nodes = 1;
  o.ranks_per_node = 0;
  EXPECT_THROW(slurm::validate_options(o), InputError);
  o.ranks_per_node = 2;
  o.launcher = "ssh";
  EXPECT_THROW(slurm::validate_options(o), InputError);
  o.launcher = "mpirun";
  o.partition = "two words";
  EXPECT_THROW(slurm::validate_options(o), InputError);
  o.partition = "gpu";
  EXPECT_NO_THROW(slurm::validate_options(o));
}

TEST(BatchScript, RequeueSafeDirectivesAndLaunch) {
  slurm::SubmitOptions o;
  o.nodes = 2;
  o.gpus_per_node = 4;  // --ranks-per-node left out: 5 ranks on the first node, 4 on the second
  o.cpus_per_rank = 8;
  o.time = "12:00:00";
  o.partition = "gpu";
  o.account = "proj42";
  o.qos = "normal";
  o.signal_margin_s = 600;
  const std::string s = slurm::render_batch_script(slurm::builtin_template(), o, context());
  EXPECT_EQ(s.rfind("#!/usr/bin/env bash\n", 0), 0u);
  for (const char* line :
       {"#SBATCH --job-name=moesweep-smoke\n",
        "#SBATCH --requeue\n",
        "#SBATCH --signal=B:USR1@600\n",
        "#SBATCH --open-mode=append\n",
        "#SBATCH --output=/home/u/moesweep-smoke-%j.out\n",
        "#SBATCH --chdir=/home/u\n",
        "#SBATCH --nodes=2\n#SBATCH --ntasks=9\n#SBATCH --ntasks-per-node=5\n",
        "#SBATCH --cpus-per-task=8\n",
        "#SBATCH --gpus-per-node=4\n",
        "#SBATCH --time=12:00:00\n",
        "#SBATCH --partition=gpu\n",
        "#SBATCH --account=proj42\n",
        "#SBATCH --qos=normal\n",
        "MOESWEEP='/opt/moe sweep/bin/moesweep'\n",
        "RUN=(\"$MOESWEEP\" run /home/u/sweeps/smoke.toml --db /home/u/sweep.db --workdir /home/u/runs "
        "--device cuda --gpus-per-node 4 --threads 8",
        "LAUNCHER=${MOESWEEP_LAUNCHER:-auto}\n",
        "srun --mpi=pmix",
        "scontrol requeue \"$SLURM_JOB_ID\"",
        "trap 'forward USR1' USR1",
        "trap 'forward TERM' TERM"})
    EXPECT_TRUE(contains(s, line)) << "missing: " << line << "\n" << s;
  EXPECT_FALSE(contains(s, "{{")) << s;
  // sbatch reads #SBATCH lines only up to the first command.
  const auto last_directive = s.rfind("#SBATCH");
  const auto first_command = s.find("\nset -u");
  EXPECT_LT(last_directive, first_command);
  // Nothing root-only reaches users: such flags come from the environment (MOESWEEP_LAUNCH_ARGS).
  EXPECT_FALSE(contains(s, "allow-run-as-root"));
}

// Rank 0 coordinates on the first node and never trains; every other rank needs a GPU of its own.
TEST(GpuLayout, DefaultIsOneTrainingRankPerGpuPlusTheCoordinator) {
  slurm::SubmitOptions o;
  o.gpus_per_node = 8;
  for (int nodes : {1, 2, 4}) {
    o.nodes = nodes;
    const auto l = slurm::task_layout(o);
    EXPECT_EQ(l.nodes, nodes);
    EXPECT_EQ(l.ntasks, nodes * 8 + 1);
    EXPECT_EQ(l.ntasks_per_node, 9);  // Slurm's maximum: the first node gets 9, the others 8
    EXPECT_EQ(l.uneven(), nodes > 1);
  }
  o.nodes = 2;
  const std::string s = slurm::render_batch_script(slurm::builtin_template(), o, context());
  EXPECT_TRUE(contains(s,
                       "#SBATCH --nodes=2\n#SBATCH --ntasks=17\n#SBATCH --ntasks-per-node=9\n"
                       "#SBATCH --gpus-per-node=8\n"))
      << s;
  EXPECT_TRUE(contains(s, "--workdir /home/u/runs --device cuda --gpus-per-node 8")) << s;
}

TEST(GpuLayout, OneNodeNineRanksEightGpusRendersAsBefore) {
  slurm::SubmitOptions o;
  o.ranks_per_node = 9;
  o.gpus_per_node = 8;
  const std::string s = slurm::render_batch_script(slurm::builtin_template(), o, context());
  EXPECT_TRUE(contains(s, "#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=9\n#SBATCH --gpus-per-node=8\n"))
      << s;
  EXPECT_FALSE(contains(s, "#SBATCH --ntasks=")) << s;
}

TEST(GpuLayout, MoreTrainingRanksThanGpusOnANodeIsRefused) {
  slurm::SubmitOptions o;
  o.nodes = 4;  // the README's layout: nodes 2..4 would have 9 training ranks for 8 GPUs
  o.ranks_per_node = 9;
  o.gpus_per_node = 8;
  try {
    slurm::validate_options(o);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_TRUE(contains(m, "--ranks-per-node 9 with --gpus-per-node 8 on 4 nodes")) << m;
    EXPECT_TRUE(contains(m, "9 training ranks for 8 GPUs")) << m;
    EXPECT_TRUE(contains(m, "33 ranks: 9 on the first node, 8 on each other")) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  EXPECT_THROW(slurm::render_batch_script(slurm::builtin_template(), o, context()), InputError);
  o.nodes = 1;  // one node: 8 training ranks and the coordinator
  EXPECT_NO_THROW(slurm::validate_options(o));
  o.ranks_per_node = 10;  // 9 training ranks on the only node
  try {
    slurm::validate_options(o);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), "the first node would have 9 training ranks")) << e.what();
    EXPECT_TRUE(contains(e.what(), "at most --ranks-per-node 9")) << e.what();
  }
  o.nodes = 3;  // 8 everywhere: 7 trainers next to the coordinator, 8 on the others
  o.ranks_per_node = 8;
  const auto l = slurm::task_layout(o);
  EXPECT_EQ(l.ntasks, 24);
  EXPECT_FALSE(l.uneven());
  o.ranks_per_node = 2;  // fewer trainers than GPUs is allowed
  EXPECT_NO_THROW(slurm::validate_options(o));
}

TEST(GpuLayout, WithoutGpusTheRanksPerNodeAreTheUsersOrTwo) {
  slurm::SubmitOptions o;
  o.nodes = 3;
  auto l = slurm::task_layout(o);
  EXPECT_EQ(l.ntasks_per_node, 2);
  EXPECT_EQ(l.ntasks, 6);
  o.ranks_per_node = 17;  // CPU ranks: no GPU to share
  l = slurm::task_layout(o);
  EXPECT_EQ(l.ntasks, 51);
  EXPECT_FALSE(l.uneven());
}

TEST(BatchScript, MinimalLayoutAndPassThroughArguments) {
  slurm::SubmitOptions o;
  o.launcher = "mpirun";
  o.run_args = {"--backend", "simulate", "--time-scale", "0.5"};
  const std::string s = slurm::render_batch_script(slurm::builtin_template(), o, context());
  EXPECT_TRUE(contains(s, "#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=2\nset -u")) << s;
  EXPECT_FALSE(contains(s, "--time="));
  EXPECT_FALSE(contains(s, "--partition="));
  EXPECT_TRUE(contains(s, "--workdir /home/u/runs --backend simulate --time-scale 0.5")) << s;
  EXPECT_TRUE(contains(s, "LAUNCHER=${MOESWEEP_LAUNCHER:-mpirun}\n"));
}

TEST(BatchScript, CustomTemplates) {
  slurm::SubmitOptions o;
  EXPECT_EQ(
      slurm::render_batch_script("#!/bin/sh\n#SBATCH -J {{JOB_NAME}}\n{{MOESWEEP}} run {{RUN_ARGS}}\n", o,
                                 context()),
      "#!/bin/sh\n#SBATCH -J moesweep-smoke\n'/opt/moe sweep/bin/moesweep' run /home/u/sweeps/smoke.toml "
      "--db /home/u/sweep.db --workdir /home/u/runs\n");
  o.template_path = "site.sbatch";
  try {
    slurm::render_batch_script("#!/bin/sh\n\n{{NODE_COUNT}}\n", o, context());
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), "site.sbatch:3")) << e.what();
    EXPECT_TRUE(contains(e.what(), "{{NODE_COUNT}}")) << e.what();
  }
  auto c = context();
  c.submit_dir = "/home/u/my runs";  // an #SBATCH line cannot carry it
  EXPECT_THROW(slurm::render_batch_script(slurm::builtin_template(), o, c), InputError);
}

TEST(BatchScript, SweepNamesBecomeSafeJobNames) {
  EXPECT_EQ(slurm::job_name("paper"), "moesweep-paper");
  EXPECT_EQ(slurm::job_name("a b/c$d"), "moesweep-a_b_c_d");
}

TEST(Shell, Quoting) {
  EXPECT_EQ(slurm::shell_quote("/a/b.toml"), "/a/b.toml");
  EXPECT_EQ(slurm::shell_quote("--time-scale=1e-5"), "--time-scale=1e-5");
  EXPECT_EQ(slurm::shell_quote("a b"), "'a b'");
  EXPECT_EQ(slurm::shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(slurm::shell_quote("$HOME"), "'$HOME'");
  EXPECT_EQ(slurm::shell_quote(""), "''");
}

TEST(JobIds, SbatchParsable) {
  EXPECT_EQ(slurm::parse_job_id("12345\n"), "12345");
  EXPECT_EQ(slurm::parse_job_id("678;cluster\n"), "678");
  EXPECT_THROW(slurm::parse_job_id("Submitted batch job 5"), std::runtime_error);
  EXPECT_THROW(slurm::parse_job_id(""), std::runtime_error);
}

TEST(JobStates, ActiveOrNot) {
  for (const char* s :
       {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUE_HOLD"})
    EXPECT_TRUE(slurm::job_state_active(s)) << s;
  for (const char* s : {"COMPLETED", "CANCELLED by 0", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", ""})
    EXPECT_FALSE(slurm::job_state_active(s)) << s;
  EXPECT_TRUE(slurm::job_state_active(" RUNNING\n"));
}

TEST(ChildProcess, OutputsStatusAndStdin) {
  auto r = slurm::run_command({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.status, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  std::string big(200000, 'x');  // more than a pipe holds, both ways
  r = slurm::run_command({"cat"}, big);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out.size(), big.size());
  r = slurm::run_command({"moesweep-no-such-program"});
  EXPECT_EQ(r.status, 127);
  EXPECT_TRUE(slurm::on_path("sh"));
  EXPECT_FALSE(slurm::on_path("moesweep-no-such-program"));
}

TEST(JobStates, SilentWithoutAJob) {
  EXPECT_EQ(slurm::job_state(""), std::nullopt);
  EXPECT_EQ(slurm::job_status("").kind, slurm::JobStatus::Kind::Unknown);
}

namespace {
slurm::SbatchOutcome sbatch(int status, const std::string& out, const std::string& err) {
  slurm::CommandResult r;
  r.status = status;
  r.out = out;
  r.err = err;
  return slurm::classify_sbatch(r);
}
}  // namespace

TEST(SbatchOutcomes, AJobIdIsQueued) {
  auto o = sbatch(0, "4242\n", "");
  EXPECT_EQ(o.kind, slurm::SbatchOutcome::Kind::Queued);
  EXPECT_EQ(o.job_id, "4242");
  o = sbatch(1, "4243;cluster\n", "sbatch: error: something after the job was queued\n");
  EXPECT_EQ(o.kind, slurm::SbatchOutcome::Kind::Queued);
  EXPECT_EQ(o.job_id, "4243");
}

TEST(SbatchOutcomes, WhatSlurmRejectedIsRefused) {
  for (const char* err :
       {"sbatch: error: Batch job submission failed: Invalid account or account/partition combination "
        "specified",
        "sbatch: error: Batch job submission failed: Invalid partition name specified",
        "sbatch: error: Batch job submission failed: Invalid qos specification",
        "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, "
        "user's "
        "size and/or time limits)",
        "sbatch: error: Batch job submission failed: Requested node configuration is not available",
        "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds "
        "some limit)",
        "sbatch: error: Invalid --time specification",
        "sbatch: error: This does not look like a batch script."}) {
    const auto o = sbatch(1, "", std::string(err) + "\n");
    EXPECT_EQ(o.kind, slurm::SbatchOutcome::Kind::Refused) << err;
    EXPECT_EQ(o.detail, err);
  }
  EXPECT_EQ(sbatch(127, "", "").kind, slurm::SbatchOutcome::Kind::Refused);  // never ran
}

TEST(SbatchOutcomes, SilenceIsUnknown) {
  for (const char* err :
       {"sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
        "sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received",
        "sbatch: error: Batch job submission failed: Connection refused",
        "sbatch: error: Batch job submission failed: Transport endpoint is not connected",
        "sbatch: error: Batch job submission failed: Slurm backup controller in standby mode",
        "sbatch: error: Batch job submission failed: Communication connection failure"}) {
    EXPECT_EQ(sbatch(1, "", std::string(err) + "\n").kind, slurm::SbatchOutcome::Kind::Unknown) << err;
  }
  auto o = sbatch(1, "",
                  "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n"
                  "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n");
  EXPECT_EQ(o.kind, slurm::SbatchOutcome::Kind::Unknown);
  EXPECT_EQ(o.detail.find('\n'), std::string::npos) << o.detail;  // one line
  o = sbatch(128 + 15, "", "");  // killed (a timeout wrapper, the OOM killer)
  EXPECT_EQ(o.kind, slurm::SbatchOutcome::Kind::Unknown);
  EXPECT_TRUE(contains(o.detail, "signal 15")) << o.detail;
  EXPECT_EQ(sbatch(0, "Submitted batch job 5\n", "").kind, slurm::SbatchOutcome::Kind::Unknown);
}
