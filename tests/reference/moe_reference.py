"""An independent PyTorch reference of moesweep's MoE transformer and training step: the parity oracle.

Written from DESIGN.md's "Trainer recipe details" and the parity issue's spec, not from trainer/src/*.cpp, so
that a disagreement points at a real difference. fp32 on CPU throughout. Parameters live in one ordered dict
under the exact names the C++ exporter uses (`layer0_qkv`, `layer0_attention_norm.weight`, ...); weights are
stored the way the C++ model stores them ([out, in] for qkv, attention_out, router and head; [E, in, out] for
the experts), so a tensor file's values load unchanged.

The recipe in brief:
    x = embedding[tokens]
    per layer: x = x + attention(LN_a(x)); x = x + ffn(LN_f(x))       pre-norm, no biases, no dropout
    logits = (final LN, only if final_norm)(x) @ head^T              untied head; llm-random has no final LN
    attention: causal softmax per head, scale 1/sqrt(head_dim), RoPE (theta 10000, rotate-half) on q and k
    ffn, E = 1: dense SwiGLU with expert 0, hidden 3d
    ffn, E > 1: Switch top-1 token choice within routing groups of G sequences, capacity
                min(floor(cf * N / E), N), over capacity kept by position; output p * expert(x)
    loss = CE + z_loss_weight * z + balance_loss_weight * balance, z and balance summed over layers
    AdamW (betas, eps, weight decay on every parameter), gradient-norm clip before the step

Used by tests/reference/parity.py (against the C++ exporter's tensors) and bench/trainer_bench.py.
"""
import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

ROPE_THETA = 10000.0


@dataclasses.dataclass
class Config:
    d_model: int
    n_layers: int
    n_heads: int
    experts: int
    seq_len: int
    vocab_size: int
    routing_group: int = 64  # sequences per routing group; a smaller batch is one group
    capacity_factor: float = 1.0  # training
    eval_capacity_factor: float = 1.5
    final_norm: bool = False  # llm-random has none; kept as an option for comparison runs
    layer_norm_eps: float = 1e-5
    z_loss_weight: float = 0.001
    balance_loss_weight: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.1
    weight_decay_scope: str = "all"  # "all" (the recipe) or "matrices" (only parameters with dim >= 2)
    grad_clip: float = 0.1

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        if self.d_model % self.n_heads != 0 or self.head_dim % 2 != 0:
            raise ValueError(f"d_model {self.d_model} / n_heads {self.n_heads} must give an even head_dim")
        if self.experts < 1 or self.routing_group < 1:
            raise ValueError("experts and routing_group must be at least 1")
        if self.weight_decay_scope not in ("all", "matrices"):
            raise ValueError(f"weight_decay_scope must be 'all' or 'matrices', not {self.weight_decay_scope!r}")


def parameter_shapes(config: Config) -> Dict[str, Tuple[int, ...]]:
    """Every parameter's name and shape, in a fixed order (embedding, layers in order, final norm, head)."""
    d, e, v, hidden = config.d_model, config.experts, config.vocab_size, 3 * config.d_model
    shapes: Dict[str, Tuple[int, ...]] = {"embedding": (v, d)}
    for layer in range(config.n_layers):
        p = f"layer{layer}_"
        shapes[p + "attention_norm.weight"] = (d,)
        shapes[p + "attention_norm.bias"] = (d,)
        shapes[p + "qkv"] = (3 * d, d)
        shapes[p + "attention_out"] = (d, d)
        shapes[p + "feed_forward_norm.weight"] = (d,)
        shapes[p + "feed_forward_norm.bias"] = (d,)
        if e > 1:
            shapes[p + "router"] = (e, d)
        shapes[p + "expert_gate"] = (e, d, hidden)
        shapes[p + "expert_up"] = (e, d, hidden)
        shapes[p + "expert_down"] = (e, hidden, d)
    if config.final_norm:
        shapes["final_norm.weight"] = (d,)
        shapes["final_norm.bias"] = (d,)
    shapes["head"] = (v, d)
    return shapes


def _fan_in(config: Config, name: str) -> int:
    if name == "embedding":
        return 1  # llm-random's embedding init: std sqrt(0.1)
    if name.endswith("expert_down"):
        return config.experts * 3 * config.d_model  # the authors' scaling: the down-projection sees all experts
    return config.d_model  # qkv, attention_out, router, expert_gate, expert_up, head


def init_parameters(config: Config) -> Dict[str, torch.Tensor]:
    """The recipe's init (for benchmarks; parity loads its weights): normal, std sqrt(0.1 / fan_in), truncated
    at +-0.2 absolute; LayerNorm weight 1, bias 0. Draws from torch's global generator in parameter order."""
    params = {}
    for name, shape in parameter_shapes(config).items():
        if name.endswith(".weight"):
            params[name] = torch.ones(shape)
        elif name.endswith(".bias"):
            params[name] = torch.zeros(shape)
        else:
            std = math.sqrt(0.1 / _fan_in(config, name))
            params[name] = torch.nn.init.trunc_normal_(torch.empty(shape), std=std, a=-0.2, b=0.2)
    return params


def _rope_tables(length: int, head_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [length, head_dim / 2]: angle(pos, i) = pos * 10000^(-2i / head_dim), pos from 0. Computed in
    float64 and rounded once to fp32, so the tables are the formula's values to fp32 precision."""
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    inv_freq = ROPE_THETA ** (-2.0 * i / head_dim)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cos(angle).float(), torch.sin(angle).float()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on [..., T, head_dim]: halves x1, x2 -> (x1 cos - x2 sin, x1 sin + x2 cos)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class MoeTransformer:
    """The model: parameters in `self.params` (name -> fp32 leaf tensor with requires_grad).

    After each forward, `self.dropped_tokens[l]` is the number of tokens layer l dropped over capacity (summed
    over routing groups; always 0 when experts == 1)."""

    def __init__(self, config: Config, params: Optional[Dict[str, torch.Tensor]] = None):
        config.validate()
        self.config = config
        source = init_parameters(config) if params is None else params
        self.params: Dict[str, torch.Tensor] = {}
        for name, shape in parameter_shapes(config).items():
            if name not in source:
                raise KeyError(f"missing parameter {name}")
            value = source[name]
            if tuple(value.shape) != shape:
                raise ValueError(f"parameter {name} has shape {tuple(value.shape)}, expected {shape}")
            self.params[name] = value.detach().to(torch.float32).clone().contiguous().requires_grad_(True)
        self.dropped_tokens: List[int] = [0] * config.n_layers

    def parameters(self) -> List[torch.Tensor]:
        return list(self.params.values())

    # ----- forward -----

    def _attention(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        c, p = self.config, self.params
        b, t, d = x.shape
        h, hd = c.n_heads, c.head_dim
        qkv = (x @ p[f"layer{layer}_qkv"].t()).view(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        cos, sin = _rope_tables(t, hd)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        merged = (weights @ v).transpose(1, 2).reshape(b, t, d)  # heads concatenated in head order
        return merged @ p[f"layer{layer}_attention_out"].t()

    def _expert(self, layer: int, expert: int, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        gate = p[f"layer{layer}_expert_gate"][expert]
        up = p[f"layer{layer}_expert_up"][expert]
        down = p[f"layer{layer}_expert_down"][expert]
        return (F.silu(x @ gate) * (x @ up)) @ down

    def _switch_group(self, layer: int, x: torch.Tensor, capacity_factor: float):
        """Top-1 token choice over one routing group x [N, d] (tokens flattened sequence-major).
        Returns (output [N, d], z, balance, dropped)."""
        e = self.config.experts
        n = x.shape[0]
        logits = x @ self.params[f"layer{layer}_router"].t()  # [N, E], fp32
        probs = torch.softmax(logits, dim=-1)
        chosen_p, chosen = probs.max(dim=-1)
        capacity = min(int(math.floor(capacity_factor * n / e)), n)
        # Kept by position, not probability: a token's rank among the group's tokens choosing the same expert,
        # in flattened order. Keeping the most probable would let a later token evict an earlier one.
        one_hot = F.one_hot(chosen, e)
        rank = (torch.cumsum(one_hot, dim=0) * one_hot).sum(dim=-1) - 1
        kept = rank < capacity
        out = torch.zeros_like(x)
        for expert in range(e):
            rows = torch.nonzero(kept & (chosen == expert)).flatten()
            if rows.numel() == 0:
                continue
            # Scaled by the chosen probability, not renormalised: with k = 1 renormalising would leave the
            # router without a gradient from the LM loss.
            y = self._expert(layer, expert, x.index_select(0, rows)) * chosen_p.index_select(0, rows)[:, None]
            out = out.index_add(0, rows, y)
        z = (torch.logsumexp(logits, dim=-1) ** 2).mean()
        fraction = torch.bincount(chosen, minlength=e).to(torch.float32) / n  # counted before dropping
        balance = e * (fraction * probs.mean(dim=0)).sum()
        return out, z, balance, int((~kept).sum())

    def _feed_forward(self, layer: int, x: torch.Tensor, capacity_factor: float):
        """x [B, T, d] -> (output [B, T, d], z, balance) with z and balance averaged over routing groups."""
        c = self.config
        b, t, d = x.shape
        if c.experts == 1:
            zero = x.new_zeros(())
            return self._expert(layer, 0, x), zero, zero
        group = min(c.routing_group, b)
        outputs, zs, balances, dropped = [], [], [], 0
        for start in range(0, b, group):
            chunk = x[start:start + group]
            out, z, balance, drops = self._switch_group(layer, chunk.reshape(-1, d), capacity_factor)
            outputs.append(out.view(chunk.shape))
            zs.append(z)
            balances.append(balance)
            dropped += drops
        self.dropped_tokens[layer] = dropped
        return torch.cat(outputs, dim=0), torch.stack(zs).mean(), torch.stack(balances).mean()

    def forward(self, tokens: torch.Tensor, capacity_factor: float):
        """tokens [B, T'] int64 (T' <= seq_len) -> (logits [B, T', V], z, balance); z and balance are unweighted
        and summed over layers."""
        c, p = self.config, self.params
        if tokens.shape[1] > c.seq_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds seq_len {c.seq_len}")
        self.dropped_tokens = [0] * c.n_layers
        x = F.embedding(tokens, p["embedding"])
        z_total = x.new_zeros(())
        balance_total = x.new_zeros(())
        for layer in range(c.n_layers):
            pre = f"layer{layer}_"
            h = F.layer_norm(x, (c.d_model,), p[pre + "attention_norm.weight"], p[pre + "attention_norm.bias"],
                             c.layer_norm_eps)
            x = x + self._attention(layer, h)
            h = F.layer_norm(x, (c.d_model,), p[pre + "feed_forward_norm.weight"],
                             p[pre + "feed_forward_norm.bias"], c.layer_norm_eps)
            out, z, balance = self._feed_forward(layer, h, capacity_factor)
            x = x + out
            z_total = z_total + z
            balance_total = balance_total + balance
        if c.final_norm:
            x = F.layer_norm(x, (c.d_model,), p["final_norm.weight"], p["final_norm.bias"], c.layer_norm_eps)
        return x @ p["head"].t(), z_total, balance_total

    # ----- training and eval -----

    def make_optimizer(self, lr: float = 1e-3) -> torch.optim.AdamW:
        c = self.config
        if c.weight_decay_scope == "all":
            groups = [{"params": self.parameters(), "weight_decay": c.weight_decay}]
        else:
            groups = [{"params": [t for t in self.parameters() if t.dim() >= 2], "weight_decay": c.weight_decay},
                      {"params": [t for t in self.parameters() if t.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=(c.adam_beta1, c.adam_beta2), eps=c.adam_eps)

    def loss_and_grads(self, batch: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Forward and backward on batch [B, T'+1] (inputs [:, :-1], targets [:, 1:]) at the training capacity
        factor. Leaves each parameter's .grad = d(total loss) (unclipped). Returns the detached pieces."""
        c = self.config
        for t in self.parameters():
            t.grad = None
        logits, z, balance = self.forward(batch[:, :-1], c.capacity_factor)
        lm = F.cross_entropy(logits.reshape(-1, c.vocab_size), batch[:, 1:].reshape(-1))
        loss = lm + c.z_loss_weight * z + c.balance_loss_weight * balance
        loss.backward()
        return {"logits": logits.detach(), "loss": loss.detach(), "lm_loss": lm.detach(), "z_loss": z.detach(),
                "balance_loss": balance.detach()}

    def optimizer_step(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        """Clip the gradient norm over all parameters to grad_clip, then one AdamW step at lr."""
        torch.nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()

    def train_step(self, optimizer: torch.optim.Optimizer, batch: torch.Tensor, lr: float) -> Dict[str, torch.Tensor]:
        result = self.loss_and_grads(batch)
        self.optimizer_step(optimizer, lr)
        return result

    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Plain cross-entropy (no aux losses) at eval_capacity_factor on batch [Be, T'+1]: consecutive routing
        groups of routing_group sequences, each one forward call (a smaller last group is its own group).
        Returns (logits [Be, T', V], mean loss over all tokens)."""
        c = self.config
        logits = torch.cat([self.forward(batch[start:start + c.routing_group, :-1], c.eval_capacity_factor)[0]
                            for start in range(0, batch.shape[0], c.routing_group)], dim=0)
        loss = F.cross_entropy(logits.reshape(-1, c.vocab_size), batch[:, 1:].reshape(-1))
        return logits, loss
