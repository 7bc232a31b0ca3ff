"""Run identity is stated once (trainer.spec.RUN_IDENTITY): every spec field is listed with how
it enters the run key, so a new field's author meets the rule; the golden keys are in
tests/orchestrator/test_arch_grid.py."""

from __future__ import annotations

import dataclasses

import pytest

from trainer.spec import (
    ALWAYS,
    CORPUS_LOCATION,
    CORPUS_ONLY,
    RUN_IDENTITY,
    RUNTIME,
    ZIPF_ONLY,
    DataSpec,
    ModelSpec,
    Off,
    RecipeSpec,
    RunSpec,
)


@pytest.mark.parametrize("section, cls", [("model", ModelSpec), ("data", DataSpec), ("recipe", RecipeSpec)])
def test_every_field_is_listed_with_its_rule(section, cls):
    names = [f.name for f in dataclasses.fields(cls)]
    assert set(RUN_IDENTITY[section]) == set(names), "list the new field in trainer.spec.RUN_IDENTITY"
    for name, rule in RUN_IDENTITY[section].items():
        assert rule in (ALWAYS, RUNTIME, ZIPF_ONLY, CORPUS_ONLY, CORPUS_LOCATION) or isinstance(rule, Off), (
            name
        )
        if isinstance(rule, Off):  # the off value is the field's default: old specs keep their keys
            assert next(f.default for f in dataclasses.fields(cls) if f.name == name) == rule.value, name


def _spec(**recipe) -> RunSpec:
    return RunSpec(
        model=ModelSpec(n_layer=1, d_model=16, n_head=2, vocab_size=16, seq_len=16),
        data=DataSpec(vocab_size=16, seq_len=16, val_tokens=2048),
        recipe=RecipeSpec(**recipe),
        tokens=4096,
    )


def test_the_rules_decide_the_key():
    base = _spec()
    d = base.to_dict()
    assert "eval_lengths" not in d["recipe"] and "lr_base_width" not in d["recipe"]  # Off, at off
    assert "pos" not in d["model"] and "lexicon_size" not in d["data"]  # Off; zipf only
    assert _spec(device="cpu", compile=True).key() == base.key()  # runtime: not hashed
    assert _spec(device="cpu").legacy_key() != base.legacy_key()  # (older stores hashed it)
    assert _spec(eval_lengths=(1, 2)).key() != base.key()  # Off, away from off: hashed
    assert _spec(lr=1e-3).key() != base.key()  # always hashed
