"""Parameter and FLOP accounting: pure functions of a `ModelSpec` (no torch import).

The counts mirror `trainer/model.py` exactly (tests pin them against `sum(p.numel())` of the
built model and against `torch.utils.flop_counter.FlopCounterMode`). The architecture is:

    token embedding  V·d          (mlm: (V+1)·d, the mask token's row)
    position embed.  T·d          (pos: learned; sinusoidal, rope and none have no parameters)
    per layer        ln1 d + attention 4·d² (qkv 3·d², out d²) + ln2 d + FFN
        dense FFN    ffn(d_ff)
        MoE FFN      router d·E + E routed experts ffn(d_expert) each
                     + shared experts: one FFN ffn(S·d_expert) (always on)
    ffn(w) = 2·d·w for gelu/relu; swiglu: 3·d·h with h = round(2/3·w) (gate, value, out)
    final norm       d
    head             V·d when untied (tied: the token embedding matrix)

Linears have no biases; LayerNorms have a weight and no bias.

Parameter counts (`ParamCounts`):
- total: every parameter (what memory holds; Chinchilla's N).
- embedding: token + position embeddings, plus the head when untied (Kaplan excludes both the
  embedding and the unembedding matrices from N).
- nonembedding = total - embedding (Kaplan's N, about 12·n_layer·d²).
- active: parameters one token uses = total - per MoE layer (experts - top_k) routed experts
  (shared experts, top_k routed experts, attention, router and embeddings all count).
- active_nonembedding = nonembedding minus the same inactive experts.

FLOPs per training token (`flops_per_token(model, convention)`), T = seq_len, L = n_layer:
- "6n":         6·N_active (6·N_total for dense), the common C = 6·N·D rule.
- "kaplan":     6·N_active_nonembedding + 6·L·T·d (Kaplan et al. 2020, C_fwd = 2N + 2·L·T·d).
- "chinchilla": 3 × forward, forward = 2·(matmul parameters one token uses: attention, dense FFN
                or router + shared + top_k routed experts, and the unembedding head, tied or
                not) + 4·L·T·d for attention logits and values (causal masking counted as full
                attention, as Chinchilla's Appendix F does). Not counted: the embedding lookups
                (gathers, not matmuls), norms, softmax and nonlinearities (each O(d) per token).
                The forward part equals what FlopCounterMode counts for one forward pass.

Objectives: mlm adds the mask token's embedding row (never a logit); prefix is a clm-shaped
network (the prefix mask changes no count). FLOPs per token are per token of the data stream,
seq_len per training example (`flops_per_example` = seq_len · flops_per_token).

Encoder-decoder (family encdec, objective span; `trainer/encdec.py`). Span corruption of a
seq_len-token example gives the encoder I = enc_len positions (kept tokens + one sentinel per
span) and the decoder O = dec_len positions (the target minus its last token), S = spans:
    token embedding  (V+S)·d, shared by both stacks and tied to the head (untied: (V+S)·d more)
    position embed.  (I + O)·d    (pos: learned; one table per stack)
    encoder layer    2·d + 4·d² + FFN            × n_layer_enc, then a final norm d
    decoder layer    3·d + 4·d² (self) + 4·d² (cross: q d², kv 2·d², out d²) + FFN
                                                 × n_layer_dec, then a final norm d
`enc`/`dec` (n_params_enc, n_params_dec) are the non-embedding parameters of each stack
(blocks and final norm): nonembedding = enc + dec. FLOPs per example (forward, chinchilla):
    2·[Le·I·(4·d² + F) + Ld·(O·(6·d² + F) + I·2·d²) + O·(V+S)·d]
    + 4·d·[Le·I² + Ld·(O² + O·I)]
(F: the FFN matmul parameters one position uses; cross-attention keys and values are projected
once per encoder position). "6n" is 6 × the parameters on each position's path (embedding,
its stack's position table and blocks, the head for decoder positions), summed over the I + O
positions; "kaplan" is 6·(I·enc + O·dec) (active, non-embedding) plus 6·d·[Le·I² + Ld·(O² + O·I)].
Per token: per example / seq_len.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .spec import ModelSpec, SpecError, ffn_hidden

CONVENTIONS = ("6n", "kaplan", "chinchilla")


@dataclass(frozen=True)
class ParamCounts:
    total: int
    nonembedding: int
    active: int
    embedding: int
    active_nonembedding: int
    per_layer: int  # one block, all experts (encdec: one encoder block)
    per_routed_expert: int  # one routed expert (0 for dense)
    head: int  # untied head matrix (0 when tied)
    enc: int = 0  # encdec: the encoder stack's non-embedding parameters (0 for decoders)
    dec: int = 0  # encdec: the decoder stack's non-embedding parameters (0 for decoders)

    def as_dict(self) -> dict[str, int]:
        """`n_params`, `n_params_<field>`; n_params_enc/dec only for an encoder-decoder."""
        return {
            f"n_params_{k}" if k != "total" else "n_params": v
            for k, v in self.__dict__.items()
            if not (k in ("enc", "dec") and not self.enc)
        }


def ffn_matrix_params(m: ModelSpec, width: int) -> int:
    """Weights of one FFN of nominal width `width` (also its forward matmul FLOPs / 2)."""
    hidden = ffn_hidden(width, m.activation)
    return (3 if m.activation == "swiglu" else 2) * m.d_model * hidden


def _shared_params(m: ModelSpec) -> int:
    return ffn_matrix_params(m, m.shared_experts * m.d_expert) if m.shared_experts else 0


def _ffn_params(m: ModelSpec) -> tuple[int, int]:
    """(FFN params of one layer, one routed expert's params)."""
    d = m.d_model
    if not m.is_moe:
        return ffn_matrix_params(m, m.d_ff), 0
    expert = ffn_matrix_params(m, m.d_expert)
    return d * m.experts + m.experts * expert + _shared_params(m), expert


def count_params(model: ModelSpec) -> ParamCounts:
    """Exact parameter counts of the model `trainer.encdec.build_model(model)` builds."""
    if model.family == "encdec":
        return _count_encdec(model)
    d, V, T, L = model.d_model, model.vocab_size, model.seq_len, model.n_layer
    ffn, expert = _ffn_params(model)
    per_layer = 2 * d + 4 * d * d + ffn
    head = 0 if model.tied_head else V * d
    embedding = model.embedding_rows * d + (T * d if model.pos == "learned" else 0) + head
    total = embedding + L * per_layer + d
    inactive = L * (model.experts - model.top_k) * expert if model.is_moe else 0
    nonembedding = total - embedding
    return ParamCounts(
        total=total,
        nonembedding=nonembedding,
        active=total - inactive,
        embedding=embedding,
        active_nonembedding=nonembedding - inactive,
        per_layer=per_layer,
        per_routed_expert=expert,
        head=head,
    )


def _count_encdec(m: ModelSpec) -> ParamCounts:
    """Exact parameter counts of `trainer.encdec.EncoderDecoder(m)` (module doc)."""
    d = m.d_model
    ffn, expert = _ffn_params(m)
    enc_layer = 2 * d + 4 * d * d + ffn
    dec_layer = 3 * d + 8 * d * d + ffn
    enc = m.n_layer_enc * enc_layer + d
    dec = m.n_layer_dec * dec_layer + d
    head = 0 if m.tied_head else m.logit_rows * d
    positions = (m.enc_len + m.dec_len) * d if m.pos == "learned" else 0
    embedding = m.embedding_rows * d + positions + head
    inactive = (m.n_layer_enc + m.n_layer_dec) * (m.experts - m.top_k) * expert if m.is_moe else 0
    total = embedding + enc + dec
    return ParamCounts(
        total=total,
        nonembedding=enc + dec,
        active=total - inactive,
        embedding=embedding,
        active_nonembedding=enc + dec - inactive,
        per_layer=enc_layer,
        per_routed_expert=expert,
        head=head,
        enc=enc,
        dec=dec,
    )


def _ffn_active_matmul(model: ModelSpec) -> int:
    """FFN matmul parameters one position uses (MoE: router, top_k routed and shared experts)."""
    if model.is_moe:
        return (
            model.d_model * model.experts
            + model.top_k * ffn_matrix_params(model, model.d_expert)
            + _shared_params(model)
        )
    return ffn_matrix_params(model, model.d_ff)


def forward_matmul_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs per token of every matmul (weights and attention), chinchilla convention
    (encdec: per example / seq_len)."""
    if model.family == "encdec":
        return forward_matmul_flops_per_example(model) / model.seq_len
    d, L, T = model.d_model, model.n_layer, model.seq_len
    weights = L * (4 * d * d + _ffn_active_matmul(model)) + model.vocab_size * d
    attention = 4 * L * T * d
    return 2 * weights + attention


def forward_matmul_flops_per_example(model: ModelSpec) -> int:
    """Forward FLOPs of one training example (seq_len tokens of the stream): what
    FlopCounterMode counts for a forward pass over one example."""
    if model.family != "encdec":
        return int(forward_matmul_flops_per_token(model)) * model.seq_len
    d, Le, Ld, I, O = model.d_model, model.n_layer_enc, model.n_layer_dec, model.enc_len, model.dec_len
    F = _ffn_active_matmul(model)
    weights = Le * I * (4 * d * d + F) + Ld * (O * (6 * d * d + F) + I * 2 * d * d) + O * model.logit_rows * d
    return 2 * weights + _encdec_attention(model, 4)


def _encdec_attention(m: ModelSpec, per: int) -> int:
    """per·d·[Le·I² + Ld·(O² + O·I)]: attention logits and values of both stacks."""
    I, O = m.enc_len, m.dec_len
    return per * m.d_model * (m.n_layer_enc * I * I + m.n_layer_dec * (O * O + O * I))


def _encdec_flops_per_example(m: ModelSpec, convention: str) -> float:
    """Training FLOPs of one encdec example under "6n" or "kaplan" (module doc)."""
    c = count_params(m)
    inactive_per_layer = (m.experts - m.top_k) * c.per_routed_expert if m.is_moe else 0
    enc = c.enc - m.n_layer_enc * inactive_per_layer  # active, non-embedding
    dec = c.dec - m.n_layer_dec * inactive_per_layer
    I, O = m.enc_len, m.dec_len
    if convention == "kaplan":
        return 6.0 * (I * enc + O * dec) + 1.5 * _encdec_attention(m, 4)
    learned = m.pos == "learned"
    emb = m.embedding_rows * m.d_model
    enc_path = emb + (I * m.d_model if learned else 0) + enc
    dec_path = emb + (O * m.d_model if learned else 0) + dec + c.head
    return 6.0 * (I * enc_path + O * dec_path)


def flops_per_example(model: ModelSpec, convention: str = "chinchilla") -> float:
    """Training FLOPs of one example (seq_len tokens of the data stream) under a convention."""
    if model.family != "encdec":
        return flops_per_token(model, convention) * model.seq_len
    if convention == "chinchilla":
        return 3.0 * forward_matmul_flops_per_example(model)
    if convention in ("6n", "kaplan"):
        return _encdec_flops_per_example(model, convention)
    raise ValueError(f"unknown FLOP convention {convention!r}; use one of {', '.join(CONVENTIONS)}")


def flops_per_token(model: ModelSpec, convention: str = "chinchilla") -> float:
    """Training FLOPs (forward + backward) per token under a named convention (module doc)."""
    if model.family == "encdec":
        return flops_per_example(model, convention) / model.seq_len
    if convention == "6n":
        return 6.0 * count_params(model).active
    if convention == "kaplan":
        counts = count_params(model)
        return 6.0 * counts.active_nonembedding + 6.0 * model.n_layer * model.seq_len * model.d_model
    if convention == "chinchilla":
        return 3.0 * forward_matmul_flops_per_token(model)
    raise ValueError(f"unknown FLOP convention {convention!r}; use one of {', '.join(CONVENTIONS)}")


def training_flops(model: ModelSpec, tokens: int | float, convention: str = "chinchilla") -> float:
    """C for a token budget D: flops_per_token · D."""
    return flops_per_token(model, convention) * float(tokens)


def shape_for_params(
    target: float,
    *,
    d_head: int,
    aspect_ratio: float,
    vocab_size: int,
    seq_len: int,
    tied_head: bool = True,
    max_layers: int = 512,
    **model_kwargs,
) -> ModelSpec:
    """The dense shape nearest (in log space) to `target` TOTAL parameters under the rule:

    head dimension fixed (d_head), d_model = aspect_ratio·n_layer rounded to a multiple of d_head
    (at least one head), n_head = d_model / d_head, d_ff = 4·d_model; n_layer = 1, 2, ... .
    The count compared is the dense total including embeddings, so an MoE variant built on the
    returned shape (extra `model_kwargs` such as experts, top_k, d_expert) keeps the dense base N
    of Clark et al. Raises SpecError("size", ...) when even the smallest shape is over 2× target.
    """
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise SpecError("size", f"target parameter count must be a positive number, got {target!r}")
    for name, value in (("d_head", d_head), ("aspect_ratio", aspect_ratio)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise SpecError(f"model.{name}", f"must be positive, got {value!r}")

    def dense(n_layer: int) -> ModelSpec:
        d_model = max(d_head, int(round(aspect_ratio * n_layer / d_head)) * d_head)
        return ModelSpec(
            n_layer=n_layer,
            d_model=d_model,
            n_head=d_model // d_head,
            vocab_size=vocab_size,
            seq_len=seq_len,
            tied_head=tied_head,
        )

    best, best_err = None, math.inf
    for n_layer in range(1, max_layers + 1):
        shape = dense(n_layer)
        n = count_params(shape).total
        if n_layer == 1 and n > 2 * target:
            raise SpecError(
                "size",
                f"target {target:.3g} params is below the smallest shape of "
                f"this rule (n_layer=1, d_model={shape.d_model}: {n} params "
                f"with embeddings); raise the size, or lower model.d_head or "
                "the vocabulary",
            )
        err = abs(math.log(n / target))
        if err < best_err:
            best, best_err = shape, err
        if n > target * 4:
            break
    assert best is not None
    if model_kwargs:
        best = dataclasses.replace(best, **model_kwargs)
    return best


def match_flops_depths(decoder: ModelSpec, encdec: ModelSpec) -> ModelSpec:
    """`encdec` (same width) with the encoder/decoder depths whose training FLOPs per token
    (chinchilla) are nearest, in log, to the decoder's: depths as even as possible
    (n_layer_enc = n_layer_dec or one more), the total from 2 up. A T5 L+L encoder-decoder
    spends about the FLOPs of an L-layer decoder (each stack sees only its part of the
    sequence) while holding about twice its parameters."""
    target = flops_per_token(decoder)
    best, best_err = encdec, math.inf
    for total in range(2, 4 * decoder.n_layer + 8):
        shape = dataclasses.replace(encdec, n_layer_enc=(total + 1) // 2, n_layer_dec=total // 2)
        fpt = flops_per_token(shape)
        err = abs(math.log(fpt / target))
        if err < best_err:
            best, best_err = shape, err
        if fpt > 2 * target:
            break
    return best
