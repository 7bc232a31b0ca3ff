"""grid.arch: architecture variants cross sizes, tokens, MoE settings and seeds (plan level)."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.store import tracking
from orchestrator.study.config import StudyError, parse_study
from orchestrator.study.grid import expand

BASE = """\
study: keys-before
data: {source: markov, vocab_size: 32, order: 1, seed: 0, seq_len: 32}
model: {d_head: 16, aspect_ratio: 16}
train: {batch_size: 8, lr: 3.0e-3}
grid:
  sizes: [{n_layer: 2, d_model: 32}, 2.0e5]
  tokens: [2.0e5]
  moe: [{experts: 1}, {experts: 4, top_k: 2}]
"""
# Run keys and fingerprint of BASE computed by the code before architecture options existed
# (commit 8f53538; today's `legacy_key` / `legacy_fingerprint`, which older stores are matched
# by) and by the run-identity scheme that left run-time settings out of the hash (branch
# `ledger`): adding the options must not re-key any existing study under either scheme.
KEYS_BEFORE = ["0dc9e9795459005d", "3b11813bc7c140cf", "be0da6b54cd5930a", "c361c694f1466662"]
FINGERPRINT_BEFORE = "53abdcc853e6979c"
KEYS_IDENTITY = ["48947ea3d69463c8", "551b88ad087962e3", "8b0c97783180e33f", "fa8765c9b2f8f060"]
FINGERPRINT_IDENTITY = "5432d3808673418b"


def study(text: str, **grid):
    raw = yaml.safe_load(text)
    raw["grid"].update(grid)
    return parse_study(raw)


@pytest.mark.parametrize("arch", [None, [{}], [{"pos": "learned", "norm": "pre"}]])
def test_default_architecture_keeps_existing_run_keys(arch):
    cfg = study(BASE) if arch is None else study(BASE, arch=arch)
    runs = expand(cfg)
    assert sorted(r.key for r in runs) == KEYS_IDENTITY
    assert tracking.fingerprint_hash(cfg.fingerprint()) == FINGERPRINT_IDENTITY
    assert sorted(r.spec.legacy_key() for r in runs) == KEYS_BEFORE
    assert tracking.fingerprint_hash(cfg.legacy_fingerprint()) == FINGERPRINT_BEFORE


def test_grid_arch_gives_one_point_per_arch_size_tokens_with_params():
    arch = [
        {},
        {"pos": "rope", "activation": "swiglu"},
        {"pos": "sinusoidal", "norm": "post"},
        {"objective": "mlm", "activation": "relu"},
    ]
    cfg = study(BASE, arch=arch, moe=[{"experts": 1}], tokens=[2.0e5, 4.0e5])
    runs = expand(cfg)
    assert len(runs) == 4 * 2 * 2
    labels = {
        "learned-gelu-pre-clm",
        "rope-swiglu-pre-clm",
        "sinusoidal-gelu-post-clm",
        "learned-relu-pre-mlm",
    }
    seen = {}
    for r in runs:
        p = r.mlflow_params()
        assert p["arch"] == f"{p['pos']}-{p['activation']}-{p['norm']}-{p['objective']}"
        seen.setdefault(p["arch"], set()).add((p["n_layer"], p["tokens"]))
    assert set(seen) == labels and all(len(v) == 4 for v in seen.values())
    assert len({r.key for r in runs}) == len(runs)  # each option changes the run key
    mlm = [r for r in runs if r.spec.model.objective == "mlm"]
    dense = [r for r in runs if r.spec.model.arch_label == "learned-gelu-pre-clm"]
    assert {
        r.n_params - d.n_params
        for r in mlm
        for d in dense
        if (r.spec.model.n_layer, r.tokens) == (d.spec.model.n_layer, d.tokens)
    } == {r.spec.model.d_model for r in mlm}  # exactly one extra (mask) embedding row


def test_model_keys_set_the_defaults_that_grid_arch_overrides():
    text = BASE.replace("aspect_ratio: 16}", "aspect_ratio: 16, pos: rope, activation: swiglu}")
    runs = expand(study(text, arch=[{}, {"pos": "none"}], moe=[{"experts": 4, "top_k": 2}]))
    assert {r.spec.model.arch_label for r in runs} == {"rope-swiglu-pre-clm", "none-swiglu-pre-clm"}
    assert all(r.spec.model.is_moe for r in runs)


@pytest.mark.parametrize(
    "grid_arch, key, words",
    [
        ([{"pos": "alibi"}], "grid.arch[0].pos", "learned, sinusoidal, rope, none"),
        ([{}, {"activation": "tanh"}], "grid.arch[1].activation", "gelu, relu, swiglu"),
        ([{"norm": "sandwich"}], "grid.arch[0].norm", "pre, post"),
        ([{"objective": "seq2seq"}], "grid.arch[0].objective", "clm, mlm"),
        ([{"pos": "none", "objective": "mlm"}], "grid.arch[0].pos", "position-free"),
        ([{"posn": "rope"}], "grid.arch[0].posn", "allowed here"),
        ([{}, {}], "grid.arch[1]", "list each variant once"),
    ],
)
def test_bad_arch_values_name_the_key_and_allowed_values(grid_arch, key, words):
    with pytest.raises(StudyError) as e:
        study(BASE, arch=grid_arch)
    assert e.value.key == key and words in str(e.value)


def test_bad_model_default_and_short_held_out_set_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("aspect_ratio: 16}", "aspect_ratio: 16, pos: alibi}"))
    assert main(["plan", str(bad), "--home", str(tmp_path / "s")]) == 2
    assert "model.pos" in capsys.readouterr().err
    short = tmp_path / "short.yaml"
    short.write_text(
        BASE.replace("seq_len: 32}", "seq_len: 32, val_tokens: 100}").replace(
            "lr: 3.0e-3}", "lr: 3.0e-3, eval_lengths: [1, 2, 4, 8]}"
        )
    )
    assert main(["plan", str(short), "--home", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "data.val_tokens" in err and "256" in err


ARCH_STUDY = """\
study: arch-real
data: {source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16, val_tokens: 2048}
model: {d_head: 8, aspect_ratio: 8}
grid:
  sizes: [{n_layer: 1, d_model: 16}]
  tokens: [4096]
  moe: [{experts: 1}, {experts: 4, top_k: 2}]
  arch: [{}, {pos: rope, activation: swiglu, norm: post}]
train: {batch_size: 8, lr: 1.0e-2, eval_lengths: [1, 2]}
resources: {num_cpus: 1, num_gpus: 0}
"""


def test_tiny_arch_study_runs_and_logs_params_and_length_metrics(tmp_path, store, ray_session):
    from mlflow.tracking import MlflowClient

    path = tmp_path / "arch.yaml"
    path.write_text(ARCH_STUDY)
    assert main(["run", str(path), "--no-progress"]) == 0
    c = MlflowClient(store.tracking_uri)
    exp = c.get_experiment_by_name("arch-real")
    points = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("scalelab.role") == "point"]
    assert len(points) == 4  # 2 arch x 2 moe x 1 size x 1 budget
    for r in points:
        p, m = r.data.params, r.data.metrics
        assert p["arch"] == f"{p['pos']}-{p['activation']}-{p['norm']}-{p['objective']}"
        if p["pos"] == "rope":  # swiglu experts train too
            assert p["eval_len2x"] == "measured" and 0 < m["val_loss_len2x"] < 2 * 2.78
        else:
            assert p["eval_len2x"] == "n/a" and "val_loss_len2x" not in m
