#!/usr/bin/env python3
"""A small PyTorch trainer that speaks moesweep's command-backend protocol (README: "Bring your own trainer").

It trains a tiny Mixture-of-Experts language model (top-1 token-choice experts over the embeddings of the
previous three bytes) on a synthetic byte corpus it generates itself from a fixed seed, so nothing is
downloaded and every run sees the same data. What makes it a moesweep trainer is only this:

  - one JSON object a line on stdout for progress, checkpoints and the result (anything else printed is
    the run's log, kept in RUN_DIR/attempt-<id>.log by the worker);
  - checkpoints written atomically (torch.save to a temporary name, then os.replace) to a new path each
    time, and announced after they are complete;
  - SIGUSR1/SIGTERM: checkpoint at the next step, announce it, exit 4;
  - --resume-from (the newest announced checkpoint, empty for a fresh start) and, for a cooldown branch,
    --branch-from (the trunk's checkpoint at --branch-tokens) and --branch-points (a trunk's checkpoint
    positions);
  - exit 0 after the result line, 3 when the loss diverges.

Run under `moesweep run` with examples/command-backend/sweep.toml, or alone:
  OMP_NUM_THREADS=1 python3 train.py --tokens 65536 --out /tmp/run
"""
import argparse
import bisect
import json
import math
import os
import random
import signal
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONTEXT = 3  # previous bytes the model sees
VOCAB = 256


def event(**fields):
    print(json.dumps(fields), flush=True)


def corpus(train_tokens=200_000, val_tokens=20_000, seed=1234):
    """A second-order Markov chain over 40 symbols with peaked transitions: learnable, not trivial."""
    rng = random.Random(seed)
    alphabet = [ord(c) for c in "abcdefghijklmnopqrstuvwxyz .,;:!?0123456789-'"[:40]]
    tables = {}
    for a in range(len(alphabet)):
        for b in range(len(alphabet)):
            weights = [rng.random() ** 6 for _ in alphabet]
            total = sum(weights)
            cumulative, run = [], 0.0
            for w in weights:
                run += w / total
                cumulative.append(run)
            tables[a, b] = cumulative
    a, b, out = 0, 1, []
    for _ in range(train_tokens + val_tokens):
        c = min(bisect.bisect(tables[a, b], rng.random()), len(alphabet) - 1)
        out.append(alphabet[c])
        a, b = b, c
    data = torch.tensor(out, dtype=torch.long)
    return data[:train_tokens], data[train_tokens:]


class MoE(nn.Module):
    """Top-1 token choice; the chosen expert's output is scaled by its router probability."""

    def __init__(self, d, experts):
        super().__init__()
        self.router = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 3 * d, bias=False), nn.GELU(), nn.Linear(3 * d, d, bias=False))
            for _ in range(experts))

    def forward(self, x):
        probs = F.softmax(self.router(x).float(), dim=-1)
        top, choice = probs.max(dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            chosen = choice == e
            if chosen.any():
                out[chosen] = expert(x[chosen]) * top[chosen].unsqueeze(-1)
        return out


class Model(nn.Module):
    def __init__(self, d, layers, experts):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.mix = nn.Linear(CONTEXT * d, d, bias=False)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.blocks = nn.ModuleList(MoE(d, experts) for _ in range(layers))
        self.head = nn.Linear(d, VOCAB, bias=False)

    def forward(self, context):  # [B, CONTEXT] → logits [B, VOCAB]
        x = self.mix(self.embed(context).flatten(1))
        for norm, block in zip(self.norms, self.blocks):
            x = x + block(norm(x))
        return self.head(x)


def parameter_counts(model, experts):
    total = sum(p.numel() for p in model.parameters())
    expert_params = sum(p.numel() for block in model.blocks for e in block.experts for p in e.parameters())
    return total - expert_params + expert_params // experts, total


def batch(data, step, size, seed):
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)  # the same batch at a step, resumed or not
    ends = torch.randint(CONTEXT, len(data), (size,), generator=g)
    context = torch.stack([data[ends - CONTEXT + i] for i in range(CONTEXT)], dim=1)
    return context, data[ends]


def learning_rate(args, tokens):
    if tokens < args.warmup_tokens:
        return args.lr * (tokens + args.batch_tokens) / args.warmup_tokens
    decay_start = (1 - args.decay_fraction) * args.tokens
    if tokens < decay_start:
        return args.lr
    return args.lr * max(0.0, (args.tokens - tokens) / (args.tokens - decay_start))


def save(path, model, opt, step, tokens):
    temp = f"{path}.tmp-{os.getpid()}"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "tokens": tokens}, temp)
    os.replace(temp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--experts", type=int, default=1)
    p.add_argument("--tokens", type=int, required=True)
    p.add_argument("--batch-tokens", type=int, default=1024)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup-tokens", type=int, default=8192)
    p.add_argument("--decay-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=32768, help="tokens")
    p.add_argument("--branch-points", default="", help="a trunk: token counts to checkpoint at, comma-separated")
    p.add_argument("--branch-from", default="", help="a branch: the trunk's checkpoint to start from")
    p.add_argument("--branch-tokens", type=int, default=0, help="a branch: the tokens its trunk checkpoint holds")
    p.add_argument("--resume-from", default="", help="a checkpoint of this run (moesweep's {resume_from})")
    p.add_argument("--out", required=True, help="the run's directory (checkpoints go here)")
    p.add_argument("--sleep-per-step", type=float, default=0.0, help="seconds: slows a demo down")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    stop = {"signal": None}
    for s in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(s, lambda signo, frame: stop.update(signal=signo))

    train, val = corpus()
    model = Model(args.d_model, args.layers, args.experts)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=0.1)
    step, tokens = 0, 0
    start_from = args.resume_from or args.branch_from
    if start_from:
        state = torch.load(start_from)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, tokens = state["step"], state["tokens"]
        print(f"resumed from {start_from} at step {step}, {tokens} tokens", flush=True)
    n_act, n_total = parameter_counts(model, args.experts)
    print(f"model: d_model {args.d_model}, {args.layers} layers, {args.experts} experts: "
          f"{n_act} active / {n_total} total parameters; training to {args.tokens} tokens", flush=True)

    keep_at = {int(t) for t in args.branch_points.split(",") if t}
    last_checkpoint = tokens

    def checkpoint():
        nonlocal last_checkpoint
        path = os.path.join(args.out, f"ckpt-{tokens:012d}.pt")
        save(path, model, opt, step, tokens)
        event(event="checkpoint", tokens=tokens, step=step, path=path)
        last_checkpoint = tokens

    started = time.time()
    while tokens < args.tokens:
        if stop["signal"] is not None:
            if last_checkpoint != tokens:
                checkpoint()
            print(f"stopped by signal {stop['signal']} at step {step}", flush=True)
            sys.exit(4)
        size = min(args.batch_tokens, args.tokens - tokens)
        for group in opt.param_groups:
            group["lr"] = learning_rate(args, tokens)
        context, target = batch(train, step, size, args.seed)
        loss = F.cross_entropy(model(context), target)
        if not math.isfinite(loss.item()):
            print(f"loss {loss.item()} at step {step}: diverged", flush=True)
            sys.exit(3)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += size
        elapsed = time.time() - started
        event(event="progress", step=step, tokens=tokens, loss=round(loss.item(), 6),
              lr=opt.param_groups[0]["lr"], tokens_per_s=round(tokens / max(elapsed, 1e-9)))
        if tokens in keep_at or tokens - last_checkpoint >= args.checkpoint_every:
            checkpoint()
        if args.sleep_per_step:
            time.sleep(args.sleep_per_step)

    with torch.no_grad():
        ends = torch.arange(CONTEXT, len(val))
        context = torch.stack([val[ends - CONTEXT + i] for i in range(CONTEXT)], dim=1)
        eval_loss = F.cross_entropy(model(context), val[ends]).item()
    print(f"done: {tokens} tokens in {step} steps, eval loss {eval_loss!r}", flush=True)
    event(event="result", eval_loss=eval_loss, n_act=n_act, n_total=n_total, train_loss=loss.item())


if __name__ == "__main__":
    main()
