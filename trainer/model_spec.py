"""The model part of a run's specification: the Transformer's shape and architecture axes
(`ModelSpec`), their choices and defaults. trainer/spec.py re-exports every name here.

Architecture fields at their defaults (today's model) are left out of run keys, so specs written
before a field existed keep their keys (trainer/spec.py, RUN_IDENTITY).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checks import _finite, _positive_int, _require
from .families import (
    FAMILIES,
    SPAN_DEFAULTS,
    arch_label,
    check_family_objective,
    check_span_settings,
    span_layout,
)

POSITIONS = ("learned", "sinusoidal", "rope", "none")
ACTIVATIONS = ("gelu", "relu", "swiglu")
NORMS = ("pre", "post")
OBJECTIVES = ("clm", "mlm", "prefix", "span")
# Architecture fields and their defaults (today's model). A spec whose fields all equal these
# hashes exactly as before they existed: `to_dict` leaves default-valued ones out.
ARCH_DEFAULTS: dict[str, Any] = {
    "pos": "learned",
    "activation": "gelu",
    "norm": "pre",
    "objective": "clm",
    "family": "decoder",
    **SPAN_DEFAULTS,
}
ARCH_CHOICES = {
    "pos": POSITIONS,
    "activation": ACTIVATIONS,
    "norm": NORMS,
    "objective": OBJECTIVES,
    "family": FAMILIES,
}
LABEL_KEYS = ("pos", "activation", "norm", "objective")  # the `arch` label (family prefixed)
# Model fields left out of run keys at these values (decoders have no per-stack depths)
MODEL_OMITTED_AT: dict[str, Any] = {**ARCH_DEFAULTS, "n_layer_enc": 0, "n_layer_dec": 0}


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a Transformer whose FFN is dense (experts=1) or a Mixture of Experts.

    d_ff defaults to 4·d_model; d_expert (width of one routed expert) defaults to d_ff, so
    granularity G = d_ff / d_expert is 1 unless set. Experts=1 means dense.

    family decoder: one stack of n_layer blocks (GPT for clm, BERT for mlm, a prefix LM).
    family encdec (T5): an encoder of n_layer_enc and a decoder of n_layer_dec blocks (0: both
    n_layer; resolved here), cross-attention in every decoder block, trained on span
    corruption whose layout (`span_layout`) fixes the encoder and decoder lengths.
    """

    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    seq_len: int
    d_ff: int = 0
    experts: int = 1
    top_k: int = 1
    d_expert: int = 0
    shared_experts: int = 0
    tied_head: bool = True
    aux_loss_coef: float = 0.01  # Switch load-balancing loss weight
    z_loss_coef: float = 0.001  # router z-loss weight
    pos: str = "learned"
    activation: str = "gelu"
    norm: str = "pre"
    objective: str = "clm"
    family: str = "decoder"
    n_layer_enc: int = 0  # encdec: encoder blocks (0: n_layer)
    n_layer_dec: int = 0  # encdec: decoder blocks (0: n_layer)
    span_noise_density: float = 0.15  # span: fraction of tokens corrupted (T5: 0.15)
    span_mean_length: float = 3.0  # span: mean corrupted span length in tokens (T5: 3)

    def __post_init__(self) -> None:
        for name, allowed in ARCH_CHOICES.items():
            value = getattr(self, name)
            _require(
                value in allowed, f"model.{name}", f"unknown value {value!r}; use one of {', '.join(allowed)}"
            )
        for name in ("n_layer", "d_model", "n_head", "vocab_size", "seq_len", "experts", "top_k"):
            _positive_int(getattr(self, name), f"model.{name}")
        self._check_family()
        _require(
            self.d_model % self.n_head == 0,
            "model.n_head",
            f"d_model={self.d_model} is not divisible by n_head={self.n_head}",
        )
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        _positive_int(self.d_ff, "model.d_ff")
        if self.d_expert == 0:
            object.__setattr__(self, "d_expert", self.d_ff)
        _positive_int(self.d_expert, "model.d_expert")
        _positive_int(self.shared_experts, "model.shared_experts", minimum=0)
        _require(
            self.top_k <= self.experts,
            "model.top_k",
            f"top_k={self.top_k} exceeds experts={self.experts}; use top_k <= experts",
        )
        if self.experts == 1:
            _require(
                self.top_k == 1 and self.shared_experts == 0,
                "model.experts",
                "a dense model (experts: 1) takes no top_k or shared_experts",
            )
        _require(isinstance(self.tied_head, bool), "model.tied_head", "must be true or false")
        _finite(self.aux_loss_coef, "model.aux_loss_coef", lo=0)
        _finite(self.z_loss_coef, "model.z_loss_coef", lo=0)

    def _check_family(self) -> None:
        """family x objective, positions, per-stack depths and the span settings."""
        check_family_objective(self.family, self.objective, "model.family", "model.objective")
        _require(
            not (self.pos == "none" and self.objective != "clm"),
            "model.pos",
            f"objective {self.objective} cannot be position-free: its attention is "
            "bidirectional (over the prefix, or the encoder's input), so without positions it "
            "sees a bag of tokens; use pos: learned, sinusoidal or rope",
        )
        for name in ("n_layer_enc", "n_layer_dec"):
            _positive_int(getattr(self, name), f"model.{name}", minimum=0)
            if self.family == "encdec":
                object.__setattr__(self, name, getattr(self, name) or self.n_layer)
            else:
                _require(
                    getattr(self, name) == 0,
                    f"model.{name}",
                    "sets the depth of an encoder-decoder stack; family decoder has one stack "
                    "of n_layer blocks: remove it or set family: encdec",
                )
        check_span_settings(
            self.objective, self.span_noise_density, self.span_mean_length, self.seq_len, "model.seq_len"
        )
        for name in SPAN_DEFAULTS:  # 3 and 3.0 are one setting (and one run key)
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def span_layout(self) -> tuple[int, int]:
        """span: (noise tokens, noise spans) per sequence of seq_len tokens (T5's rule)."""
        return span_layout(self.seq_len, self.span_noise_density, self.span_mean_length)

    @property
    def enc_len(self) -> int:
        """encdec: encoder input length (kept tokens plus one sentinel per span); else seq_len."""
        if self.family != "encdec":
            return self.seq_len
        noise, spans = self.span_layout
        return self.seq_len - noise + spans

    @property
    def dec_len(self) -> int:
        """encdec: decoder positions = predicted target tokens. The target is one sentinel then
        the span's tokens, per span (noise + spans tokens); the decoder reads it from its first
        sentinel and predicts the rest, so noise + spans - 1. Decoder: seq_len."""
        if self.family != "encdec":
            return self.seq_len
        noise, spans = self.span_layout
        return noise + spans - 1

    @property
    def logit_rows(self) -> int:
        """Output classes: the vocabulary, plus the sentinels an encdec target holds."""
        return self.embedding_rows if self.family == "encdec" else self.vocab_size

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    @property
    def granularity(self) -> float:
        return self.d_ff / self.d_expert

    @property
    def embedding_rows(self) -> int:
        """Token embedding rows: the vocabulary, plus the mask token for mlm, plus one sentinel
        per noise span for span corruption."""
        if self.objective == "span":
            return self.vocab_size + self.span_layout[1]
        return self.vocab_size + (1 if self.objective == "mlm" else 0)

    @property
    def arch_label(self) -> str:
        """Short label of the non-size choices, e.g. `learned-gelu-pre-clm`; an encoder-decoder
        is prefixed `encdec-`, and span settings off T5's defaults are appended."""
        return arch_label(**{k: getattr(self, k) for k in ("family", *LABEL_KEYS, *SPAN_DEFAULTS)})


def ffn_hidden(width: int, activation: str) -> int:
    """Hidden width of an FFN of nominal width `width`: swiglu uses round(2/3·width) so that its
    three matrices hold about the parameters of the ungated layer's two (exactly when 3 | width)."""
    return max(1, int(round(2 * width / 3))) if activation == "swiglu" else width
