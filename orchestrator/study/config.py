"""The study file: load a YAML, validate every key once, return a frozen `StudyConfig`.

Errors are `StudyError(key, message)` where `key` is the dotted YAML path (`grid.sizes[1]`) and
the message says what to do. Unknown keys are errors: a typo must not silently fall back to a
default and cost a day of compute.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from trainer.datapaths import check_paths
from trainer.families import SPAN_DEFAULTS, arch_label
from trainer.spec import ARCH_CHOICES, ARCH_DEFAULTS, RECIPE_OMITTED_AT, DataSpec, RecipeSpec, SpecError

from .families import check_arch_family, check_grid_family
from .values import (
    StudyError,
    _build,
    _check_keys,
    _integer,
    _list,
    _mapping,
    _number,
    _safe_load_bounded,
    show,
)

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_TOKENS = 1e15  # a guard against typos such as 2e51; far beyond any single run
MAX_FLOPS = 1e28
MAX_FILE_BYTES = 1 << 20  # 1 MiB: a study file is a few hundred bytes; more is a mistake or an attack
MAX_RUNS = 10_000  # runs one study may plan


# --------------------------------------------------------------------------- typed sections


@dataclass(frozen=True)
class ShapeRule:
    """How a target parameter count becomes a shape: fixed head size and d_model/n_layer."""

    d_head: int = 16
    aspect_ratio: int = 16
    tied_head: bool = True
    pos: str = "learned"  # architecture defaults of every run; grid.arch overrides them
    activation: str = "gelu"
    norm: str = "pre"
    objective: str = "clm"
    family: str = "decoder"  # decoder | encdec (orchestrator/study/families.py)
    span_noise_density: float = 0.15
    span_mean_length: float = 3.0


@dataclass(frozen=True)
class ArchSetting:
    """One entry of grid.arch, resolved against the model: defaults."""

    pos: str = "learned"
    activation: str = "gelu"
    norm: str = "pre"
    objective: str = "clm"
    family: str = "decoder"
    span_noise_density: float = 0.15
    span_mean_length: float = 3.0

    @property
    def label(self) -> str:
        return arch_label(**self.__dict__)


@dataclass(frozen=True)
class ExplicitShape:
    n_layer: int
    d_model: int
    n_head: int = 0  # 0: d_model // d_head of the shape rule
    n_layer_enc: int = 0  # encoder-decoder variants: encoder blocks (0: n_layer)
    n_layer_dec: int = 0  # encoder-decoder variants: decoder blocks (0: n_layer)


Size = ExplicitShape | float  # a float is a target total parameter count


@dataclass(frozen=True)
class MoESetting:
    """experts=1 is dense. granularity G: each routed expert is d_ff/G wide."""

    experts: int = 1
    top_k: int = 1
    granularity: int = 1
    shared_experts: int = 0
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001


@dataclass(frozen=True)
class IsoFlop:
    budgets: tuple[float, ...]
    points: int = 7
    span: float = 1.0  # decades either side of the centre
    tokens_per_param: float = 20.0  # the centre: N such that D/N = this at C = 6·N·D


@dataclass(frozen=True)
class ExplicitRun:
    size: Size
    tokens: float
    moe: MoESetting = MoESetting()
    seed: int = 0


@dataclass(frozen=True)
class Grid:
    sizes: tuple[Size, ...] = ()
    tokens: tuple[float, ...] = ()
    tokens_per_param: tuple[float, ...] = ()
    isoflop: IsoFlop | None = None
    runs: tuple[ExplicitRun, ...] = ()
    moe: tuple[MoESetting, ...] = (MoESetting(),)
    seeds: tuple[int, ...] = (0,)
    arch: tuple[ArchSetting, ...] = (ArchSetting(),)
    match_flops: bool = False  # encdec points: depths matching the decoder's FLOPs per token


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 2  # per `scalelab run`, for failures that are not bugs or divergence


@dataclass(frozen=True)
class StudyConfig:
    study: str
    data: DataSpec
    model: ShapeRule
    grid: Grid
    train: RecipeSpec
    resources: Resources
    description: str = ""
    source_path: str = field(default="", compare=False)

    def fingerprint(self) -> dict[str, Any]:
        """What makes two files the same study (the grid may grow; data and recipe may not;
        run-time settings such as the device or the eval cadence may change). Architecture keys
        at their defaults and train.eval_lengths (what is measured, not how runs train) are left
        out, so studies written before they existed keep their fingerprint."""
        from dataclasses import asdict

        from trainer.spec import RUNTIME_FIELDS

        model = {k: v for k, v in asdict(self.model).items() if ARCH_DEFAULTS.get(k, object()) != v}
        train = {
            k: v for k, v in asdict(self.train).items() if k not in RUNTIME_FIELDS and k != "eval_lengths"
        }
        return {"data": self._data_fingerprint(), "model": model, "train": _recipe_fingerprint(train)}

    def _data_fingerprint(self) -> dict[str, Any]:
        """data as fingerprinted: the zipf keys only for the zipf source, the corpus keys only for
        the corpus source (studies of other sources kept their fingerprint when they were added)."""
        from dataclasses import asdict

        from trainer.spec import CORPUS_KEYS, CORPUS_UNHASHED, ZIPF_KEYS

        d = asdict(self.data)
        if self.data.source != "zipf":
            for k in ZIPF_KEYS:
                d.pop(k, None)
        # corpus: its content and tokenizer hashes, not the folder it is in (nor the epoch guard)
        for k in CORPUS_UNHASHED if self.data.source == "corpus" else CORPUS_KEYS:
            d.pop(k, None)
        return d

    def legacy_fingerprint(self, **runtime: Any) -> dict[str, Any]:
        """The fingerprint of stores written before run-time settings left it, with those
        settings as the study ran then (`runtime`, default: as in this file)."""
        from dataclasses import asdict, replace

        train = replace(self.train, **runtime) if runtime else self.train
        model = {k: v for k, v in asdict(self.model).items() if ARCH_DEFAULTS.get(k, object()) != v}
        train_d = {k: v for k, v in asdict(train).items() if k != "eval_lengths"}
        return {"data": self._data_fingerprint(), "model": model, "train": _recipe_fingerprint(train_d)}


def _recipe_fingerprint(train: dict[str, Any]) -> dict[str, Any]:
    """Later recipe fields at their off values are left out (trainer.spec.RECIPE_OMITTED_AT)."""
    return {k: v for k, v in train.items() if RECIPE_OMITTED_AT.get(k, object()) != v}


# --------------------------------------------------------------------------- sections


def _size(value: Any, key: str) -> Size:
    if isinstance(value, Mapping):
        _check_keys(value, {"n_layer", "d_model", "n_head", "n_layer_enc", "n_layer_dec"}, key)
        for k in ("n_layer", "d_model"):
            if k not in value:
                raise StudyError(f"{key}.{k}", "missing; an explicit shape needs n_layer and d_model")
        for k, top in (("n_layer", 4096), ("d_model", 1 << 18)):  # beyond any trained model
            if _integer(value[k], f"{key}.{k}") > top:
                raise StudyError(
                    f"{key}.{k}", f"{value[k]} is larger than the allowed {top}; check the value"
                )
        return ExplicitShape(
            n_layer=_integer(value["n_layer"], f"{key}.n_layer"),
            d_model=_integer(value["d_model"], f"{key}.d_model"),
            n_head=_integer(value.get("n_head", 0), f"{key}.n_head", minimum=0),
            n_layer_enc=_integer(value.get("n_layer_enc", 0), f"{key}.n_layer_enc", minimum=0),
            n_layer_dec=_integer(value.get("n_layer_dec", 0), f"{key}.n_layer_dec", minimum=0),
        )
    target = _number(value, key, maximum=1e13)
    if target < 1000:
        raise StudyError(key, f"a target of {target:g} parameters is too small for any GPT; use >= 1e3")
    return target


def _moe(value: Any, key: str) -> MoESetting:
    m = _mapping(value, key)
    conv = {
        "experts": lambda v, k: _integer(v, k),
        "top_k": lambda v, k: _integer(v, k),
        "granularity": lambda v, k: _integer(v, k),
        "shared_experts": lambda v, k: _integer(v, k, 0),
        "aux_loss_coef": lambda v, k: _number(v, k, positive=False),
        "z_loss_coef": lambda v, k: _number(v, k, positive=False),
    }
    s = _build(MoESetting, m, key, conv)
    if s.top_k > s.experts:
        raise StudyError(f"{key}.top_k", f"top_k={s.top_k} exceeds experts={s.experts}; use top_k <= experts")
    if s.experts == 1 and (s.top_k != 1 or s.shared_experts or s.granularity != 1):
        raise StudyError(
            f"{key}.experts", "experts: 1 is dense; top_k, granularity and shared_experts need experts > 1"
        )
    if s.aux_loss_coef < 0 or s.z_loss_coef < 0:
        raise StudyError(key, "loss coefficients must be >= 0")
    return s


def _arch(value: Any, key: str, model: ShapeRule, seq_len: int) -> ArchSetting:
    """An architecture override (keys of model:), checked against the allowed values."""
    m = _mapping(value, key)
    _check_keys(m, set(ARCH_CHOICES) | set(SPAN_DEFAULTS), key)
    resolved = {k: m.get(k, getattr(model, k)) for k in (*ARCH_CHOICES, *SPAN_DEFAULTS)}
    for k, allowed in ARCH_CHOICES.items():
        if resolved[k] not in allowed:
            where = f"{key}.{k}" if k in m else f"model.{k}"
            raise StudyError(where, f"unknown value {resolved[k]!r}; use one of {', '.join(allowed)}")
    for k in SPAN_DEFAULTS:
        resolved[k] = _number(resolved[k], f"{key}.{k}" if k in m else f"model.{k}", positive=False)
    if resolved["pos"] == "none" and resolved["objective"] != "clm":
        raise StudyError(
            f"{key}.pos" if "pos" in m or "objective" in m else "model.pos",
            f"pos: none with objective: {resolved['objective']}: a bidirectional model (masked "
            "LM, prefix LM, encoder) cannot be position-free (bidirectional attention without "
            "positions sees a bag of tokens); use pos: learned, sinusoidal or rope",
        )
    try:
        check_arch_family(m, resolved, key, seq_len)
    except SpecError as e:
        raise StudyError(e.field, e.message) from None
    return ArchSetting(**resolved)


def _isoflop(value: Any, key: str) -> IsoFlop:
    """grid.isoflop: budgets (FLOPs), points per budget, span (decades), tokens_per_param."""
    m = _mapping(value, key)
    if "budgets" not in m:
        raise StudyError(f"{key}.budgets", "missing; list FLOP budgets, e.g. [1e12, 1e13]")
    conv = {
        "budgets": lambda v, k: tuple(
            _number(x, f"{k}[{i}]", maximum=MAX_FLOPS) for i, x in enumerate(_list(v, k))
        ),
        "points": lambda v, k: _integer(v, k, 2),
        "span": lambda v, k: _number(v, k, maximum=3),
        "tokens_per_param": lambda v, k: _number(v, k, maximum=1e6),
    }
    return _build(IsoFlop, m, key, conv)


def _explicit_runs(g: Mapping[str, Any], key: str) -> tuple[ExplicitRun, ...]:
    """grid.runs: explicit (size, tokens, moe, seed) points, added to the grid."""
    runs = []
    for i, r in enumerate(_list(g.get("runs", []), f"{key}.runs", allow_empty="runs" not in g)):
        rk = f"{key}.runs[{i}]"
        r = _mapping(r, rk)
        _check_keys(r, {"size", "tokens", "moe", "seed"}, rk)
        for k in ("size", "tokens"):
            if k not in r:
                raise StudyError(f"{rk}.{k}", "missing; each explicit run needs size and tokens")
        runs.append(
            ExplicitRun(
                size=_size(r["size"], f"{rk}.size"),
                tokens=_number(r["tokens"], f"{rk}.tokens", maximum=MAX_TOKENS),
                moe=_moe(r.get("moe", {}), f"{rk}.moe"),
                seed=_integer(r.get("seed", 0), f"{rk}.seed", 0),
            )
        )
    return tuple(runs)


def _grid(value: Any, key: str, model: ShapeRule = ShapeRule(), seq_len: int = 64) -> Grid:
    g = _mapping(value, key)
    _check_keys(g, {f.name for f in fields(Grid)}, key)
    kinds = [k for k in ("tokens", "tokens_per_param", "isoflop") if k in g]
    if len(kinds) > 1:
        raise StudyError(
            f"{key}.{kinds[1]}",
            f"give one of tokens, tokens_per_param or isoflop, not both {kinds[0]} and {kinds[1]}",
        )
    if not kinds and "runs" not in g:
        raise StudyError(key, "needs tokens, tokens_per_param, isoflop or runs")
    sizes = tuple(
        _size(v, f"{key}.sizes[{i}]")
        for i, v in enumerate(_list(g.get("sizes", []), f"{key}.sizes", allow_empty=True))
    )
    if kinds and kinds[0] != "isoflop" and not sizes:
        raise StudyError(f"{key}.sizes", f"required with {kinds[0]}: list shapes or target n_params")
    tokens = (
        tuple(
            _number(v, f"{key}.tokens[{i}]", maximum=MAX_TOKENS)
            for i, v in enumerate(_list(g["tokens"], f"{key}.tokens"))
        )
        if "tokens" in g
        else ()
    )
    tpp = (
        tuple(
            _number(v, f"{key}.tokens_per_param[{i}]", maximum=1e6)
            for i, v in enumerate(_list(g["tokens_per_param"], f"{key}.tokens_per_param"))
        )
        if "tokens_per_param" in g
        else ()
    )
    iso = _isoflop(g["isoflop"], f"{key}.isoflop") if "isoflop" in g else None
    moe = tuple(_moe(v, f"{key}.moe[{i}]") for i, v in enumerate(_list(g.get("moe", [{}]), f"{key}.moe")))
    seeds = tuple(
        _integer(v, f"{key}.seeds[{i}]", 0) for i, v in enumerate(_list(g.get("seeds", [0]), f"{key}.seeds"))
    )
    runs = _explicit_runs(g, key)
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"{key}.seeds", "has duplicates; list each seed once")
    arch = tuple(
        _arch(v, f"{key}.arch[{i}]", model, seq_len)
        for i, v in enumerate(_list(g.get("arch", [{}]), f"{key}.arch"))
    )
    match_flops = g.get("match_flops", False)
    if not isinstance(match_flops, bool):
        raise StudyError(f"{key}.match_flops", "must be true or false")
    if len(set(arch)) != len(arch):
        dup = next(i for i, a in enumerate(arch) if a in arch[:i])
        raise StudyError(
            f"{key}.arch[{dup}]", f"repeats architecture {arch[dup].label}; list each variant once"
        )
    return Grid(
        sizes=sizes,
        tokens=tokens,
        tokens_per_param=tpp,
        isoflop=iso,
        runs=runs,
        moe=moe,
        seeds=seeds,
        arch=arch,
        match_flops=match_flops,
    )


def _data(value: Any, key: str) -> DataSpec:
    d = dict(_mapping(value, key))
    if "paths" in d:
        paths = d["paths"]
        if isinstance(paths, str):
            paths = [paths]
        for i, p in enumerate(_list(paths, f"{key}.paths")):
            if not isinstance(p, str) or not p:
                raise StudyError(f"{key}.paths[{i}]", "must be a non-empty path string")
        d["paths"] = tuple(paths)
    if d.get("source") == "text" and "vocab_size" not in d:
        d["vocab_size"] = 256
    if d.get("source") == "corpus":  # completed from the corpus folder (orchestrator/corpus_plan.py)
        from . import corpus_plan

        spec = _build(DataSpec, corpus_plan.corpus_data(d, key), key)
        corpus_plan.check_fits(spec)
        return spec
    spec = _build(DataSpec, d, key)
    for i, p in enumerate(spec.paths):
        if not Path(p).expanduser().exists():
            raise StudyError(
                f"{key}.paths[{i}]",
                f"{p} does not exist; give an existing file or "
                "directory (paths are relative to where you run scalelab)",
            )
    try:  # what the run would reject (a device, too few files, ...), now: before anything is created
        check_paths(spec)
    except SpecError as e:
        raise StudyError(e.field, e.message) from None
    return spec


def _check_recipe(train: RecipeSpec, data: DataSpec) -> None:
    """Recipe checks that involve two keys (or the data source)."""
    if train.schedule == "wsd" and train.warmup_frac + train.cooldown_frac > 1:
        raise StudyError(
            "train.cooldown_frac",
            f"warmup_frac + cooldown_frac = "
            f"{train.warmup_frac:g} + {train.cooldown_frac:g} > 1: with schedule wsd "
            "the warmup and the cooldown of a branch would overlap; lower one of them",
        )
    if (
        train.divergence_loss > 0 and data.source == "markov" and data.vocab_size ** (data.order + 1) <= 2**22
    ):  # the table is cheap to build
        from trainer.data import true_entropy

        floor = true_entropy(data)
        if train.divergence_loss <= floor:
            raise StudyError(
                "train.divergence_loss",
                f"{train.divergence_loss:g} nats is at or "
                f"below the source's entropy rate ({floor:.4g} nats/token), a loss no "
                "run can go under, so every run would end as diverged; raise it "
                "(or 0 for the default 2 ln(vocab) + 1)",
            )


def _check_run_count(g: Grid) -> None:
    per_size = len(g.tokens) + len(g.tokens_per_param)
    iso = len(g.isoflop.budgets) * g.isoflop.points if g.isoflop else 0
    n = (len(g.sizes) * per_size + iso) * len(g.moe) * len(g.seeds) + len(g.runs)
    if n > MAX_RUNS:
        raise StudyError(
            "grid",
            f"plans {n} runs, more than the {MAX_RUNS} one study may hold; split it into several studies",
        )


def _train(value: Any) -> RecipeSpec:
    """The `train:` recipe (eval_lengths as a tuple of whole multiples of seq_len)."""
    train_raw = dict(_mapping(value, "train"))
    if "eval_lengths" in train_raw:
        train_raw["eval_lengths"] = tuple(
            _integer(v, f"train.eval_lengths[{i}]")
            for i, v in enumerate(_list(train_raw["eval_lengths"], "train.eval_lengths"))
        )
    return _build(
        RecipeSpec,
        train_raw,
        "train",
        {
            k: (lambda v, kk: _number(v, kk, positive=False))
            for k in (
                "lr",
                "warmup_frac",
                "min_lr_ratio",
                "cooldown_frac",
                "weight_decay",
                "grad_clip",
                "divergence_loss",
                "beta1",
                "beta2",
            )
        },
    )


def _resources(value: Any) -> Resources:
    """The `resources:` of each run, as Ray resources."""
    return _build(
        Resources,
        _mapping(value, "resources"),
        "resources",
        {
            "num_cpus": lambda v, k: _number(v, k, maximum=1024),
            "num_gpus": lambda v, k: _number(v, k, positive=False, maximum=64),
            "max_retries": lambda v, k: _integer(v, k, 0),
        },
    )


def parse_study(raw: Any, source_path: str = "") -> StudyConfig:
    """Validate a parsed YAML document into a StudyConfig (raises StudyError)."""
    top = _mapping(raw, "")
    _check_keys(top, {"study", "description", "data", "model", "grid", "train", "resources"}, "")
    if "study" not in top:
        raise StudyError("study", "missing; name the study (it becomes the MLflow experiment)")
    name = top["study"]
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):  # fullmatch: no trailing \n
        raise StudyError(
            "study",
            f"{show(name)} is not a valid name; use 1-100 ASCII letters, digits, "
            "'.', '_' or '-', starting with a letter or digit",
        )
    if "grid" not in top:
        raise StudyError("grid", "missing; give sizes and tokens (or isoflop, or runs)")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise StudyError("description", "must be a string")
    data = _data(top.get("data"), "data")
    model = _build(
        ShapeRule,
        _mapping(top.get("model"), "model"),
        "model",
        {
            "d_head": lambda v, k: _integer(v, k),
            "aspect_ratio": lambda v, k: _integer(v, k),
            **{s: (lambda v, k: _number(v, k, positive=False)) for s in SPAN_DEFAULTS},
        },
    )
    if not isinstance(model.tied_head, bool):
        raise StudyError("model.tied_head", "must be true or false")
    _arch({}, "model", model, data.seq_len)  # the defaults themselves must be valid
    train = _train(top.get("train"))
    resources = _resources(top.get("resources"))
    if resources.num_gpus < 0:
        raise StudyError("resources.num_gpus", "must be >= 0")
    _check_recipe(train, data)
    span = math.lcm(*train.eval_lengths) * data.seq_len
    if data.val_tokens < span:
        raise StudyError(
            "data.val_tokens",
            f"{data.val_tokens} held-out tokens hold no segment of "
            f"lcm(train.eval_lengths)·seq_len = {span} tokens; raise "
            f"data.val_tokens to at least {span} (better 8x that) or "
            "lower train.eval_lengths",
        )
    grid = _grid(top["grid"], "grid", model, data.seq_len)
    try:
        check_grid_family(grid, model)
    except SpecError as e:
        raise StudyError(e.field, e.message) from None
    _check_run_count(grid)
    return StudyConfig(
        study=name,
        data=data,
        model=model,
        grid=grid,
        train=train,
        resources=resources,
        description=description,
        source_path=source_path,
    )


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file. Raises StudyError for anything wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise StudyError(
            "", f"study file {path} not found; pass the path of a YAML file such as configs/quickstart.yaml"
        )
    if p.stat().st_size > MAX_FILE_BYTES:
        raise StudyError(
            "",
            f"{path} is {p.stat().st_size} bytes, over the {MAX_FILE_BYTES} "
            "bytes (1 MiB) a study file may have; a study is a few hundred bytes",
        )
    try:
        raw = _safe_load_bounded(p.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as e:
        raise StudyError("", f"{path} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise StudyError("", f"{path} is not UTF-8 text") from None
    except RecursionError:
        raise StudyError("", f"{path} nests lists or mappings too deeply; flatten it") from None
    return parse_study(raw, source_path=str(p))
