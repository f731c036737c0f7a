#!/usr/bin/env python3
"""The trainer benchmark's PyTorch-eager side: the model and training step of the parity oracle
(tests/reference/moe_reference.py, written from DESIGN.md's recipe), timed the way the native trainer is.

Usage: trainer_bench.py --threads N --steps S --warmup W SHAPE...   SHAPE = d_model,n_layers,n_heads,experts,seq_len,
batch_sequences,vocab. Prints one JSON object per shape: {"shape": SHAPE, "tokens_per_s": ...}.
Run by bench/trainer_bench (C++), which prints both sides together.

One step: forward at capacity factor 1.0 with routing groups of min(64, batch_sequences) sequences, cross-entropy
plus 0.001 z-loss and 0.01 load-balancing loss, backward, gradient-norm clip 0.1, AdamW (betas 0.9, 0.999,
eps 1e-8, weight decay 0.1 on every parameter) at a constant lr of 1e-3.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import moe_reference  # noqa: E402

LR = 1e-3


def bench(shape, steps, warmup):
    d, layers, heads, experts, seq_len, batch, vocab = shape
    torch.manual_seed(0)
    config = moe_reference.Config(d_model=d, n_layers=layers, n_heads=heads, experts=experts, seq_len=seq_len,
                                  vocab_size=vocab, routing_group=min(64, batch), capacity_factor=1.0)
    model = moe_reference.MoeTransformer(config)
    optimizer = model.make_optimizer(LR)
    data = torch.randint(0, vocab, (steps + warmup, batch, seq_len + 1))
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        result = model.train_step(optimizer, data[step], LR)
        result["loss"].item()  # the native trainer reads the loss every step too
    return steps * batch * seq_len / (time.perf_counter() - start)


def set_blas_threads(threads):
    """Size OpenBLAS's own pool like the native trainer does (trainer/src/blas_threads.cpp), so both
    sides run the same number of threads. LibTorch calls whatever libblas.so.3 is; a BLAS without
    openblas_set_num_threads is left alone."""
    import ctypes
    try:
        blas = ctypes.CDLL("libblas.so.3")
        blas.openblas_set_num_threads(ctypes.c_int(threads))
    except (OSError, AttributeError):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("shapes", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_blas_threads(args.threads)
    for text in args.shapes:
        shape = [int(v) for v in text.split(",")]
        print(json.dumps({"shape": text, "tokens_per_s": bench(shape, args.steps, args.warmup)}), flush=True)


if __name__ == "__main__":
    main()
