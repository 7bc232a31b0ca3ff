"""grid.arch entries with family/objective, per-size encoder-decoder depths, grid.match_flops,
and bad family input (plan level: exit 2 naming the keys)."""

from __future__ import annotations

import math

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.study.config import StudyError, parse_study
from orchestrator.study.grid import expand
from trainer.accounting import count_params, flops_per_token

BASE = """\
study: families
data: {source: markov, vocab_size: 32, order: 1, seed: 0, seq_len: 64}
model: {d_head: 16, aspect_ratio: 16, pos: rope}
train: {batch_size: 8, lr: 3.0e-3}
grid:
  sizes: [{n_layer: 2, d_model: 32}, {n_layer: 4, d_model: 64}]
  tokens: [2.0e5]
"""
FAMILIES = [{"objective": "clm"}, {"objective": "mlm"}, {"family": "encdec", "objective": "span"}]


def study(text: str = BASE, **grid):
    raw = yaml.safe_load(text)
    raw["grid"].update(grid)
    return parse_study(raw)


def test_families_on_the_grid_carry_family_objective_and_stack_params():
    runs = expand(study(arch=FAMILIES))
    assert len(runs) == 6
    by = {(r.spec.model.family, r.spec.model.objective, r.spec.model.n_layer): r for r in runs}
    for (family, objective, _), r in by.items():
        p = r.mlflow_params()
        assert (p["family"], p["objective"]) == (family, objective)
        if family == "encdec":
            m = r.spec.model
            assert p["arch"] == "encdec-rope-gelu-pre-span"
            assert (p["n_layer_enc"], p["n_layer_dec"]) == (m.n_layer, m.n_layer)  # default: n_layer each
            assert p["n_params_enc"] + p["n_params_dec"] == p["n_params_nonembedding"]
            assert (p["span_noise_density"], p["span_mean_length"]) == (0.15, 3.0)
            assert (p["enc_len"], p["dec_len"]) == (57, 12)
            assert float(p["flops"]) == pytest.approx(float(p["flops_per_example"]) * r.tokens / 64, rel=1e-6)
        else:
            assert "n_params_enc" not in p and p["arch"] == f"rope-gelu-pre-{objective}"


def test_match_flops_designs_encdec_depths_at_the_decoders_flops_per_token():
    runs = expand(study(arch=FAMILIES, match_flops=True))
    dec = {r.spec.model.d_model: r for r in runs if r.spec.model.objective == "clm"}
    for r in runs:
        m = r.spec.model
        if m.family != "encdec":
            continue
        ratio = flops_per_token(m) / flops_per_token(dec[m.d_model].spec.model)
        assert abs(math.log(ratio)) < 0.12, (m.n_layer_enc, m.n_layer_dec, ratio)
        assert count_params(m).total > 1.5 * dec[m.d_model].n_params  # ~2x the parameters (T5)
    depths = sorted(
        (r.spec.model.n_layer_enc, r.spec.model.n_layer_dec) for r in runs if r.spec.model.n_layer_enc
    )
    assert depths == [(2, 1), (3, 3)]


def test_explicit_depths_per_size_apply_to_encdec_variants_only():
    sizes = [{"n_layer": 2, "d_model": 32, "n_layer_enc": 3, "n_layer_dec": 1}]
    runs = expand(study(arch=FAMILIES[::2], sizes=sizes))
    m = {r.spec.model.family: r.spec.model for r in runs}
    assert (m["encdec"].n_layer_enc, m["encdec"].n_layer_dec) == (3, 1)
    assert m["decoder"].n_layer == 2 and m["decoder"].n_layer_enc == 0
    assert {r.label for r in runs} == {"L2-d32-rope-gelu-pre-clm", "L3+1-d32-encdec-rope-gelu-pre-span"}


@pytest.mark.parametrize(
    "grid, key, words",
    [
        ({"arch": [{"family": "encdec"}]}, "grid.arch[0].family", "objective: span"),
        ({"arch": [{"family": "encdec", "objective": "clm"}]}, "grid.arch[0].objective", "objective: span"),
        ({"arch": [{"objective": "span"}]}, "grid.arch[0].objective", "family: encdec"),
        (
            {"arch": [{"family": "encdec", "objective": "span", "span_noise_density": 1.5}]},
            "grid.arch[0].span_noise_density",
            "(0, 1)",
        ),
        (
            {"arch": [{"family": "encdec", "objective": "span", "span_mean_length": 0}]},
            "grid.arch[0].span_mean_length",
            ">= 1",
        ),
        (
            {"arch": [{"family": "encdec", "objective": "span", "span_mean_length": 30}]},
            "data.seq_len",
            "span_mean_length",
        ),
        ({"arch": [{"objective": "clm", "span_mean_length": 5}]}, "grid.arch[0].span_mean_length", "span"),
        ({"arch": [{"family": "transformer"}]}, "grid.arch[0].family", "decoder, encdec"),
        ({"match_flops": True}, "grid.match_flops", "family: encdec"),
        ({"match_flops": "yes"}, "grid.match_flops", "true or false"),
        (
            {"sizes": [{"n_layer": 2, "d_model": 32, "n_layer_enc": 2}]},
            "grid.sizes[0].n_layer_enc",
            "family: encdec",
        ),
        (
            {
                "sizes": [{"n_layer": 2, "d_model": 32, "n_layer_dec": 2}],
                "arch": FAMILIES,
                "match_flops": True,
            },
            "grid.sizes[0].n_layer_dec",
            "match_flops",
        ),
    ],
)
def test_bad_family_input_names_the_key(grid, key, words):
    with pytest.raises(StudyError) as e:
        study(**grid)
    assert e.value.key == key and words in str(e.value)


def test_short_sequence_for_spans_exits_2_naming_the_keys(tmp_path, capsys):
    bad = tmp_path / "short.yaml"
    text = BASE.replace("seq_len: 64", "seq_len: 8").replace(
        "tokens: [2.0e5]", "tokens: [2.0e5]\n  arch: [{}, {family: encdec, objective: span}]"
    )
    bad.write_text(text)
    assert main(["plan", str(bad), "--home", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "data.seq_len" in err and "span_noise_density" in err and "span_mean_length" in err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.db"))
