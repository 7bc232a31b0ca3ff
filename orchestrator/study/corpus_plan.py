"""The corpus source at plan time: the `data:` keys of a corpus study, and epochs per run.

Repeating data beyond ~4 epochs changes the scaling law (Muennighoff et al. 2023), so a run
that would pass over the training split more than `data.max_epochs` times is refused before
anything is scheduled, naming the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainer.spec import DataSpec, RunSpec, SpecError

from .values import StudyError, _integer, _number


def corpus_data(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The `data:` mapping of a corpus study completed from the folder's meta.json: path made
    absolute (workers may start elsewhere), vocab_size (a given one must match) and hashes."""
    out = dict(d)
    for k in ("corpus_hash", "tokenizer_hash"):
        if k in out:
            raise StudyError(f"{key}.{k}", "is read from the corpus folder's meta.json; remove it")
    if "paths" in out:
        raise StudyError(f"{key}.paths", "the corpus source takes path: DIR (one folder), not paths")
    path = out.get("path")
    if not isinstance(path, str) or not path:
        raise StudyError(
            f"{key}.path", "missing; set it to the folder `scalelab data ingest --out DIR` wrote"
        )
    if "max_epochs" in out:
        out["max_epochs"] = _number(out["max_epochs"], f"{key}.max_epochs")
    meta = _meta(path, key)
    if "vocab_size" in out and _integer(out["vocab_size"], f"{key}.vocab_size") != meta["vocab_size"]:
        raise StudyError(
            f"{key}.vocab_size",
            f"the corpus at {path} has vocab_size {meta['vocab_size']} (its tokenizer's); remove "
            f"vocab_size or set it to {meta['vocab_size']}",
        )
    out.update(
        path=str(Path(path).expanduser().resolve()),
        vocab_size=meta["vocab_size"],
        corpus_hash=meta["corpus_hash"],
        tokenizer_hash=meta["tokenizer_hash"],
    )
    return out


def check_fits(data: DataSpec) -> None:
    """The corpus's splits hold data.val_tokens and a training window (StudyError otherwise)."""
    from trainer.corpus.source import check_fits as fits

    try:
        fits(data, _meta(data.path, "data"))
    except SpecError as e:
        raise StudyError(e.field, e.message) from None


def _meta(path: str, key: str) -> dict[str, Any]:
    from trainer.corpus import read_meta

    try:
        return read_meta(path, f"{key}.path")
    except SpecError as e:
        raise StudyError(e.field, e.message) from None


def run_epochs(spec: RunSpec) -> float | None:
    """Passes over the training split a run makes (tokens / training tokens); None when the
    source is not an ingested corpus."""
    if spec.data.source != "corpus":
        return None
    return spec.tokens / _meta(spec.data.path, "data")["train_tokens"]


def check_epochs(data: DataSpec, runs: Iterable[Any]) -> None:
    """Raise StudyError naming data.max_epochs when a planned run (of a study whose data is
    `data`) repeats the data more."""
    if data.source != "corpus":
        return
    worst = max(runs, key=lambda p: p.tokens, default=None)
    if worst is None:
        return
    epochs = run_epochs(worst.spec) or 0.0
    if epochs > data.max_epochs:
        train_tokens = _meta(data.path, "data")["train_tokens"]
        raise StudyError(
            "data.max_epochs",
            f"run {worst.key} ({worst.label}, {worst.tokens:.4g} tokens) would pass over the "
            f"corpus's {train_tokens:.4g} training tokens {epochs:.2f} times, more than "
            f"max_epochs {data.max_epochs:g} (beyond ~4 epochs repeated data is worth less "
            "and the law changes): lower the token budgets to at most "
            f"{data.max_epochs * train_tokens:.4g}, ingest more text, or raise data.max_epochs",
        )
