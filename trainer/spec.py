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
from typing import Any, Literal

from .checks import SpecError as SpecError  # re-exported: trainer.spec.SpecError
from .checks import _finite, _positive_int, _require
from .families import FAMILY_OBJECTIVES as FAMILY_OBJECTIVES  # re-exported
from .model_spec import (  # noqa: F401 - re-exported: callers find every spec name in trainer.spec
    ACTIVATIONS,
    ARCH_CHOICES,
    ARCH_DEFAULTS,
    LABEL_KEYS,
    MODEL_OMITTED_AT,
    NORMS,
    OBJECTIVES,
    POSITIONS,
    ModelSpec,
    ffn_hidden,
)

DATA_SOURCES = ("markov", "zipf", "text", "tokens", "corpus")
SCHEDULES = ("cosine", "wsd")
EVAL_SCHEDULES = ("linear", "log")
DEVICES = ("auto", "cpu", "cuda")
# Recipe fields added later, left out of run keys and study fingerprints at these (off) values,
# so studies written before they existed keep their keys.
RECIPE_OMITTED_AT = {"lr_base_width": 0, "eval_schedule": "linear"}
ZIPF_KEYS = ("lexicon_size", "zipf_exponent", "min_word_len", "max_word_len")
# corpus keys appear only for the corpus source (other sources keep their keys); of them, where
# the folder is and the epoch guard do not change what a run computes: not hashed, so a corpus
# moved to another folder keeps its runs, and its content hashes identify the data instead.
CORPUS_KEYS = ("path", "max_epochs", "corpus_hash", "tokenizer_hash")
CORPUS_UNHASHED = ("path", "max_epochs")
MAX_CORPUS_VOCAB = 2**32 - 1  # uint32 token files


@dataclass(frozen=True)
class DataSpec:
    """Where tokens come from. `markov` is synthetic with a known entropy rate; `text` is
    byte-level (vocab 256) from `paths` (files or directories; empty = the built-in corpus);
    `tokens` is a nanoGPT-style uint16 memmap directory holding train.bin and val.bin; `corpus`
    is a folder written by `scalelab data ingest` (`path`), whose vocab_size and content hashes
    the loader copies from its meta.json (trainer.corpus.corpus_spec)."""

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
    path: str = ""  # corpus: the folder `scalelab data ingest --out` wrote
    max_epochs: float = 4.0  # corpus: most passes over the training split a run may make
    corpus_hash: str = ""  # corpus: from its meta.json (token files)
    tokenizer_hash: str = ""  # corpus: from its meta.json (tokenizer.json)

    def __post_init__(self) -> None:
        _require(
            self.source in DATA_SOURCES,
            "data.source",
            f"unknown source {self.source!r}; use one of {', '.join(DATA_SOURCES)}",
        )
        if self.source == "corpus":
            self._check_corpus()
        else:
            for k in CORPUS_KEYS:
                _require(
                    getattr(self, k) == DataSpec.__dataclass_fields__[k].default,
                    f"data.{k}",
                    f"applies to the corpus source only (source: {self.source}); remove it",
                )
        _positive_int(self.vocab_size, "data.vocab_size", minimum=2)
        top = MAX_CORPUS_VOCAB if self.source == "corpus" else 65536
        _require(
            self.vocab_size <= top,
            "data.vocab_size",
            f"{self.vocab_size} does not fit {'uint32' if top > 65536 else 'uint16'} tokens; use <= {top}",
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

    def _check_corpus(self) -> None:
        _require(
            isinstance(self.path, str) and bool(self.path),
            "data.path",
            "missing; the corpus source reads the folder written by `scalelab data ingest --out DIR`: "
            "set data.path: DIR",
        )
        _require(not self.paths, "data.paths", "the corpus source takes data.path (one folder), not paths")
        _finite(self.max_epochs, "data.max_epochs", lo=0, lo_open=True)
        _require(
            bool(self.corpus_hash and self.tokenizer_hash),
            "data.corpus_hash",
            "missing: it comes from the corpus folder's meta.json (a study file fills it in; in "
            "code, build the spec with trainer.corpus.corpus_spec(DIR))",
        )

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
        """Canonical dict: every field, less those RUN_IDENTITY omits (fields at their off
        value, zipf keys of other sources), so specs written before a field existed keep their
        run keys. Run-time fields stay (see `identity`)."""
        d = dataclasses.asdict(self)
        for section in ("model", "data", "recipe"):
            for name, rule in RUN_IDENTITY[section].items():
                if name in d[section] and _omitted(rule, d[section][name], self.data.source):
                    del d[section][name]
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
        """What changes the result (model, data, recipe, tokens, seed): `to_dict` without the
        run-time fields (RUNTIME in RUN_IDENTITY: where and how fast the run goes)."""
        d = self.to_dict()
        d["recipe"] = {k: v for k, v in d["recipe"].items() if not _runtime(RUN_IDENTITY["recipe"].get(k))}
        d["data"] = {k: v for k, v in d["data"].items() if RUN_IDENTITY["data"].get(k) != CORPUS_LOCATION}
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


# --------------------------------------------------------------------------- run identity
# What a run key hashes, field by field: every field of ModelSpec, DataSpec and RecipeSpec is
# listed once (tests/trainer/test_spec_errors.py checks it), with how it enters the key. A new
# field that changes results needs an off value (the value at which it does what the code did
# before it existed): at that value it is left out, so every stored run keeps its key.
ALWAYS = "always"  # hashed as it is
RUNTIME = "runtime"  # never hashed: where and how fast a run goes, not what it computes
ZIPF_ONLY = "zipf only"  # hashed for data.source zipf only (added with that source)
CORPUS_ONLY = "corpus only"  # hashed for data.source corpus only: what the corpus and tokenizer are
CORPUS_LOCATION = "corpus location"  # canonical for data.source corpus only, never hashed: where it is


@dataclass(frozen=True)
class Off:
    """Hashed unless equal to `value` (the field's off value)."""

    value: Any


@dataclass(frozen=True)
class RuntimeOff(Off):
    """A run-time field added later: never in the run key, and left out of the canonical dict
    (so of the legacy keys that hashed run-time fields) at its off value."""


RUN_IDENTITY: dict[str, dict[str, Any]] = {
    "model": {
        **dict.fromkeys(("n_layer", "d_model", "n_head", "vocab_size", "seq_len", "d_ff"), ALWAYS),
        **dict.fromkeys(("experts", "top_k", "d_expert", "shared_experts", "tied_head"), ALWAYS),
        **dict.fromkeys(("aux_loss_coef", "z_loss_coef"), ALWAYS),
        # pos, activation, norm, objective, family, span settings; per-stack depths (decoders: 0)
        **{name: Off(default) for name, default in MODEL_OMITTED_AT.items()},
    },
    "data": {
        **dict.fromkeys(("source", "vocab_size", "seq_len", "seed", "order", "concentration"), ALWAYS),
        **dict.fromkeys(("paths", "val_tokens"), ALWAYS),
        **dict.fromkeys(ZIPF_KEYS, ZIPF_ONLY),
        **dict.fromkeys(("corpus_hash", "tokenizer_hash"), CORPUS_ONLY),
        **dict.fromkeys(CORPUS_UNHASHED, CORPUS_LOCATION),  # path, max_epochs
    },
    "recipe": {
        **dict.fromkeys(("batch_size", "lr", "schedule", "warmup_frac", "min_lr_ratio"), ALWAYS),
        **dict.fromkeys(("cooldown_frac", "beta1", "beta2", "weight_decay", "grad_clip"), ALWAYS),
        "divergence_loss": ALWAYS,
        "eval_lengths": Off((1,)),  # what is measured beyond val_loss
        **{name: Off(off) for name, off in RECIPE_OMITTED_AT.items()},  # lr_base_width: 0
        **dict.fromkeys(RUNTIME_FIELDS, RUNTIME),  # device, compile, eval/checkpoint cadence
        "eval_schedule": RuntimeOff(RECIPE_OMITTED_AT["eval_schedule"]),  # linear | log
    },
    # RunSpec itself: tokens, seed and warmup_tokens are always hashed
}


def _runtime(rule: Any) -> bool:
    """A field that says where or how fast a run goes (never in the run key)."""
    return rule is RUNTIME or isinstance(rule, RuntimeOff)


def _omitted(rule: Any, value: Any, source: str) -> bool:
    """Whether a field's value is left out of the canonical dict (and so of the run key)."""
    if isinstance(rule, Off):
        return value == rule.value
    if rule in (CORPUS_ONLY, CORPUS_LOCATION):
        return source != "corpus"
    return rule == ZIPF_ONLY and source != "zipf"


ALREADY_FINISHED = "already finished (from checkpoint)"  # RunResult.message of such a run
# How a run ended, in the trainer's words (the orchestrator maps them to its RunState).
RunStatus = Literal["finished", "diverged", "failed", "stopped"]


@dataclass(frozen=True)
class RunError:
    """Why a run failed: its type name, for an OSError its errno (a full or read-only disk),
    and the exception itself (for the caller to classify by type; left out of `to_dict`)."""

    type: str
    errno: int | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, e: BaseException) -> RunError:
        errno = e.errno if isinstance(e, OSError) and e.errno is not None else None
        return cls(type=type(e).__name__, errno=errno, exception=e)


@dataclass
class RunResult:
    """What one training run returns. `status`: finished | diverged | failed | stopped; a failed
    run carries its `error` (and `message`, the traceback)."""

    status: RunStatus
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
    error: RunError | None = None

    def failed_with(self, e: BaseException) -> RunResult:
        """This result as the failure `e` (extra keeps `error_type` and `error_errno` for
        readers of older results)."""
        self.status, self.error = "failed", RunError.of(e)
        self.extra["error_type"] = self.error.type
        if self.error.errno is not None:
            self.extra["error_errno"] = self.error.errno
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the error as its type and errno)."""
        d = dataclasses.asdict(dataclasses.replace(self, error=None))
        d["error"] = None if self.error is None else {"type": self.error.type, "errno": self.error.errno}
        return d
