"""A decoder-only GPT whose feed-forward layer is dense or a Mixture of Experts.

nanoGPT-style: pre-norm blocks, causal `scaled_dot_product_attention`, learned position
embeddings, GELU MLPs, no biases in linears, LayerNorm without bias, optionally tied head.
The network only: no I/O, no logging. `trainer/accounting.py` counts exactly these parameters.

MoE: token-choice top-k routing with a softmax router computed in fp32 (the top-k weights are
renormalised to sum to 1), dropless (no capacity factor: every token reaches its k experts, so
the loss never depends on a systems knob). Token slots are sorted by expert and each expert runs
one matmul over its contiguous segment. Losses: Switch load balancing aux = E·Σ_i f_i·P_i and
router z-loss = mean(logsumexp(logits)²), both averaged over MoE layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spec import ModelSpec


class CausalSelfAttention(nn.Module):
    def __init__(self, m: ModelSpec):
        super().__init__()
        self.n_head = m.n_head
        self.qkv = nn.Linear(m.d_model, 3 * m.d_model, bias=False)
        self.proj = nn.Linear(m.d_model, m.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)                                   # (B, T, C) each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)   # (B, H, T, hd)
                   for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)            # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=False)
        self.proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class MoE(nn.Module):
    """Dropless token-choice top-k MoE with optional always-on shared experts."""

    def __init__(self, m: ModelSpec):
        super().__init__()
        self.experts, self.top_k = m.experts, m.top_k
        self.router = nn.Linear(m.d_model, m.experts, bias=False)
        # Expert weights as 3-D parameters: one matmul per expert over its token segment.
        self.w_in = nn.Parameter(torch.empty(m.experts, m.d_model, m.d_expert))   # (E, C, F)
        self.w_out = nn.Parameter(torch.empty(m.experts, m.d_expert, m.d_model))  # (E, F, C)
        # Shared experts always run; S experts of width d_expert are one MLP of width S·d_expert.
        self.shared = MLP(m.d_model, m.shared_experts * m.d_expert) if m.shared_experts else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, T, C = x.shape
        x2 = x.reshape(-1, C)                                                   # (N, C)
        N = x2.shape[0]
        # Router in fp32 even under autocast: tiny, and routing decisions are precision-sensitive.
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x2.float(), self.router.weight.float())           # (N, E)
        probs = logits.softmax(dim=-1)
        top_w, top_e = probs.topk(self.top_k, dim=-1)                           # (N, k)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)

        # Dropless dispatch: sort the N·k token slots by expert, run each expert on its segment.
        flat_e = top_e.reshape(-1)                                              # (N·k,)
        order = flat_e.argsort(stable=True)
        token = order // self.top_k                                             # (N·k,)
        counts = torch.bincount(flat_e, minlength=self.experts)                 # (E,)
        xs = x2.index_select(0, token)                                          # (N·k, C)
        outs = []
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n:
                seg = xs[start:start + n]
                outs.append(F.gelu(seg @ self.w_in[e].to(seg.dtype)) @ self.w_out[e].to(seg.dtype))
                start += n
        ys = torch.cat(outs) if outs else xs.new_zeros(0, C)                    # (N·k, C)
        ys = ys * top_w.reshape(-1)[order].unsqueeze(1).to(ys.dtype)
        y = torch.zeros_like(x2, dtype=ys.dtype).index_add_(0, token, ys)      # (N, C)
        if self.shared is not None:
            y = y + self.shared(x2)
        # Switch aux loss: f_i fraction of slots routed to i, P_i mean router probability of i.
        f = counts.float() / (N * self.top_k)
        aux = self.experts * (f * probs.mean(dim=0)).sum()
        z = torch.logsumexp(logits, dim=-1).square().mean()
        return y.reshape(B, T, C).to(x.dtype), {"aux": aux, "z": z, "counts": counts.detach()}


class Block(nn.Module):
    def __init__(self, m: ModelSpec):
        super().__init__()
        self.ln1 = nn.LayerNorm(m.d_model, bias=False)
        self.attn = CausalSelfAttention(m)
        self.ln2 = nn.LayerNorm(m.d_model, bias=False)
        self.ffn = MoE(m) if m.is_moe else MLP(m.d_model, m.d_ff)

    def forward(self, x: torch.Tensor):
        x = x + self.attn(self.ln1(x))
        if isinstance(self.ffn, MoE):
            h, stats = self.ffn(self.ln2(x))
            return x + h, stats
        return x + self.ffn(self.ln2(x)), None


class GPT(nn.Module):
    def __init__(self, m: ModelSpec):
        super().__init__()
        self.spec = m
        self.wte = nn.Embedding(m.vocab_size, m.d_model)
        self.wpe = nn.Embedding(m.seq_len, m.d_model)
        self.blocks = nn.ModuleList(Block(m) for _ in range(m.n_layer))
        self.ln_f = nn.LayerNorm(m.d_model, bias=False)
        self.head = nn.Linear(m.d_model, m.vocab_size, bias=False)
        if m.tied_head:
            self.head.weight = self.wte.weight
        self.apply(self._init)
        # GPT-2: scale the residual output projections by 1/sqrt(2·n_layer).
        std = 0.02 / math.sqrt(2 * m.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("w_out"):
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith("w_in"):
                nn.init.normal_(p, mean=0.0, std=0.02)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Returns (logits (B, T, V), ce loss or None, aux dict). aux holds the summed MoE
        regulariser `reg` (aux_loss_coef·aux + z_loss_coef·z, mean over MoE layers) and the
        per-layer expert token `counts` (L_moe, E); empty for dense models."""
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)                                       # (B, T, C)
        moe_stats = []
        for block in self.blocks:
            x, stats = block(x)
            if stats is not None:
                moe_stats.append(stats)
        logits = self.head(self.ln_f(x))                                        # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        aux: dict[str, torch.Tensor] = {}
        if moe_stats:
            n = len(moe_stats)
            aux["aux"] = sum(s["aux"] for s in moe_stats) / n
            aux["z"] = sum(s["z"] for s in moe_stats) / n
            aux["reg"] = self.spec.aux_loss_coef * aux["aux"] + self.spec.z_loss_coef * aux["z"]
            aux["counts"] = torch.stack([s["counts"] for s in moe_stats])
        return logits, loss, aux


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices (and 3-D expert tensors) only, not on norms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
