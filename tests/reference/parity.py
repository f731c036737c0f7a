#!/usr/bin/env python3
"""Parity of the native trainer with the independent PyTorch reference (tests/reference/moe_reference.py).

Usage: parity.py FILE.tensors      (FILE.tensors: written by build/tests/trainer/moesweep_parity_export OUT_DIR)

Loads the C++ side's initial parameters, batches and results, replays them through the reference and
prints one line per compared quantity: name, max |a - b|, max |a - b| / max |b| (b = C++), tolerance, ok/FAIL.
  step 1 at capacity_factor:  logits, lm_loss, z_loss, balance_loss (unweighted, summed over layers) and the
                              gradient of the total loss for every parameter, before clipping     1e-5
                              also: the reference must drop tokens in step 1 (the capacity path is exercised);
                              step1/dropped, if the file has it (int64 [n_layers]), must equal its counts
  steps 1-3 (clip, AdamW at the file's lrs), from the reference's own step-1 and step-2 results:
                              every parameter after step 3                                        1e-4
  eval at eval_capacity_factor on the C++ side's step-3 parameters (so it checks eval alone):
                              eval logits, eval loss                                              1e-5
Every expected result tensor must be present with the right shape (a missing one is a FAIL line).
Exit status: 0 all pass; 1 any FAIL; 2 a missing or malformed file, or missing inputs (meta, initial
parameters, batches), with one line on stderr.

File format: b"MOETENS1", uint64 LE header length n, n bytes of UTF-8 JSON
{"meta": {...}, "tensors": [{"name", "dtype": "float32"|"int64", "shape", "offset"}]}, then the data section
(offsets from its start; raw little-endian, C-contiguous).
"""
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference  # noqa: E402

MAGIC = b"MOETENS1"
DTYPES = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}
META_KEYS = ("d_model", "n_layers", "n_heads", "experts", "seq_len", "vocab_size", "routing_group",
             "capacity_factor", "eval_capacity_factor", "final_norm", "layer_norm_eps", "z_loss_weight",
             "balance_loss_weight", "adam_beta1", "adam_beta2", "adam_eps", "weight_decay", "weight_decay_scope",
             "grad_clip", "lrs", "steps")
STEP1_TOL, STEP3_TOL, EVAL_TOL = 1e-5, 1e-4, 1e-5


class BadFile(Exception):
    pass


def read_tensors(path):
    """-> (meta dict, {name: torch tensor}). Raises BadFile with a one-line reason."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as error:
        raise BadFile(f"cannot read {path}: {error.strerror}")
    if len(blob) < 16 or blob[:8] != MAGIC:
        raise BadFile(f"{path}: not a MOETENS1 file (bad magic)")
    (n,) = struct.unpack("<Q", blob[8:16])
    if 16 + n > len(blob):
        raise BadFile(f"{path}: header length {n} runs past the end of the file")
    try:
        header = json.loads(blob[16:16 + n].decode("utf-8"))
        meta, entries = header["meta"], header["tensors"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise BadFile(f"{path}: bad JSON header ({error})")
    data = memoryview(blob)[16 + n:]
    tensors = {}
    for entry in entries:
        try:
            name, dtype, shape, offset = entry["name"], DTYPES[entry["dtype"]], entry["shape"], entry["offset"]
            count = int(np.prod(shape, dtype=np.int64))
        except (KeyError, TypeError, ValueError) as error:
            raise BadFile(f"{path}: bad tensor entry {entry!r} ({error})")
        end = offset + count * dtype.itemsize
        if offset < 0 or end > len(data):
            raise BadFile(f"{path}: tensor {name} [{offset}, {end}) runs past the data section ({len(data)} bytes)")
        if name in tensors:
            raise BadFile(f"{path}: tensor {name} appears twice")
        array = np.frombuffer(data[offset:end], dtype=dtype).reshape(shape)
        tensors[name] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
    return meta, tensors


def write_tensors(path, meta, tensors):
    """The inverse of read_tensors (for self-tests): tensors {name: float32 or int64 torch tensor}."""
    entries, chunks, offset = [], [], 0
    for name, tensor in tensors.items():
        array = tensor.detach().contiguous().numpy()
        dtype = {np.dtype("float32"): "float32", np.dtype("int64"): "int64"}[array.dtype]
        raw = array.astype(DTYPES[dtype]).tobytes()
        entries.append({"name": name, "dtype": dtype, "shape": list(array.shape), "offset": offset})
        chunks.append(raw)
        offset += len(raw)
    header = json.dumps({"meta": meta, "tensors": entries}).encode("utf-8")
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(header)) + header + b"".join(chunks))


def config_from_meta(meta):
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise BadFile(f"meta lacks {', '.join(missing)}")
    fields = {f.name for f in moe_reference.Config.__dataclass_fields__.values()}
    try:
        config = moe_reference.Config(**{key: meta[key] for key in META_KEYS if key in fields})
        config.validate()
        steps_ok = len(meta["lrs"]) == meta["steps"] >= 3
    except (TypeError, ValueError, ZeroDivisionError) as error:
        raise BadFile(f"meta: {error}")
    if not steps_ok:
        raise BadFile(f"meta: steps {meta['steps']} with {len(meta['lrs'])} lrs (need 3 or more, one lr a step)")
    return config


def require(tensors, name, shape=None, dtype=None):
    """An input the reference needs: missing or malformed is a bad file."""
    if name not in tensors:
        raise BadFile(f"missing input tensor {name}")
    tensor = tensors[name]
    if shape is not None and tuple(tensor.shape) != tuple(shape):
        raise BadFile(f"input tensor {name} has shape {list(tensor.shape)}, expected {list(shape)}")
    if dtype is not None and tensor.dtype != dtype:
        raise BadFile(f"input tensor {name} is {tensor.dtype}, expected {dtype}")
    return tensor


class Report:
    def __init__(self):
        self.failed = 0
        print(f"{'quantity':<44} {'max abs diff':>13} {'max rel diff':>13} {'tolerance':>10}  result")

    def line(self, name, abs_diff, rel_diff, tolerance, ok):
        self.failed += 0 if ok else 1
        print(f"{name:<44} {abs_diff:>13.3e} {rel_diff:>13.3e} {tolerance:>10.0e}  {'ok' if ok else 'FAIL'}",
              flush=True)

    def note(self, name, text, ok):
        self.failed += 0 if ok else 1
        print(f"{name:<44} {text}  {'ok' if ok else 'FAIL'}", flush=True)

    def compare(self, name, ours, tensors, tolerance):
        """Ours against the file's tensor `name` (b): max|a - b| / max|b| <= tolerance."""
        if name not in tensors:
            self.note(name, "missing from the file", False)
            return
        theirs = tensors[name]
        if tuple(theirs.shape) != tuple(ours.shape):
            self.note(name, f"shape {list(theirs.shape)}, reference {list(ours.shape)}", False)
            return
        a, b = ours.detach().double(), theirs.double()
        if not torch.isfinite(b).all():
            self.note(name, "non-finite values in the file", False)
            return
        abs_diff = (a - b).abs().max().item() if a.numel() else 0.0
        scale = b.abs().max().item() if b.numel() else 0.0
        rel_diff = abs_diff / scale if scale > 0 else (0.0 if abs_diff == 0 else float("inf"))
        self.line(name, abs_diff, rel_diff, tolerance, rel_diff <= tolerance)


def run(path):
    torch.set_num_threads(1)
    meta, tensors = read_tensors(path)
    config = config_from_meta(meta)
    shapes = moe_reference.parameter_shapes(config)
    initial = {name: require(tensors, f"param/{name}", shape, torch.float32) for name, shape in shapes.items()}
    batches = []
    for step in range(1, 4):
        batch = require(tensors, f"batch/{step}", dtype=torch.int64)
        if batch.dim() != 2 or not 2 <= batch.shape[1] <= config.seq_len + 1:
            raise BadFile(f"batch/{step} has shape {list(batch.shape)}, expected [B, T+1] with T <= {config.seq_len}")
        if batch.min() < 0 or batch.max() >= config.vocab_size:
            raise BadFile(f"batch/{step} has token ids outside [0, {config.vocab_size})")
        batches.append(batch)
    eval_batch = require(tensors, "eval/batch", dtype=torch.int64)
    if eval_batch.dim() != 2 or not 2 <= eval_batch.shape[1] <= config.seq_len + 1:
        raise BadFile(f"eval/batch has shape {list(eval_batch.shape)}")

    report = Report()
    model = moe_reference.MoeTransformer(config, initial)
    optimizer = model.make_optimizer(meta["lrs"][0])

    # Step 1: forward and backward, compared before clipping.
    step1 = model.loss_and_grads(batches[0])
    report.compare("step1/logits", step1["logits"], tensors, STEP1_TOL)
    for key in ("lm_loss", "z_loss", "balance_loss"):
        report.compare(f"step1/{key}", step1[key], tensors, STEP1_TOL)
    for name, param in model.params.items():
        report.compare(f"step1/grad/{name}", param.grad, tensors, STEP1_TOL)
    if config.experts > 1:
        # The capacity path must be exercised: tokens dropped in step 1 (and, where the file records the C++
        # side's per-layer counts as step1/dropped, the same counts).
        dropped = model.dropped_tokens
        text = f"reference {dropped} at capacity factor {config.capacity_factor}"
        ok = sum(dropped) > 0
        if "step1/dropped" in tensors:
            theirs = tensors["step1/dropped"].flatten().tolist()
            text += f", C++ {theirs}"
            ok = ok and theirs == dropped
        report.note("step1/dropped (tokens per layer)", text, ok)

    # Steps 1-3 through the optimizer, each from the reference's own previous step.
    model.optimizer_step(optimizer, meta["lrs"][0])
    for step in (2, 3):
        model.train_step(optimizer, batches[step - 1], meta["lrs"][step - 1])
    for name, param in model.params.items():
        report.compare(f"step3/param/{name}", param, tensors, STEP3_TOL)

    # Eval on the C++ side's step-3 parameters: checks the eval path (groups, capacity) without the
    # optimizer's rounding, which the step-3 comparison already bounds.
    trained = {}
    for name, shape in shapes.items():
        key = f"step3/param/{name}"
        if key in tensors and tuple(tensors[key].shape) == shape:
            trained[name] = tensors[key]
        else:
            trained[name] = model.params[name].detach()  # already reported as a FAIL above
    evaluator = moe_reference.MoeTransformer(config, trained)
    eval_logits, eval_loss = evaluator.evaluate(eval_batch)
    report.compare("eval/logits", eval_logits, tensors, EVAL_TOL)
    report.compare("eval/loss", eval_loss, tensors, EVAL_TOL)

    print(f"{'all pass' if report.failed == 0 else f'{report.failed} FAIL'}: {path} (E={config.experts}, "
          f"B={batches[0].shape[0]}, G={config.routing_group}, T={batches[0].shape[1] - 1})")
    return 0 if report.failed == 0 else 1


def main(argv):
    if len(argv) != 2:
        print("usage: parity.py FILE.tensors", file=sys.stderr)
        return 2
    try:
        return run(argv[1])
    except BadFile as error:
        print(f"parity.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
