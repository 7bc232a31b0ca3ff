"""Validated, frozen specifications of one training run.

A `RunSpec` holds everything that decides a run's result and nothing else (no paths of the
machine it runs on, no tracking ids): its canonical dict hashes to the run key that the
orchestrator uses for dedup and resume. Specs are validated once, here; downstream code trusts
them. Errors name the field, so the orchestrator can map them to the YAML key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DATA_SOURCES = ("markov", "zipf", "text", "tokens")
SCHEDULES = ("cosine", "wsd")
EVAL_SCHEDULES = ("linear", "log")
DEVICES = ("auto", "cpu", "cuda")
POSITIONS = ("learned", "sinusoidal", "rope", "none")
ACTIVATIONS = ("gelu", "relu", "swiglu")
NORMS = ("pre", "post")
OBJECTIVES = ("clm", "mlm")
# Architecture fields and their defaults (today's model). A spec whose fields all equal these
# hashes exactly as before they existed: `to_dict` leaves default-valued ones out.
ARCH_DEFAULTS = {"pos": "learned", "activation": "gelu", "norm": "pre", "objective": "clm"}
ARCH_CHOICES = {"pos": POSITIONS, "activation": ACTIVATIONS, "norm": NORMS, "objective": OBJECTIVES}
# Recipe fields added later, left out of run keys and study fingerprints at these (off) values,
# so studies written before they existed keep their keys.
RECIPE_OMITTED_AT = {"lr_base_width": 0, "eval_schedule": "linear"}
ZIPF_KEYS = ("lexicon_size", "zipf_exponent", "min_word_len", "max_word_len")


class SpecError(ValueError):
    """A specification field is invalid. `field` is the dotted field name, `fix` what to do."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise SpecError(field, message)


def _positive_int(value: Any, field: str, minimum: int = 1) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool), field, f"must be an integer, got {value!r}"
    )
    _require(value >= minimum, field, f"must be >= {minimum}, got {value}")


def _finite(
    value: Any, field: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> None:
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        field,
        f"must be a finite number, got {value!r}",
    )
    if lo is not None:
        ok = value > lo if lo_open else value >= lo
        _require(ok, field, f"must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None:
        _require(value <= hi, field, f"must be <= {hi}, got {value}")


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a decoder-only GPT whose FFN is dense (experts=1) or a Mixture of Experts.

    d_ff defaults to 4·d_model; d_expert (width of one routed expert) defaults to d_ff, so
    granularity G = d_ff / d_expert is 1 unless set. Experts=1 means dense.
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

    def __post_init__(self) -> None:
        for name, allowed in ARCH_CHOICES.items():
            value = getattr(self, name)
            _require(
                value in allowed, f"model.{name}", f"unknown value {value!r}; use one of {', '.join(allowed)}"
            )
        _require(
            not (self.pos == "none" and self.objective == "mlm"),
            "model.pos",
            "a masked LM (objective: mlm) cannot be position-free: its attention is "
            "bidirectional, so without positions it sees a bag of tokens; use pos: learned, "
            "sinusoidal or rope",
        )
        for name in ("n_layer", "d_model", "n_head", "vocab_size", "seq_len", "experts", "top_k"):
            _positive_int(getattr(self, name), f"model.{name}")
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
        """Token embedding rows: the vocabulary, plus the mask token for mlm."""
        return self.vocab_size + (1 if self.objective == "mlm" else 0)

    @property
    def arch_label(self) -> str:
        """Short label of the non-size choices, e.g. `learned-gelu-pre-clm`."""
        return "-".join(str(getattr(self, k)) for k in ARCH_DEFAULTS)


def ffn_hidden(width: int, activation: str) -> int:
    """Hidden width of an FFN of nominal width `width`: swiglu uses round(2/3·width) so that its
    three matrices hold about the parameters of the ungated layer's two (exactly when 3 | width)."""
    return max(1, int(round(2 * width / 3))) if activation == "swiglu" else width


@dataclass(frozen=True)
class DataSpec:
    """Where tokens come from. `markov` is synthetic with a known entropy rate; `text` is
    byte-level (vocab 256) from `paths` (files or directories; empty = the built-in corpus);
    `tokens` is a nanoGPT-style uint16 memmap directory holding train.bin and val.bin."""

    source: str = "markov"
    vocab_size: int = 64
    seq_len: int = 64
    seed: int = 0
    order: int = 2  # markov: context length k
    concentration: float = 0.1  # markov: Dirichlet alpha of the transition rows
    paths: tuple[str, ...] = ()
    val_tokens: int = 32768  # held-out tokens, the same for every run of a study
    lexicon_size: int = 8192  # zipf: words in the lexicon
    zipf_exponent: float = 1.45  # zipf: word r is emitted with probability ∝ r^-s
    min_word_len: int = 4  # zipf: word lengths (tokens) uniform in [min, max]
    max_word_len: int = 4

    def __post_init__(self) -> None:
        _require(
            self.source in DATA_SOURCES,
            "data.source",
            f"unknown source {self.source!r}; use one of {', '.join(DATA_SOURCES)}",
        )
        _positive_int(self.vocab_size, "data.vocab_size", minimum=2)
        _require(
            self.vocab_size <= 65536,
            "data.vocab_size",
            f"{self.vocab_size} does not fit uint16 tokens; use <= 65536",
        )
        if self.source == "text":
            _require(
                self.vocab_size == 256,
                "data.vocab_size",
                "the text source is byte-level: set vocab_size: 256",
            )
        _positive_int(self.seq_len, "data.seq_len", minimum=2)
        _positive_int(self.seed, "data.seed", minimum=0)
        _positive_int(self.order, "data.order", minimum=1)
        if self.source == "markov":
            _require(
                self.vocab_size**self.order <= 2**22,
                "data.order",
                f"vocab_size**order = {self.vocab_size**self.order} contexts is too many; "
                "lower order or vocab_size",
            )
        _finite(self.concentration, "data.concentration", lo=0, lo_open=True)
        self._check_zipf()
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        if self.source == "tokens":
            _require(
                len(self.paths) == 1,
                "data.paths",
                "the tokens source takes one directory holding train.bin and val.bin",
            )
        if self.source in ("text", "tokens"):
            for i, p in enumerate(self.paths):
                _require(
                    os.path.exists(os.path.expanduser(p)),
                    f"data.paths[{i}]",
                    f"{p} does not exist; give an existing file or directory",
                )
        if self.source == "tokens":
            for name in ("train.bin", "val.bin"):
                _require(
                    os.path.isfile(os.path.join(os.path.expanduser(self.paths[0]), name)),
                    "data.paths[0]",
                    f"{self.paths[0]!r} has no {name}; the tokens source needs a directory "
                    "holding train.bin and val.bin (uint16)",
                )
        _positive_int(self.val_tokens, "data.val_tokens", minimum=self.seq_len + 1)

    def _check_zipf(self) -> None:
        _positive_int(self.lexicon_size, "data.lexicon_size", minimum=2)
        _require(
            self.lexicon_size <= 1_000_000,
            "data.lexicon_size",
            f"{self.lexicon_size} words is too many to build per run; use <= 1000000",
        )
        _finite(self.zipf_exponent, "data.zipf_exponent", lo=0, lo_open=True, hi=10)
        _positive_int(self.min_word_len, "data.min_word_len", minimum=1)
        _positive_int(self.max_word_len, "data.max_word_len", minimum=1)
        _require(
            self.max_word_len >= self.min_word_len,
            "data.max_word_len",
            f"max_word_len={self.max_word_len} < min_word_len={self.min_word_len}; "
            "raise max_word_len or lower min_word_len",
        )
        _require(
            self.max_word_len <= 16,
            "data.max_word_len",
            f"{self.max_word_len} tokens per word is too long; use <= 16",
        )
        if self.source == "zipf":
            room = sum(self.vocab_size**n for n in range(self.min_word_len, self.max_word_len + 1))
            _require(
                room >= 4 * self.lexicon_size,
                "data.lexicon_size",
                f"{self.lexicon_size} words do not fit in {room} token strings of "
                f"{self.min_word_len}-{self.max_word_len} tokens over vocab_size="
                f"{self.vocab_size}; lower lexicon_size or raise max_word_len/vocab_size",
            )


# Recipe fields that say where and how fast a run goes, not what it computes: not hashed into
# the run key, so a study moved to another device or cadence keeps its finished runs.
RUNTIME_FIELDS = ("device", "compile", "eval_interval_tokens", "checkpoint_interval_tokens", "eval_schedule")


@dataclass(frozen=True)
class RecipeSpec:
    """The training recipe, fixed across a study. Token counts are in tokens."""

    batch_size: int = 16  # sequences per optimizer step
    lr: float = 3e-3  # peak learning rate (at d_model = lr_base_width when that is set)
    # 0: every size uses `lr`. W > 0: width scaling as in muP for Adam, peak lr = lr·W/d_model,
    # since the best Adam lr falls about as 1/width: one recipe then suits every size of a study
    lr_base_width: int = 0
    schedule: str = "cosine"
    warmup_frac: float = (
        0.05  # warmup as a fraction of the run's tokens (wsd: of the trunk's shortest branch)
    )
    min_lr_ratio: float = 0.1  # cosine ends at min_lr_ratio·lr exactly at the token budget
    cooldown_frac: float = 0.2  # wsd: last fraction of each branch, 1-sqrt decay to 0
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1  # matrices only
    grad_clip: float = 1.0
    eval_interval_tokens: int = 0  # 0: about 10 evaluations per run
    checkpoint_interval_tokens: int = 0  # 0: at every evaluation
    divergence_loss: float = 0.0  # 0: 2·ln(vocab) + 1; a train loss above this, or NaN/inf, diverges
    device: str = "auto"
    compile: bool = False
    eval_lengths: tuple[int, ...] = (1,)  # held-out loss at these multiples of data.seq_len
    # linear: every eval_interval_tokens (0: about 10 per run). log: one evaluation per doubling
    # of tokens over the run's last 7 doublings (D/64 ... D), so every curve has points on a
    # log axis whatever its length (eval_interval_tokens is then unused)
    eval_schedule: str = "linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_lengths", tuple(self.eval_lengths))
        _require(len(self.eval_lengths) > 0, "train.eval_lengths", "must not be empty; use [1]")
        for i, k in enumerate(self.eval_lengths):
            _positive_int(k, f"train.eval_lengths[{i}]")
        _require(
            len(set(self.eval_lengths)) == len(self.eval_lengths),
            "train.eval_lengths",
            "has duplicates; list each multiple of data.seq_len once, e.g. [1, 2, 4, 8]",
        )
        _positive_int(self.batch_size, "train.batch_size")
        _finite(self.lr, "train.lr", lo=0, lo_open=True, hi=10.0)
        _positive_int(self.lr_base_width, "train.lr_base_width", minimum=0)
        _require(
            self.schedule in SCHEDULES,
            "train.schedule",
            f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}",
        )
        _finite(self.warmup_frac, "train.warmup_frac", lo=0, hi=0.5)
        _finite(self.min_lr_ratio, "train.min_lr_ratio", lo=0, hi=1)
        _finite(self.cooldown_frac, "train.cooldown_frac", lo=0, lo_open=True, hi=1)
        _finite(self.beta1, "train.beta1", lo=0, hi=0.999999)
        _finite(self.beta2, "train.beta2", lo=0, hi=0.999999)
        _finite(self.weight_decay, "train.weight_decay", lo=0)
        _finite(self.grad_clip, "train.grad_clip", lo=0)
        _positive_int(self.eval_interval_tokens, "train.eval_interval_tokens", minimum=0)
        _require(
            self.eval_schedule in EVAL_SCHEDULES,
            "train.eval_schedule",
            f"unknown schedule {self.eval_schedule!r}; use one of {', '.join(EVAL_SCHEDULES)}",
        )
        _positive_int(self.checkpoint_interval_tokens, "train.checkpoint_interval_tokens", minimum=0)
        _finite(self.divergence_loss, "train.divergence_loss", lo=0)
        _require(
            self.device in DEVICES,
            "train.device",
            f"unknown device {self.device!r}; use one of {', '.join(DEVICES)}",
        )
        _require(isinstance(self.compile, bool), "train.compile", "must be true or false")

    def peak_lr(self, d_model: int) -> float:
        """The peak learning rate of a model of this width (lr_base_width: lr·W/d_model)."""
        return self.lr * self.lr_base_width / d_model if self.lr_base_width else self.lr


@dataclass(frozen=True)
class RunSpec:
    """One (N, D, MoE, seed) point. `tokens` is D, the run's token budget.

    `warmup_tokens` is resolved by whoever builds the spec (the orchestrator): warmup_frac·D for
    cosine; for wsd the same value for every branch of a trunk, so branches share the trunk.
    """

    model: ModelSpec
    data: DataSpec
    recipe: RecipeSpec
    tokens: int
    seed: int = 0
    warmup_tokens: int = 0

    def __post_init__(self) -> None:
        _positive_int(self.seed, "seed", minimum=0)
        _positive_int(self.tokens, "tokens", minimum=1)
        tokens_per_step = self.recipe.batch_size * self.data.seq_len
        _require(
            self.tokens >= tokens_per_step,
            "tokens",
            f"{self.tokens} tokens is less than one batch ({tokens_per_step} = "
            "batch_size·seq_len); raise tokens or lower batch_size",
        )
        _positive_int(self.warmup_tokens, "warmup_tokens", minimum=0)
        _require(
            self.model.vocab_size == self.data.vocab_size,
            "model.vocab_size",
            f"model vocab {self.model.vocab_size} != data vocab {self.data.vocab_size}",
        )
        _require(
            self.model.seq_len == self.data.seq_len,
            "model.seq_len",
            f"model seq_len {self.model.seq_len} != data seq_len {self.data.seq_len}",
        )
        longest = math.lcm(*self.recipe.eval_lengths) * self.data.seq_len
        _require(
            self.data.val_tokens >= longest,
            "data.val_tokens",
            f"{self.data.val_tokens} held-out tokens hold no segment for train.eval_lengths "
            f"(lcm(eval_lengths)·seq_len = {longest} tokens); raise data.val_tokens to "
            f"at least {longest} (better 8x that) or lower train.eval_lengths",
        )
        # a trunk must be shared only under the warmup it was trained with: warmup ends before
        # every branch's cooldown starts (warmup_frac + cooldown_frac <= 1)
        _require(
            self.recipe.schedule != "wsd" or self.warmup_tokens <= self.cooldown_start_tokens,
            "train.warmup_frac",
            f"wsd warmup of {self.warmup_tokens} tokens outlasts the stable phase of the "
            f"{self.tokens}-token branch (cooldown from {self.cooldown_start_tokens}); lower "
            "warmup_frac or cooldown_frac so that warmup_frac + cooldown_frac <= 1",
        )

    @property
    def tokens_per_step(self) -> int:
        return self.recipe.batch_size * self.data.seq_len

    @property
    def cooldown_start_tokens(self) -> int:
        """wsd: tokens at which this branch leaves the shared trunk (a whole number of steps)."""
        steps = self.tokens // self.tokens_per_step
        start = int(round(steps * (1.0 - self.recipe.cooldown_frac)))
        return start * self.tokens_per_step

    def to_dict(self) -> dict[str, Any]:
        """Canonical dict; architecture fields and eval_lengths at their defaults are left out,
        so specs written before those fields existed keep their run keys."""
        d = dataclasses.asdict(self)
        for k, v in ARCH_DEFAULTS.items():
            if d["model"].get(k) == v:
                del d["model"][k]
        if tuple(d["recipe"].get("eval_lengths", ())) == (1,):
            del d["recipe"]["eval_lengths"]
        for k, off in RECIPE_OMITTED_AT.items():
            if d["recipe"].get(k) == off:
                del d["recipe"][k]
        if self.data.source != "zipf":  # zipf keys appear only for the zipf source
            for k in ZIPF_KEYS:
                d["data"].pop(k)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        data = dict(d["data"])
        data["paths"] = tuple(data.get("paths", ()))
        recipe = dict(d["recipe"])
        recipe["eval_lengths"] = tuple(recipe.get("eval_lengths", (1,)))
        return cls(
            model=ModelSpec(**d["model"]),
            data=DataSpec(**data),
            recipe=RecipeSpec(**recipe),
            tokens=d["tokens"],
            seed=d["seed"],
            warmup_tokens=d.get("warmup_tokens", 0),
        )

    def identity(self) -> dict[str, Any]:
        """What changes the result (model, data, recipe, tokens, seed), without the run-time
        settings (RUNTIME_FIELDS: where and how fast it runs)."""
        d = self.to_dict()
        d["recipe"] = {k: v for k, v in d["recipe"].items() if k not in RUNTIME_FIELDS}
        return d

    def key(self) -> str:
        """Run key: a short hash of the run's identity (sorted-key JSON)."""
        return spec_hash(self.identity())

    def trunk_key(self) -> str:
        """wsd: the key shared by every branch of one trunk (the identity without its budget)."""
        d = self.identity()
        d.pop("tokens")
        return spec_hash({"trunk": d})

    def legacy_key(self) -> str:
        """The key of stores written before run-time settings left the hash (compatibility)."""
        return spec_hash(self.to_dict())

    def legacy_trunk_key(self) -> str:
        d = self.to_dict()
        d.pop("tokens")
        return spec_hash({"trunk": d})


def spec_hash(d: Mapping[str, Any]) -> str:
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


ALREADY_FINISHED = "already finished (from checkpoint)"  # RunResult.message of such a run


@dataclass
class RunResult:
    """What one training run returns. `status`: finished | diverged | failed | stopped."""

    status: str
    message: str = ""
    val_loss: float | None = None  # final held-out loss, nats/token
    train_loss: float | None = None  # last smoothed training loss, nats/token
    tokens: int = 0  # tokens of this point's budget that were reached (D)
    flops: float = 0.0  # training FLOPs of the point, chinchilla convention
    steps: int = 0
    wall_time_s: float = 0.0
    device: str = "cpu"
    epochs: float = 0.0  # passes over the unique training tokens
    resumed_from_tokens: int = 0  # 0 when trained from scratch
    extra: dict[str, Any] = field(default_factory=dict)
