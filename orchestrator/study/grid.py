"""Expand a study's grid into planned runs: pure functions, no Ray, no MLflow.

Every planned run is one (N, D, MoE, seed) point with a frozen `RunSpec` whose hash is its key.
Token budgets are rounded to whole optimizer steps, so the key, the FLOPs and what the trainer
does agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trainer.accounting import (
    count_params,
    flops_per_example,
    flops_per_token,
    match_flops_depths,
    shape_for_params,
)
from trainer.spec import ModelSpec, RunSpec, SpecError

from .config import ArchSetting, ExplicitShape, MoESetting, Size, StudyConfig, StudyError
from .families import arch_fields


@dataclass(frozen=True)
class PlannedRun:
    """One point of the study, with its accounting under every convention."""

    key: str
    spec: RunSpec
    n_params: int  # total, embeddings included
    n_params_active: int  # per token (MoE: shared + top_k routed + attention + router + emb)
    n_params_nonembedding: int
    flops: float  # training FLOPs for `tokens`, chinchilla convention
    flops_6n: float
    flops_kaplan: float
    trunk_key: str | None = None  # wsd: branches of one trunk share it
    budget: float | None = None  # isoflop: the designed budget C (chinchilla FLOPs, as `flops`)
    n_params_enc: int = 0  # encdec: the encoder stack's non-embedding parameters
    n_params_dec: int = 0  # encdec: the decoder stack's non-embedding parameters

    @property
    def tokens(self) -> int:
        return self.spec.tokens

    @property
    def label(self) -> str:
        m = self.spec.model
        moe = (
            f"-E{m.experts}k{m.top_k}" + (f"g{m.granularity:g}" if m.granularity != 1 else "")
            if m.is_moe
            else ""
        )
        arch = "" if m.arch_label == "learned-gelu-pre-clm" else f"-{m.arch_label}"
        depth = f"{m.n_layer_enc}+{m.n_layer_dec}" if m.family == "encdec" else str(m.n_layer)
        return f"L{depth}-d{m.d_model}{moe}{arch}"

    @property
    def run_name(self) -> str:
        """The point's MLflow run name, e.g. L2-d64-D1.6e+07-s0."""
        return f"{self.label}-D{self.tokens:.2g}-s{self.spec.seed}"

    def mlflow_params(self) -> dict[str, Any]:
        """The documented per-point params (docs/CONTRACTS.md): users' scripts read these."""
        m, r = self.spec.model, self.spec.recipe
        return {
            "run_key": self.key,
            "n_params": self.n_params,
            "n_params_active": self.n_params_active,
            "n_params_nonembedding": self.n_params_nonembedding,
            "tokens": self.tokens,
            "flops": f"{self.flops:.6e}",
            "flops_6n": f"{self.flops_6n:.6e}",
            "flops_kaplan": f"{self.flops_kaplan:.6e}",
            "experts": m.experts,
            "top_k": m.top_k,
            "n_layer": m.n_layer,
            "d_model": m.d_model,
            "n_head": m.n_head,
            "d_ff": m.d_ff,
            "d_expert": m.d_expert,
            "granularity": f"{m.granularity:g}",
            "shared_experts": m.shared_experts,
            "tied_head": m.tied_head,
            "seed": self.spec.seed,
            "schedule": r.schedule,
            "vocab_size": m.vocab_size,
            "seq_len": m.seq_len,
            "batch_size": r.batch_size,
            "lr": r.lr,
            "warmup_tokens": self.spec.warmup_tokens,
            "data_source": self.spec.data.source,
            "trunk_key": self.trunk_key or "",
            **({"budget": f"{self.budget:.6e}"} if self.budget is not None else {}),
            # width-scaled lr: the base width and this size's own peak lr
            **(
                {"lr_base_width": r.lr_base_width, "lr_peak": f"{r.peak_lr(m.d_model):.6g}"}
                if r.lr_base_width
                else {}
            ),
            "pos": m.pos,
            "activation": m.activation,
            "norm": m.norm,
            "objective": m.objective,
            "arch": m.arch_label,
            "family": m.family,
            **(self._encdec_params() if m.family == "encdec" else {}),
        }

    def _encdec_params(self) -> dict[str, Any]:
        """An encoder-decoder's stacks, span settings and per-example lengths (docs/CONTRACTS.md)."""
        m = self.spec.model
        return {
            "n_layer_enc": m.n_layer_enc,
            "n_layer_dec": m.n_layer_dec,
            "n_params_enc": self.n_params_enc,
            "n_params_dec": self.n_params_dec,
            "span_noise_density": m.span_noise_density,
            "span_mean_length": m.span_mean_length,
            "enc_len": m.enc_len,
            "dec_len": m.dec_len,
            "flops_per_example": f"{flops_per_example(m, 'chinchilla'):.6e}",
        }


def _round_tokens(tokens: float, per_step: int, key: str) -> int:
    if tokens < per_step:
        raise StudyError(
            key,
            f"{tokens:g} tokens is less than one batch ({per_step} = "
            "train.batch_size x data.seq_len); raise tokens or lower batch_size",
        )
    return int(round(tokens / per_step)) * per_step


def base_shape(size: Size, cfg: StudyConfig, key: str) -> ModelSpec:
    """The dense shape for one entry of grid.sizes (explicit, or by target total parameters)."""
    rule, data = cfg.model, cfg.data
    try:
        if isinstance(size, ExplicitShape):
            n_head = size.n_head or max(1, size.d_model // rule.d_head)
            if size.d_model % n_head:
                raise StudyError(
                    f"{key}.d_model",
                    f"d_model={size.d_model} is not divisible by "
                    f"{n_head} heads; use a multiple of model.d_head "
                    f"({rule.d_head}) or give n_head",
                )
            return ModelSpec(
                n_layer=size.n_layer,
                d_model=size.d_model,
                n_head=n_head,
                vocab_size=data.vocab_size,
                seq_len=data.seq_len,
                tied_head=rule.tied_head,
            )
        shape = shape_for_params(
            size,
            d_head=rule.d_head,
            aspect_ratio=rule.aspect_ratio,
            vocab_size=data.vocab_size,
            seq_len=data.seq_len,
            tied_head=rule.tied_head,
        )
    except SpecError as e:
        raise StudyError(key, e.message) from None
    check_built_size(shape, size, key)
    return shape


MAX_SIZE_ERROR = 3.0  # the nearest shape of the rule may be this far (×) from its target


def check_built_size(shape: ModelSpec, target: float, key: str) -> None:
    """The shape rule caps at 512 layers (and steps coarsely at tiny sizes): a target it cannot
    build within MAX_SIZE_ERROR× is an error, not a silently different model."""
    n = count_params(shape).total
    capped = shape.n_layer >= 512 and n < target / 1.25
    if capped or not (1 / MAX_SIZE_ERROR <= n / target <= MAX_SIZE_ERROR):
        why = "the shape rule caps at 512 layers" if capped else "the shape rule has no shape near it"
        raise StudyError(
            key,
            f"a target of {target:.3g} parameters cannot be built: {why}; the "
            f"nearest shape (n_layer={shape.n_layer}, d_model={shape.d_model}) has "
            f"{n:.3g}; raise model.aspect_ratio, or give an explicit shape "
            "{n_layer, d_model}",
        )


def check_distinct_sizes(bases: list[ModelSpec], sizes: tuple) -> None:
    """Two entries of grid.sizes that build the same shape would silently be one run."""
    seen: dict[tuple[int, ...], int] = {}
    for i, (b, s) in enumerate(zip(bases, sizes)):
        k = (b.n_layer, b.d_model, b.n_head, *_depths(s))
        if k in seen:
            j = seen[k]
            raise StudyError(
                f"grid.sizes[{i}]",
                f"{_size_text(s)} builds the same shape as "
                f"grid.sizes[{j}] ({_size_text(sizes[j])}): n_layer={b.n_layer}, "
                f"d_model={b.d_model}, so both would be one run; remove one, or "
                "change model.aspect_ratio / give explicit shapes",
            )
        seen[k] = i


def _size_text(size: Size) -> str:
    return (
        f"{size:.3g} parameters"
        if isinstance(size, float)
        else f"{{n_layer: {size.n_layer}, d_model: {size.d_model}}}"
    )


def with_moe(base: ModelSpec, moe: MoESetting, key: str) -> ModelSpec:
    if moe.experts == 1:
        return base
    if base.d_ff % moe.granularity:
        raise StudyError(
            f"{key}.granularity",
            f"d_ff={base.d_ff} is not divisible by granularity {moe.granularity}; use a divisor of 4·d_model",
        )
    try:
        return replace(
            base,
            experts=moe.experts,
            top_k=moe.top_k,
            d_expert=base.d_ff // moe.granularity,
            shared_experts=moe.shared_experts,
            aux_loss_coef=moe.aux_loss_coef,
            z_loss_coef=moe.z_loss_coef,
        )
    except SpecError as e:
        raise StudyError(key, e.message) from None


def with_arch(
    model: ModelSpec, arch: ArchSetting, key: str, depths: tuple[int, int] = (0, 0), match: bool = False
) -> ModelSpec:
    """The model with one grid.arch variant's choices (pos, activation, norm, objective, family,
    span settings). An encoder-decoder takes `depths` (n_layer_enc, n_layer_dec; 0: n_layer),
    or with `match` (grid.match_flops) the depths whose FLOPs per token match the decoder of
    the same shape and axes."""
    try:
        fields = arch_fields(arch)
        if arch.family != "encdec":
            return replace(model, **fields)
        encdec = replace(model, **fields, n_layer_enc=depths[0], n_layer_dec=depths[1])
        if match:
            decoder = replace(model, pos=arch.pos, activation=arch.activation, norm=arch.norm)
            encdec = match_flops_depths(decoder, encdec)
        return encdec
    except SpecError as e:
        raise StudyError(f"{key}.{e.field.split('.', 1)[-1]}", e.message) from None


def _default_arch(cfg: StudyConfig) -> ArchSetting:
    m = cfg.model
    return ArchSetting(
        pos=m.pos,
        activation=m.activation,
        norm=m.norm,
        objective=m.objective,
        family=m.family,
        span_noise_density=m.span_noise_density,
        span_mean_length=m.span_mean_length,
    )


def _depths(size: Size) -> tuple[int, int]:
    """An explicit size's encoder/decoder depths (0: n_layer)."""
    return (size.n_layer_enc, size.n_layer_dec) if isinstance(size, ExplicitShape) else (0, 0)


def _active(model: ModelSpec) -> int:
    return count_params(model).active


def _points(cfg: StudyConfig) -> Iterable[tuple[ModelSpec, float, int, str, float | None]]:
    """(model, tokens, seed, yaml key of the token budget, isoflop budget or None) for every
    grid kind."""
    g = cfg.grid
    bases = [base_shape(s, cfg, f"grid.sizes[{i}]") for i, s in enumerate(g.sizes)]
    check_distinct_sizes(bases, g.sizes)
    for a, arch in enumerate(g.arch):
        akey = f"grid.arch[{a}]"
        for j, moe in enumerate(g.moe):
            models = [
                with_arch(with_moe(b, moe, f"grid.moe[{j}]"), arch, akey, _depths(s), g.match_flops)
                for b, s in zip(bases, g.sizes)
            ]
            for seed in g.seeds:
                for model in models:
                    for i, d in enumerate(g.tokens):
                        yield model, d, seed, f"grid.tokens[{i}]", None
                    for i, r in enumerate(g.tokens_per_param):
                        yield model, r * _active(model), seed, f"grid.tokens_per_param[{i}]", None
                if g.isoflop is not None:
                    for model, d, key, budget in _isoflop_points(cfg, moe, j, arch, akey):
                        yield model, d, seed, key, budget
    for i, run in enumerate(g.runs):
        key = f"grid.runs[{i}]"
        model = with_moe(base_shape(run.size, cfg, f"{key}.size"), run.moe, f"{key}.moe")
        model = with_arch(model, _default_arch(cfg), "model", _depths(run.size), g.match_flops)
        yield model, run.tokens, run.seed, f"{key}.tokens", None


ISOFLOP_TOLERANCE = 0.05  # a point's logged FLOPs are within 5% of its budget


def _isoflop_points(cfg: StudyConfig, moe: MoESetting, j: int, arch: ArchSetting, akey: str):
    """Chinchilla Approach 2: per budget C, `points` sizes log-spaced ±span decades around the
    centre N_c = sqrt(C / (6·r)) (r tokens per parameter). Each is trained on the D that spends
    exactly C under the logged (chinchilla) convention, D = C / flops_per_token(model), not
    C / (6·N): attention and the head would otherwise put points 1.1-1.4× off their budget."""
    iso = cfg.grid.isoflop
    if iso is None:
        raise ValueError("isoflop_runs needs grid.isoflop")
    rule, data = cfg.model, cfg.data
    per_step = cfg.train.batch_size * data.seq_len
    for b, budget in enumerate(iso.budgets):
        key = f"grid.isoflop.budgets[{b}]"
        centre = math.sqrt(budget / (6.0 * iso.tokens_per_param))
        seen: set[tuple[int, int]] = set()
        for target in centre * np.logspace(-iso.span, iso.span, iso.points):
            try:
                base = shape_for_params(
                    float(target),
                    d_head=rule.d_head,
                    aspect_ratio=rule.aspect_ratio,
                    vocab_size=data.vocab_size,
                    seq_len=data.seq_len,
                    tied_head=rule.tied_head,
                )
            except SpecError as e:
                raise StudyError(
                    key,
                    f"budget {budget:g} needs a model of {target:.3g} params: "
                    f"{e.message}; raise the budget or lower grid.isoflop.span",
                ) from None
            check_built_size(base, float(target), key)
            if (base.n_layer, base.d_model) in seen:
                continue
            seen.add((base.n_layer, base.d_model))
            model = with_arch(with_moe(base, moe, f"grid.moe[{j}]"), arch, akey, match=cfg.grid.match_flops)
            tokens = budget / flops_per_token(model, "chinchilla")  # each variant's own FLOPs
            _check_budget_reachable(model, tokens, budget, per_step, key)
            yield model, tokens, key, budget


def _check_budget_reachable(model: ModelSpec, tokens: float, budget: float, per_step: int, key: str) -> None:
    """Tokens are rounded to whole optimizer steps: too few steps and no D lands near C."""
    steps = max(1, round(tokens / per_step))
    spent = flops_per_token(model, "chinchilla") * steps * per_step
    if abs(spent / budget - 1) > ISOFLOP_TOLERANCE:
        raise StudyError(
            key,
            f"budget {budget:.3g} gives the {count_params(model).total:.3g}-"
            f"parameter point only {tokens / per_step:.2g} optimizer steps, so its "
            f"FLOPs ({spent:.3g}) cannot be within 5% of the budget; raise the "
            "budget, lower grid.isoflop.span or train.batch_size",
        )


def expand(cfg: StudyConfig) -> list[PlannedRun]:
    """Every run of the study, deduplicated by key, largest FLOPs first (Ray has no priorities,
    so the submitter orders the work)."""
    per_step = cfg.train.batch_size * cfg.data.seq_len
    raw = []
    for model, tokens, seed, key, budget in _points(cfg):
        raw.append((model, _round_tokens(tokens, per_step, key), seed, key, budget))

    # wsd: every branch of one trunk (same model and seed) shares its warmup, sized to the
    # shortest branch, so the trunk is the same stable-phase run for all of them.
    warmup: dict[tuple, int] = {}
    for model, tokens, seed, _, _ in raw:
        k = (model, seed)
        warmup[k] = min(warmup.get(k, tokens), tokens)
    runs: dict[str, PlannedRun] = {}
    for model, tokens, seed, key, budget in raw:
        base = warmup[(model, seed)] if cfg.train.schedule == "wsd" else tokens
        wt = int(cfg.train.warmup_frac * base) // per_step * per_step
        try:
            spec = RunSpec(
                model=model, data=cfg.data, recipe=cfg.train, tokens=tokens, seed=seed, warmup_tokens=wt
            )
        except SpecError as e:
            raise StudyError(key, e.message) from None
        run_key = spec.key()
        if run_key in runs:
            continue
        counts = count_params(model)
        runs[run_key] = PlannedRun(
            key=run_key,
            spec=spec,
            n_params=counts.total,
            n_params_active=counts.active,
            n_params_nonembedding=counts.nonembedding,
            flops=flops_per_token(model, "chinchilla") * tokens,
            flops_6n=flops_per_token(model, "6n") * tokens,
            flops_kaplan=flops_per_token(model, "kaplan") * tokens,
            trunk_key=spec.trunk_key() if cfg.train.schedule == "wsd" else None,
            budget=budget,
            n_params_enc=counts.enc,
            n_params_dec=counts.dec,
        )
    return sorted(runs.values(), key=lambda r: (-r.flops, r.key))


@dataclass(frozen=True)
class WorkItem:
    """What one Ray task does: a single run, or (wsd) every branch of one trunk in ascending D."""

    runs: tuple[PlannedRun, ...]
    trunk_key: str | None = None

    @property
    def flops(self) -> float:
        """Compute actually spent: a wsd trunk trains up to its longest branch once, plus the
        cooldowns; a plain run trains its budget."""
        if self.trunk_key is None:
            return sum(r.flops for r in self.runs)
        longest = max(r.flops for r in self.runs)
        cooldowns = sum(r.flops * r.spec.recipe.cooldown_frac for r in self.runs)
        return longest * (1 - self.runs[-1].spec.recipe.cooldown_frac) + cooldowns


def work_items(runs: list[PlannedRun]) -> list[WorkItem]:
    """Group wsd branches by trunk; order the items largest compute first."""
    groups: dict[str, list[PlannedRun]] = {}
    items = []
    for r in runs:
        if r.trunk_key is None:
            items.append(WorkItem((r,)))
        else:
            groups.setdefault(r.trunk_key, []).append(r)
    for trunk, members in groups.items():
        items.append(WorkItem(tuple(sorted(members, key=lambda r: r.tokens)), trunk))
    return sorted(items, key=lambda w: -w.flops)
