"""Model families and their objectives: what each family trains with, T5's span layout and
the checks of the span settings (pure; `trainer.spec.ModelSpec` uses them, the orchestrator
checks study files with them).

family decoder: one stack (GPT for clm, BERT for mlm, a prefix LM); family encdec: a T5-style
encoder-decoder trained with span corruption (`trainer/encdec.py`, `trainer/spans.py`).
"""

from __future__ import annotations

from typing import Any

from .checks import SpecError, _finite, _require

FAMILIES = ("decoder", "encdec")
# Which objectives each family trains with: the decoder stack is causal (clm), bidirectional
# (mlm, BERT) or a prefix LM (bidirectional over a prefix, causal after it); the T5-style
# encoder-decoder trains with span corruption.
FAMILY_OBJECTIVES = {"decoder": ("clm", "mlm", "prefix"), "encdec": ("span",)}
SPAN_DEFAULTS = {"span_noise_density": 0.15, "span_mean_length": 3.0}  # T5's


def arch_label(
    *,
    family: str,
    pos: str,
    activation: str,
    norm: str,
    objective: str,
    span_noise_density: float,
    span_mean_length: float,
) -> str:
    """`<pos>-<activation>-<norm>-<objective>`, `encdec-` first for an encoder-decoder, and
    `-rho<density>-mu<mean span>` when the span settings are not T5's defaults."""
    label = f"{pos}-{activation}-{norm}-{objective}"
    if family != "decoder":
        label = f"{family}-{label}"
    if (span_noise_density, span_mean_length) != tuple(SPAN_DEFAULTS.values()):
        label += f"-rho{span_noise_density:g}-mu{span_mean_length:g}"
    return label


def check_family_objective(family: str, objective: str, family_key: str, objective_key: str) -> None:
    """The objective must be one the family trains with (FAMILY_OBJECTIVES)."""
    if objective in FAMILY_OBJECTIVES.get(family, (objective,)):
        return
    if family == "encdec":
        raise SpecError(
            objective_key,
            f"family encdec (encoder-decoder) does not train with objective {objective}; it "
            f"trains with objective: span (T5 span corruption); {objective} is a decoder "
            f"objective: set objective: span, or {family_key}: decoder",
        )
    raise SpecError(
        objective_key,
        f"objective {objective} needs an encoder-decoder: set {family_key}: encdec, or use a "
        f"decoder objective ({', '.join(FAMILY_OBJECTIVES['decoder'])})",
    )


def span_layout(seq_len: int, density: float, mean_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of T5's `random_spans_noise_mask`: round(seq_len·density)
    noise tokens in round(noise / mean_length) spans (round half to even, as tf.round)."""
    noise = int(round(seq_len * density))
    return noise, int(round(noise / mean_length))


def check_span_settings(
    objective: str, density: Any, mean_length: Any, seq_len: int, seq_len_key: str, prefix: str = "model"
) -> None:
    """Span settings in range, only for objective span, and a sequence long enough for them:
    at least one noise token and one span, and a kept token before every span."""
    for name, value in (("span_noise_density", density), ("span_mean_length", mean_length)):
        _finite(value, f"{prefix}.{name}")
        if objective != "span":
            _require(
                value == SPAN_DEFAULTS[name],
                f"{prefix}.{name}",
                f"applies to objective: span (family: encdec) only, not {objective}; remove it",
            )
    _require(
        0 < density < 1,
        f"{prefix}.span_noise_density",
        f"must be in (0, 1) (the fraction of tokens corrupted; T5: 0.15), got {density}",
    )
    _require(
        mean_length >= 1,
        f"{prefix}.span_mean_length",
        f"must be >= 1 token (T5: 3), got {mean_length}",
    )
    if objective != "span":
        return
    noise, spans = span_layout(seq_len, density, mean_length)
    _require(
        noise >= 1 and spans >= 1 and seq_len - noise >= spans,
        seq_len_key,
        f"{seq_len} tokens are too short for span corruption at {prefix}.span_noise_density="
        f"{density:g} and {prefix}.span_mean_length={mean_length:g}: round({seq_len}·{density:g}) = "
        f"{noise} noise tokens in {spans} spans (each span needs a noise token and a kept token "
        f"before it); raise {seq_len_key} to at least {_min_span_seq_len(density, mean_length)}, "
        "raise span_noise_density or lower span_mean_length",
    )


def _min_span_seq_len(density: float, mean_length: float) -> int:
    """The shortest sequence whose span layout is valid (for the error message)."""
    for n in range(2, 1 << 16):
        noise, spans = span_layout(n, density, mean_length)
        if noise >= 1 and spans >= 1 and n - noise >= spans:
            return n
    return 1 << 16
