"""Model families on the grid: the encoder-decoder's keys and grid.match_flops (pure checks).

`family` (decoder | encdec), `objective` and the span settings (`span_noise_density`,
`span_mean_length`) are architecture keys of `model:` (every run's defaults) and of each
`grid.arch` entry; `n_layer_enc` / `n_layer_dec` may be given per explicit size for the
encoder-decoder variants; `grid.match_flops: true` instead designs each encoder-decoder point's
depths to match the FLOPs per token of the decoder point of the same size and axes
(`trainer.accounting.match_flops_depths`). Errors name the YAML key that holds the value: `SpecError(key, message)`, which the config turns into
its StudyError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from trainer.families import SPAN_DEFAULTS, check_family_objective, check_span_settings
from trainer.spec import SpecError

# What these checks read of the study's config (orchestrator/study/config.py imports this
# module, so it is described here rather than imported back).
DEPTH_KEYS = ("n_layer_enc", "n_layer_dec")


class _Arch(Protocol):  # frozen dataclasses: read-only members
    @property
    def pos(self) -> str: ...
    @property
    def activation(self) -> str: ...
    @property
    def norm(self) -> str: ...
    @property
    def objective(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def span_noise_density(self) -> float: ...
    @property
    def span_mean_length(self) -> float: ...


class _Grid(Protocol):
    @property
    def arch(self) -> Any: ...  # tuple of ArchSetting
    @property
    def sizes(self) -> Any: ...  # explicit shapes or parameter counts
    @property
    def runs(self) -> Any: ...  # tuple of ExplicitRun
    @property
    def match_flops(self) -> bool: ...


class _ShapeRule(Protocol):
    @property
    def family(self) -> str: ...


def check_arch_family(entry: Mapping[str, Any], resolved: Mapping[str, Any], key: str, seq_len: int) -> None:
    """One grid.arch entry (or model:, key "model") resolved against the model defaults: the
    objective suits the family, and the span settings are in range and fit data.seq_len."""

    def where(k: str) -> str:
        return f"{key}.{k}" if k in entry else f"model.{k}"

    span_prefix = key if any(k in entry for k in SPAN_DEFAULTS) else "model"
    # an entry that sets the family but keeps the default objective: blame what it wrote
    objective_key = where("objective") if "objective" in entry or "family" not in entry else where("family")
    check_family_objective(resolved["family"], resolved["objective"], where("family"), objective_key)
    check_span_settings(
        resolved["objective"],
        resolved["span_noise_density"],
        resolved["span_mean_length"],
        seq_len,
        "data.seq_len",
        span_prefix,
    )


def check_grid_family(grid: _Grid, model: _ShapeRule, key: str = "grid") -> None:
    """Per-size depths and grid.match_flops apply to encoder-decoder variants only, and
    match_flops designs the depths itself."""
    has_encdec = any(a.family == "encdec" for a in grid.arch) or (
        bool(grid.runs) and model.family == "encdec"
    )
    sizes = [(f"{key}.sizes[{i}]", s) for i, s in enumerate(grid.sizes)]
    sizes += [(f"{key}.runs[{i}].size", r.size) for i, r in enumerate(grid.runs)]
    for where, size in sizes:
        for k in DEPTH_KEYS:
            if not getattr(size, k, 0):  # a target parameter count (float) has no depths
                continue
            if not has_encdec:
                raise SpecError(
                    f"{where}.{k}",
                    "sets an encoder-decoder stack's depth, but no variant is family: encdec; "
                    "remove it or add a grid.arch entry {family: encdec, objective: span}",
                )
            if grid.match_flops:
                raise SpecError(
                    f"{where}.{k}",
                    "grid.match_flops: true designs the encoder and decoder depths itself; "
                    "remove it, or set match_flops: false to give the depths",
                )
    if grid.match_flops and not has_encdec:
        raise SpecError(
            f"{key}.match_flops",
            "designs encoder-decoder points to match the decoder's FLOPs per token, but no "
            "grid.arch entry is family: encdec; add {family: encdec, objective: span} or remove it",
        )


def arch_fields(arch: _Arch) -> dict[str, Any]:
    """The ModelSpec fields a grid.arch variant sets."""
    return {
        "pos": arch.pos,
        "activation": arch.activation,
        "norm": arch.norm,
        "objective": arch.objective,
        "family": arch.family,
        "span_noise_density": arch.span_noise_density,
        "span_mean_length": arch.span_mean_length,
    }
