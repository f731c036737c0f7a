#pragma once
// The command backend: bring your own trainer. For each attempt of a run, every rank of the run's gang
// starts the sweep's [backend] command (placeholders filled in: command_backend_protocol.h) as a child in
// a process group of its own, reads the protocol from its stdout and reports through the same
// WorkObserver and WorkResult as the native trainer, so the coordinator, the store, retries, preemption
// and cooldown branches are the ones `moesweep run` always uses.
//
// The child:
//   - exits 0 after printing a result line (done), 3 diverged, 4 stopped after a checkpoint (as
//     `moesweep train`); exiting 0 without a result, any other status, a signal, or a protocol error is
//     a failed attempt, retried up to [resources] max_attempts, the error in the store in one line;
//   - gets the signal the worker got (SIGUSR1 or SIGTERM; SIGUSR1 when the coordinator asks the run to
//     stop) forwarded to its process group, and is waited for; after a forwarded stop, whatever way it
//     ends short of a result or a divergence is "stopped" (preempted), not a failure;
//   - is killed (SIGKILL, by the kernel: PR_SET_PDEATHSIG) if its worker dies, and its process group is
//     killed once it has exited, so no stray process outlives an attempt;
//   - announces checkpoints; the gang leader keeps them in RUN_DIR/checkpoints.json (written atomically,
//     only while RUN_DIR/attempt names this attempt, like every run-directory file), and the next
//     attempt, in this job or a later one, gets the newest that still exists as {resume_from};
//   - writes its log: stdout lines that are not events, and its stderr, go to RUN_DIR/attempt-<id>.log
//     (the gang's other ranks: attempt-<id>.rank-<r>.log), after a header line naming the command.
//
// Cooldown branches: a trunk gets {branch_points}; when its child announces a checkpoint at exactly a
// branch point's tokens, the leader hard-links it (a directory: a tree of hard links; across file
// systems: a copy) to branch_point_path, which makes the branch runnable, and the branch gets that path
// as {branch_from}. So an announced checkpoint must never change in place afterwards: write each to a
// new path, or replace one by renaming over it (what torch.save to a temporary name and os.replace do).
//
// Gangs: a run on k ranks starts one child per rank, each with {rank}, {ranks}, {master_addr} and
// {master_port} (the leader's host and a free port there), rather than one child given all k devices.
// Why: a gang may span nodes (Slurm places ranks where it likes), and only a child per rank reaches
// every node's devices; it is also the contract torchrun, Megatron-LM and torchtitan already accept
// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT through `env`). Only rank 0's progress, checkpoint and
// result events count (rank 0 writes checkpoints, as in the native trainer); every rank's protocol
// errors and exit status do, and when one rank's child fails the others' are killed rather than left
// waiting in a collective.
#include <memory>

#include "backend.h"

namespace moesweep::orchestrator {

std::unique_ptr<Backend> make_command_backend(const SweepRunOptions& options, const CommandTemplate& command);

}  // namespace moesweep::orchestrator
