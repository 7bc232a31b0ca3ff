"""A T5-style encoder-decoder built from the GPT's blocks (Raffel et al. 2020).

The encoder is `n_layer_enc` bidirectional blocks over the corrupted input (kept tokens, one
sentinel per noise span); the decoder is `n_layer_dec` causal blocks over the target, each with
cross-attention to the encoder's output (`model.Block(cross=True)`). One token embedding of
vocab_size + spans rows (the sentinels are ids vocab_size + i) is shared by both stacks and tied
to the output head, which predicts the sentinels too. Each stack has its own final LayerNorm
and, for pos: learned, its own position table (enc_len and dec_len rows: the lengths the span
layout fixes); sinusoidal and rope positions are added per stack, cross-attention has none. The
pos, activation, norm and MoE choices apply to both stacks. `trainer/accounting.py` counts
exactly these parameters and matmuls.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import GPT, Block, cross_entropy, embed, moe_aux
from .spec import ModelSpec


class EncoderDecoder(nn.Module):
    def __init__(self, m: ModelSpec):
        super().__init__()
        self.spec = m
        learned = m.pos == "learned"
        self.wte = nn.Embedding(m.embedding_rows, m.d_model)
        self.wpe_enc = nn.Embedding(m.enc_len, m.d_model) if learned else None
        self.wpe_dec = nn.Embedding(m.dec_len, m.d_model) if learned else None
        self.encoder = nn.ModuleList(Block(m, causal=False) for _ in range(m.n_layer_enc))
        self.decoder = nn.ModuleList(Block(m, causal=True, cross=True) for _ in range(m.n_layer_dec))
        self.ln_enc = nn.LayerNorm(m.d_model, bias=False)
        self.ln_dec = nn.LayerNorm(m.d_model, bias=False)
        self.head = None if m.tied_head else nn.Linear(m.d_model, m.logit_rows, bias=False)
        self.apply(self._init)
        # GPT-2's residual scaling, per stack: 1/sqrt(residual branches) (decoder: 3 per block)
        for blocks, branches in ((self.encoder, 2 * m.n_layer_enc), (self.decoder, 3 * m.n_layer_dec)):
            std = 0.02 / math.sqrt(branches)
            for name, p in blocks.named_parameters():
                if name.endswith("proj.weight") or name.endswith("w_out"):
                    nn.init.normal_(p, mean=0.0, std=std)
                elif name.endswith("w_in"):
                    nn.init.normal_(p, mean=0.0, std=0.02)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, targets: torch.Tensor | None = None):
        """src (B, enc_len) corrupted input, tgt (B, dec_len) decoder input (the target from its
        first sentinel), targets (B, dec_len) the next target tokens (-100: ignored). Returns
        (logits (B, dec_len, vocab + spans), mean ce in nats per target token or None, MoE aux)."""
        m = self.spec
        x, rope = embed(src, self.wte, self.wpe_enc, m)
        moe_stats = []
        for block in self.encoder:
            x, stats = block(x, rope)
            moe_stats.append(stats)
        memory = self.ln_enc(x)
        y, rope = embed(tgt, self.wte, self.wpe_dec, m)
        for block in self.decoder:
            y, stats = block(y, rope, memory=memory)
            moe_stats.append(stats)
        h = self.ln_dec(y)
        logits = self.head(h) if self.head is not None else F.linear(h, self.wte.weight)
        stats_moe = [s for s in moe_stats if s is not None]
        return logits, cross_entropy(logits, targets), moe_aux(stats_moe, m)


def build_model(m: ModelSpec) -> nn.Module:
    """The network a spec describes: a GPT (decoder family) or a T5-style encoder-decoder."""
    return EncoderDecoder(m) if m.family == "encdec" else GPT(m)
