"""train.lr_base_width: one recipe for every size (peak lr = lr·W/d_model, muP-style for Adam)."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.store import tracking
from orchestrator.study.config import StudyError, parse_study
from orchestrator.study.grid import expand
from trainer import InMemorySink, train

from .conftest import tiny_spec

STUDY = """\
study: widths
data: {source: markov, vocab_size: 32, order: 1, seed: 0, seq_len: 32}
model: {d_head: 16, aspect_ratio: 16}
train: {batch_size: 8, lr: 1.0e-2}
grid: {sizes: [{n_layer: 1, d_model: 16}, {n_layer: 2, d_model: 32}, {n_layer: 3, d_model: 64}], tokens: [2.0e5]}
"""


def _study(**train):
    raw = yaml.safe_load(STUDY)
    raw["train"].update(train)
    return parse_study(raw)


def test_each_width_gets_its_scaled_peak_lr_and_logs_it():
    runs = sorted(expand(_study(lr_base_width=32)), key=lambda r: r.spec.model.d_model)
    got = {r.spec.model.d_model: r.spec.recipe.peak_lr(r.spec.model.d_model) for r in runs}
    assert got == pytest.approx({16: 2e-2, 32: 1e-2, 64: 5e-3})
    params = [r.mlflow_params() for r in runs]
    assert [p["lr_peak"] for p in params] == ["0.02", "0.01", "0.005"]
    assert {p["lr_base_width"] for p in params} == {32} and {p["lr"] for p in params} == {1e-2}


def test_off_by_default_and_unset_keeps_keys_and_fingerprint():
    plain, zero = _study(), _study(lr_base_width=0)
    assert [r.key for r in expand(plain)] == [r.key for r in expand(zero)]
    assert tracking.fingerprint_hash(plain.fingerprint()) == tracking.fingerprint_hash(zero.fingerprint())
    assert all(r.spec.recipe.peak_lr(r.spec.model.d_model) == 1e-2 for r in expand(plain))
    assert "lr_base_width" not in expand(plain)[0].mlflow_params()
    scaled = _study(lr_base_width=32)  # a different recipe: new keys and a new study fingerprint
    assert not {r.key for r in expand(scaled)} & {r.key for r in expand(plain)}
    assert tracking.fingerprint_hash(scaled.fingerprint()) != tracking.fingerprint_hash(plain.fingerprint())


@pytest.mark.parametrize("bad", [-1, 1.5, "wide"])
def test_bad_base_width_names_the_key(bad):
    with pytest.raises(StudyError, match=r"train\.lr_base_width"):
        _study(lr_base_width=bad)


def test_trainer_runs_at_the_scaled_peak(tmp_path):
    spec = tiny_spec(tokens=2048, d_model=32, lr=1e-2, lr_base_width=8, warmup_tokens=512)
    sink = InMemorySink()
    res = train(spec, sink, checkpoint_dir=tmp_path)
    assert res.status == "finished", res.message
    lrs = [v for _, v in sink.history("lr")]
    assert max(lrs) == pytest.approx(2.5e-3)  # 1e-2 · 8/32, reached after warmup
    assert lrs[-1] == pytest.approx(2.5e-3 * spec.recipe.min_lr_ratio)
