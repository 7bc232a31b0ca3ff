"""A GPT whose feed-forward layer is dense or a Mixture of Experts.

nanoGPT-style: no biases in linears, LayerNorm without bias, optionally tied head. Defaults
(today's model): pre-norm blocks, causal `scaled_dot_product_attention`, learned position
embeddings, GELU MLPs. Options (`ModelSpec`): positions learned | sinusoidal (fixed, Vaswani et
al., added to the token embedding at the embeddings' init scale, computed for any length) | rope (rotary on q and k, any
length) | none; FFN activation gelu | relu | swiglu (gate and value matrices of width
round(2/3·width), `spec.ffn_hidden`); norm pre | post (post: x = LN(x + f(x)), the original
Transformer; the final LayerNorm is kept in both placements); objective clm (causal) | mlm
(bidirectional attention; the mask token is one extra embedding row, id vocab_size, never a
logit: a tied head uses the first vocab_size rows) | prefix (prefix LM: `forward(..., prefix)`
makes the first prefix[b] positions attend to each other both ways, the rest causally).
The blocks take a causal flag and (cross=True) cross-attention to an encoder's output, so
`trainer/encdec.py` builds the T5-style encoder-decoder (family encdec) from them;
`trainer.encdec.build_model(spec)` picks the network. The network only: no I/O, no logging.
`trainer/accounting.py` counts exactly these parameters.

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

from .spec import ModelSpec, ffn_hidden

ROPE_BASE = 10000.0
# Fixed sinusoidal encodings are scaled to a per-element RMS of 0.02, the init std of the token
# (and learned position) embeddings: at unit amplitude they would swamp the tokens ~50x.
SINUSOIDAL_RMS = 0.02


def sinusoidal_table(T: int, d: int, device: torch.device) -> torch.Tensor:
    """(T, d) fixed sinusoidal position encodings of Vaswani et al. (sin on even, cos on odd)."""
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    inv = torch.exp(
        torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d)
    )  # (ceil(d/2),)
    table = torch.zeros(T, d, device=device)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv[: d // 2])
    return table


def rope_angles(T: int, d_head: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (T, d_head/2), of rotary embeddings (Su et al.) for positions 0..T-1."""
    inv = 1.0 / ROPE_BASE ** (torch.arange(0, d_head // 2, device=device, dtype=torch.float32) * 2 / d_head)
    ang = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of (B, H, T, hd) by the position angles; an odd last
    channel is left as is."""
    h = cos.shape[-1]
    x1, x2, rest = x[..., 0 : 2 * h : 2], x[..., 1 : 2 * h : 2], x[..., 2 * h :]
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    rot = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
    return torch.cat((rot, rest), dim=-1) if rest.shape[-1] else rot


def _heads(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, C/H)."""
    B, T, C = t.shape
    return t.view(B, T, n_head, C // n_head).transpose(1, 2)


class CausalSelfAttention(nn.Module):
    """Self-attention: causal for clm and prefix (and an encoder-decoder's decoder),
    bidirectional for mlm (and the encoder); rope rotates q and k. `mask` (B, 1, T, T), True
    where attending is allowed, replaces the causal mask (prefix LM)."""

    def __init__(self, m: ModelSpec, causal: bool | None = None):
        super().__init__()
        self.n_head = m.n_head
        self.causal = m.objective in ("clm", "prefix") if causal is None else causal
        self.qkv = nn.Linear(m.d_model, 3 * m.d_model, bias=False)
        self.proj = nn.Linear(m.d_model, m.d_model, bias=False)

    def forward(self, x: torch.Tensor, rope=None, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (_heads(t, self.n_head) for t in self.qkv(x).split(C, dim=2))  # (B, H, T, hd)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class CrossAttention(nn.Module):
    """Decoder-to-encoder attention (T5): queries from the decoder, keys and values from the
    encoder's output (`memory`), no mask and no positions (the encoder already placed them)."""

    def __init__(self, m: ModelSpec):
        super().__init__()
        self.n_head = m.n_head
        self.q = nn.Linear(m.d_model, m.d_model, bias=False)
        self.kv = nn.Linear(m.d_model, 2 * m.d_model, bias=False)
        self.proj = nn.Linear(m.d_model, m.d_model, bias=False)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        k, v = (_heads(t, self.n_head) for t in self.kv(memory).split(C, dim=2))  # (B, H, S, hd)
        y = F.scaled_dot_product_attention(_heads(self.q(x), self.n_head), k, v)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def activate(h: torch.Tensor, activation: str) -> torch.Tensor:
    """The FFN nonlinearity; swiglu takes the concatenated (gate, value) projection."""
    if activation == "swiglu":
        gate, value = h.chunk(2, dim=-1)
        return F.silu(gate) * value
    return F.relu(h) if activation == "relu" else F.gelu(h)


class MLP(nn.Module):
    """Dense FFN of nominal width d_ff; swiglu: one fused (gate, value) matrix of 2·hidden."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu"):
        super().__init__()
        self.activation = activation
        hidden = ffn_hidden(d_ff, activation)
        fan_out = 2 * hidden if activation == "swiglu" else hidden
        self.fc = nn.Linear(d_model, fan_out, bias=False)
        self.proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(activate(self.fc(x), self.activation))


class MoE(nn.Module):
    """Dropless token-choice top-k MoE with optional always-on shared experts."""

    def __init__(self, m: ModelSpec):
        super().__init__()
        self.experts, self.top_k, self.activation = m.experts, m.top_k, m.activation
        self.router = nn.Linear(m.d_model, m.experts, bias=False)
        # Expert weights as 3-D parameters: one matmul per expert over its token segment.
        hidden = ffn_hidden(m.d_expert, m.activation)
        fan_out = 2 * hidden if m.activation == "swiglu" else hidden
        self.w_in = nn.Parameter(torch.empty(m.experts, m.d_model, fan_out))  # (E, C, F)
        self.w_out = nn.Parameter(torch.empty(m.experts, hidden, m.d_model))  # (E, F, C)
        # Shared experts always run; S experts of width d_expert are one MLP of width S·d_expert.
        self.shared = (
            MLP(m.d_model, m.shared_experts * m.d_expert, m.activation) if m.shared_experts else None
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, T, C = x.shape
        x2 = x.reshape(-1, C)  # (N, C)
        N = x2.shape[0]
        # Router in fp32 even under autocast: tiny, and routing decisions are precision-sensitive.
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x2.float(), self.router.weight.float())  # (N, E)
        probs = logits.softmax(dim=-1)
        top_w, top_e = probs.topk(self.top_k, dim=-1)  # (N, k)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)

        # Dropless dispatch: sort the N·k token slots by expert, run each expert on its segment.
        flat_e = top_e.reshape(-1)  # (N·k,)
        order = flat_e.argsort(stable=True)
        token = order // self.top_k  # (N·k,)
        counts = torch.bincount(flat_e, minlength=self.experts)  # (E,)
        xs = x2.index_select(0, token)  # (N·k, C)
        outs = []
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n:
                seg = xs[start : start + n]
                outs.append(
                    activate(seg @ self.w_in[e].to(seg.dtype), self.activation) @ self.w_out[e].to(seg.dtype)
                )
                start += n
        ys = torch.cat(outs) if outs else xs.new_zeros(0, C)  # (N·k, C)
        ys = ys * top_w.reshape(-1)[order].unsqueeze(1).to(ys.dtype)
        y = torch.zeros_like(x2, dtype=ys.dtype).index_add_(0, token, ys)  # (N, C)
        if self.shared is not None:
            y = y + self.shared(x2)
        # Switch aux loss: f_i fraction of slots routed to i, P_i mean router probability of i.
        f = counts.float() / (N * self.top_k)
        aux = self.experts * (f * probs.mean(dim=0)).sum()
        z = torch.logsumexp(logits, dim=-1).square().mean()
        return y.reshape(B, T, C).to(x.dtype), {"aux": aux, "z": z, "counts": counts.detach()}


class Block(nn.Module):
    """Self-attention, then (cross=True: an encoder-decoder's decoder) cross-attention to the
    encoder's output, then the FFN; each sublayer with its own LayerNorm, pre or post."""

    def __init__(self, m: ModelSpec, causal: bool | None = None, cross: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(m.d_model, bias=False)
        self.attn = CausalSelfAttention(m, causal)
        if cross:
            self.ln_cross = nn.LayerNorm(m.d_model, bias=False)
            self.cross = CrossAttention(m)
        self.ln2 = nn.LayerNorm(m.d_model, bias=False)
        self.ffn = MoE(m) if m.is_moe else MLP(m.d_model, m.d_ff, m.activation)
        self.post = m.norm == "post"

    def _ffn(self, x: torch.Tensor):
        if isinstance(self.ffn, MoE):
            return self.ffn(x)
        return self.ffn(x), None

    def forward(self, x: torch.Tensor, rope=None, mask=None, memory: torch.Tensor | None = None):
        if self.post:  # original Transformer: normalise after each residual add
            x = self.ln1(x + self.attn(x, rope, mask))
            if memory is not None:
                x = self.ln_cross(x + self.cross(x, memory))
            h, stats = self._ffn(x)
            return self.ln2(x + h), stats
        x = x + self.attn(self.ln1(x), rope, mask)
        if memory is not None:
            x = x + self.cross(self.ln_cross(x), memory)
        h, stats = self._ffn(self.ln2(x))
        return x + h, stats


class GPT(nn.Module):
    def __init__(self, m: ModelSpec):
        super().__init__()
        self.spec = m
        self.wte = nn.Embedding(m.embedding_rows, m.d_model)
        self.wpe = nn.Embedding(m.seq_len, m.d_model) if m.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(m) for _ in range(m.n_layer))
        self.ln_f = nn.LayerNorm(m.d_model, bias=False)
        # tied with an mlm mask row: the head is the first vocab_size rows of wte (no module)
        self.head = None
        if not m.tied_head:
            self.head = nn.Linear(m.d_model, m.vocab_size, bias=False)
        elif m.embedding_rows == m.vocab_size:
            self.head = nn.Linear(m.d_model, m.vocab_size, bias=False)
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

    def max_positions(self) -> int | None:
        """The longest input the position scheme can address (None: any length)."""
        return self.spec.seq_len if self.wpe is not None else None

    def _embed(self, idx: torch.Tensor):
        """Token (+ position) embeddings and the rope angles (or None)."""
        return embed(idx, self.wte, self.wpe, self.spec)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, prefix: torch.Tensor | None = None
    ):
        """Returns (logits (B, T, V), ce loss or None, aux dict). aux holds the summed MoE
        regulariser `reg` (aux_loss_coef·aux + z_loss_coef·z, mean over MoE layers) and the
        per-layer expert token `counts` (L_moe, E); empty for dense models. Targets equal to
        -100 are ignored (mlm: the loss covers the selected positions only). `prefix` (B,):
        prefix LM, positions before prefix[b] attend to each other both ways."""
        x, rope = self._embed(idx)
        mask = prefix_mask(prefix, idx.shape[1]) if prefix is not None else None
        moe_stats = []
        for block in self.blocks:
            x, stats = block(x, rope, mask)
            if stats is not None:
                moe_stats.append(stats)
        h = self.ln_f(x)
        logits = (
            self.head(h) if self.head is not None else F.linear(h, self.wte.weight[: self.spec.vocab_size])
        )  # (B, T, V)
        return logits, cross_entropy(logits, targets), moe_aux(moe_stats, self.spec)


def embed(idx: torch.Tensor, wte: nn.Embedding, wpe: nn.Embedding | None, m: ModelSpec):
    """Token (+ position) embeddings of (B, T) ids and the rope angles (or None); `wpe` is the
    learned position table (pos: learned), which addresses its own number of rows."""
    T = idx.shape[1]
    x = wte(idx)  # (B, T, C)
    if m.pos == "learned":
        assert wpe is not None  # built for pos: learned
        if T > wpe.num_embeddings:
            raise ValueError(
                f"learned positions address {wpe.num_embeddings} positions, "
                f"not {T}; evaluate longer inputs with pos: sinusoidal, rope "
                "or none"
            )
        x = x + wpe(torch.arange(T, device=idx.device))
    elif m.pos == "sinusoidal":
        table = sinusoidal_table(T, m.d_model, idx.device) * (SINUSOIDAL_RMS * math.sqrt(2))
        x = x + table.to(x.dtype)
    rope = rope_angles(T, m.d_head, idx.device) if m.pos == "rope" else None
    return x, rope


def prefix_mask(prefix: torch.Tensor, T: int) -> torch.Tensor:
    """(B, 1, T, T) attention mask of a prefix LM: causal, plus every position of the prefix
    (the first prefix[b] positions) sees the whole prefix."""
    pos = torch.arange(T, device=prefix.device)
    causal = pos[None, :] <= pos[:, None]  # (T, T): key <= query
    in_prefix = pos[None, None, :] < prefix[:, None, None]  # (B, 1, T): key inside the prefix
    return (causal[None] | (in_prefix & (pos[None, :, None] < prefix[:, None, None])))[:, None]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    """Mean cross-entropy in nats over the targets that are not -100 (None without targets)."""
    if targets is None:
        return None
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)


def moe_aux(moe_stats: list[dict[str, torch.Tensor]], m: ModelSpec) -> dict[str, torch.Tensor]:
    """The MoE losses averaged over MoE layers (`aux`, `z`, weighted `reg`) and the per-layer
    expert `counts`; empty for dense models."""
    aux: dict[str, torch.Tensor] = {}
    if moe_stats:
        aux["aux"] = torch.stack([s["aux"] for s in moe_stats]).mean()
        aux["z"] = torch.stack([s["z"] for s in moe_stats]).mean()
        aux["reg"] = m.aux_loss_coef * aux["aux"] + m.z_loss_coef * aux["z"]
        aux["counts"] = torch.stack([s["counts"] for s in moe_stats])
    return aux


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices (and 3-D expert tensors) only, not on norms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
