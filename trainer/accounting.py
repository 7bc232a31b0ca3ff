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
    per_layer: int  # one block, all experts
    per_routed_expert: int  # one routed expert (0 for dense)
    head: int  # untied head matrix (0 when tied)

    def as_dict(self) -> dict[str, int]:
        return {f"n_params_{k}" if k != "total" else "n_params": v for k, v in self.__dict__.items()}


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
    """Exact parameter counts of the model `trainer.model.GPT(model)` builds."""
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


def forward_matmul_flops_per_token(model: ModelSpec) -> int:
    """Forward FLOPs per token of every matmul (weights and attention), chinchilla convention."""
    d, L, T = model.d_model, model.n_layer, model.seq_len
    if model.is_moe:
        ffn = (
            d * model.experts + model.top_k * ffn_matrix_params(model, model.d_expert) + _shared_params(model)
        )
    else:
        ffn = ffn_matrix_params(model, model.d_ff)
    weights = L * (4 * d * d + ffn) + model.vocab_size * d
    attention = 4 * L * T * d
    return 2 * weights + attention


def flops_per_token(model: ModelSpec, convention: str = "chinchilla") -> float:
    """Training FLOPs (forward + backward) per token under a named convention (module doc)."""
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
