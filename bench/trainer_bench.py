#!/usr/bin/env python3
"""The trainer benchmark's PyTorch-eager side: the same model and training step as the native trainer
(trainer/src/model.cpp, trainer.cpp), written the way one would in Python, timed the same way.

Usage: trainer_bench.py --threads N --steps S --warmup W SHAPE...   SHAPE = d_model,n_layers,n_heads,experts,seq_len,
batch_sequences,vocab. Prints one JSON object per shape: {"shape": SHAPE, "tokens_per_s": ...}.
Run by bench/trainer_bench (C++), which prints both sides together.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def truncated_normal(shape, fan_in):
    std = math.sqrt(0.1 / fan_in)
    return torch.nn.init.trunc_normal_(torch.empty(shape), std=std, a=-2 * std, b=2 * std)


class MoeTransformer(torch.nn.Module):
    def __init__(self, d, layers, heads, experts, seq_len, vocab):
        super().__init__()
        self.d, self.heads, self.experts = d, heads, experts
        P = torch.nn.Parameter
        self.embedding = P(truncated_normal((vocab, d), d))
        self.head = P(truncated_normal((vocab, d), d))
        self.attention_norms = torch.nn.ModuleList(torch.nn.LayerNorm(d) for _ in range(layers))
        self.feed_forward_norms = torch.nn.ModuleList(torch.nn.LayerNorm(d) for _ in range(layers))
        self.final_norm = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.ParameterList(P(truncated_normal((3 * d, d), d)) for _ in range(layers))
        self.out = torch.nn.ParameterList(P(truncated_normal((d, d), d)) for _ in range(layers))
        self.router = torch.nn.ParameterList(P(truncated_normal((experts, d), d)) for _ in range(layers if experts > 1 else 0))
        self.gate = torch.nn.ParameterList(P(truncated_normal((experts, d, 3 * d), d)) for _ in range(layers))
        self.up = torch.nn.ParameterList(P(truncated_normal((experts, d, 3 * d), d)) for _ in range(layers))
        self.down = torch.nn.ParameterList(P(truncated_normal((experts, 3 * d, d), 3 * d)) for _ in range(layers))
        head_dim = d // heads
        inv = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv)
        self.register_buffer("cos", angles.cos().float())
        self.register_buffer("sin", angles.sin().float())

    def rope(self, x, T):
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        cos, sin = self.cos[:T], self.sin[:T]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)

    def attention(self, layer, x):
        B, T, d = x.shape
        q, k, v = F.linear(x, self.qkv[layer]).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.rope(q, T), self.rope(k, T)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        mixed = torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v
        return F.linear(mixed.transpose(1, 2).reshape(B, T, d), self.out[layer])

    def feed_forward(self, layer, x, capacity_factor, aux):
        B, T, d = x.shape
        E = self.experts
        gate, up, down = self.gate[layer], self.up[layer], self.down[layer]
        if E == 1:
            return (F.silu(x @ gate[0]) * (x @ up[0])) @ down[0]
        logits = F.linear(x, self.router[layer])
        probs = torch.softmax(logits, -1)
        aux[0] = aux[0] + torch.logsumexp(logits, -1).square().mean()
        top_p, top_e = probs.max(-1)
        aux[1] = aux[1] + E * (F.one_hot(top_e, E).float().mean(1) * probs.mean(1)).sum(-1).mean()
        capacity = min(T, math.ceil(capacity_factor * T / E))
        by_p = torch.sort(top_p, stable=True, dim=-1, descending=True).indices
        order = by_p.gather(1, torch.sort(top_e.gather(1, by_p), stable=True, dim=-1).indices)
        counts = F.one_hot(top_e, E).sum(1)
        starts = counts.cumsum(1) - counts
        sorted_pos = torch.arange(T).expand(B, T) - starts.gather(1, top_e.gather(1, order))
        position = torch.empty_like(top_e).scatter(1, order, sorted_pos)
        slot = ((torch.arange(B).unsqueeze(1) * E + top_e) * capacity + position).flatten()
        kept = (position < capacity).flatten().nonzero().squeeze(1)
        kept_slots = slot[kept]
        flat = x.reshape(B * T, d)
        buffer = torch.zeros(B * E * capacity, d).index_copy(0, kept_slots, flat[kept])
        buffer = buffer.view(B, E, capacity, d).transpose(0, 1).reshape(E, B * capacity, d)
        hidden = F.silu(torch.bmm(buffer, gate)) * torch.bmm(buffer, up)
        out = torch.bmm(hidden, down).view(E, B, capacity, d).transpose(0, 1).reshape(B * E * capacity, d)
        weighted = out[kept_slots] * top_p.flatten()[kept].unsqueeze(1)
        return torch.zeros(B * T, d).index_copy(0, kept, weighted).view(B, T, d)

    def forward(self, tokens, capacity_factor):
        aux = [torch.zeros(()), torch.zeros(())]
        x = self.embedding[tokens]
        for layer in range(len(self.qkv)):
            x = x + self.attention(layer, self.attention_norms[layer](x))
            x = x + self.feed_forward(layer, self.feed_forward_norms[layer](x), capacity_factor, aux)
        return F.linear(self.final_norm(x), self.head), aux[0], aux[1]


def bench(shape, steps, warmup):
    d, layers, heads, experts, seq_len, batch, vocab = shape
    torch.manual_seed(0)
    model = MoeTransformer(d, layers, heads, experts, seq_len, vocab)
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    data = torch.randint(0, vocab, (steps + warmup, batch, seq_len + 1))
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        tokens = data[step]
        optimizer.zero_grad()
        logits, z_loss, balance_loss = model(tokens[:, :-1], 1.0)
        loss = F.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1)) + 0.001 * z_loss + 0.01 * balance_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        loss.item()  # the native trainer reads the loss every step too
    return steps * batch * seq_len / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("shapes", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for text in args.shapes:
        shape = [int(v) for v in text.split(",")]
        print(json.dumps({"shape": text, "tokens_per_s": bench(shape, args.steps, args.warmup)}), flush=True)


if __name__ == "__main__":
    main()
