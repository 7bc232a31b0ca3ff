"""Hostile or sloppy study files: bounded work, exit 2, a message naming the key (issue 9)."""

from __future__ import annotations

import time

import pytest

from orchestrator.cli import main
from orchestrator.study.config import load_study
from orchestrator.study.grid import expand

BASE = """\
study: {name}
data: {{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16}}
model: {{d_head: 8, aspect_ratio: 8}}
grid: {grid}
train: {train}
"""


def text(
    name="limits",
    grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [4096]}",
    train="{batch_size: 8, lr: 1.0e-2}",
):
    return BASE.format(name=name, grid=grid, train=train)


def plan(tmp_path, body: str, capsys) -> tuple[int, str]:
    path = tmp_path / "s.yaml"
    path.write_text(body)
    rc = main(["plan", str(path), "--home", str(tmp_path / "store")])
    return rc, capsys.readouterr().err


def alias_bomb() -> str:
    """A ~445-byte billion-laughs document: 9 levels of 9 aliases, ~4e8 values expanded."""
    lines = ["a0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\nstudy: bomb\ngrid: {sizes: *a8, tokens: [4096]}\n"


def test_alias_bomb_is_refused_fast(tmp_path, capsys):
    body = alias_bomb()
    assert 400 <= len(body) <= 500
    t0 = time.monotonic()
    rc, err = plan(tmp_path, body, capsys)
    assert rc == 2 and time.monotonic() - t0 < 10
    assert "100000 values" in err and "alias" in err and len(err) < 1000


def test_large_list_is_refused_fast(tmp_path, capsys):
    body = text(grid="{sizes: [" + ",".join(["1.0e5"] * 50_000) + "], tokens: [4096]}")
    t0 = time.monotonic()
    rc, err = plan(tmp_path, body, capsys)
    assert rc == 2 and time.monotonic() - t0 < 10
    assert "grid.sizes" in err and "10000" in err and len(err) < 1000


def test_file_over_one_mib_is_refused(tmp_path, capsys):
    rc, err = plan(tmp_path, text() + "#" * (1 << 20) + "\n", capsys)
    assert rc == 2 and "1 MiB" in err


def test_echoed_values_are_truncated(tmp_path, capsys):
    rc, err = plan(tmp_path, text(train="{batch_size: 8, lr: " + "x" * 100_000 + "}"), capsys)
    assert rc == 2 and "train.lr" in err and len(err) < 600


def test_runs_per_study_are_bounded(tmp_path, capsys):
    sizes = ",".join(f"{{n_layer: 1, d_model: {8 * (i + 1)}}}" for i in range(200))
    tokens = ",".join(str(4096 * (i + 1)) for i in range(100))
    rc, err = plan(tmp_path, text(grid=f"{{sizes: [{sizes}], tokens: [{tokens}]}}"), capsys)
    assert rc == 2 and "20000 runs" in err


def test_study_name_with_trailing_newline_is_rejected(tmp_path, capsys):
    rc, err = plan(tmp_path, text(name='"limits\\n"'), capsys)
    assert rc == 2 and "study" in err and "not a valid name" in err
    rc, err = plan(tmp_path, text(name='"limits "'), capsys)
    assert rc == 2 and "not a valid name" in err


def test_integers_accept_e_notation_of_whole_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(text(train="{batch_size: 8.0e0, lr: 1.0e-2, eval_interval_tokens: 1.0e7}"))
    cfg = load_study(path)
    assert cfg.train.batch_size == 8 and cfg.train.eval_interval_tokens == 10_000_000


@pytest.mark.parametrize("value", ["1.5", "2.5e0"])
def test_integers_reject_fractions(tmp_path, capsys, value):
    rc, err = plan(tmp_path, text(train=f"{{batch_size: {value}, lr: 1.0e-2}}"), capsys)
    assert rc == 2 and "train.batch_size" in err and "whole number" in err


def test_wsd_warmup_plus_cooldown_over_one_is_rejected(tmp_path, capsys):
    rc, err = plan(
        tmp_path,
        text(train="{batch_size: 8, lr: 1.0e-2, schedule: wsd, warmup_frac: 0.4, cooldown_frac: 0.7}"),
        capsys,
    )
    assert rc == 2 and "train.cooldown_frac" in err and "warmup_frac + cooldown_frac" in err
    rc, _ = plan(
        tmp_path,
        text(train="{batch_size: 8, lr: 1.0e-2, schedule: cosine, warmup_frac: 0.4, cooldown_frac: 0.7}"),
        capsys,
    )
    assert rc == 0  # cosine has no cooldown phase


def test_divergence_bound_below_the_entropy_floor_is_rejected(tmp_path, capsys):
    from trainer import true_entropy

    path = tmp_path / "s.yaml"
    path.write_text(text())
    floor = true_entropy(load_study(path).data)
    rc, err = plan(
        tmp_path, text(train=f"{{batch_size: 8, lr: 1.0e-2, divergence_loss: {floor * 0.9:.4f}}}"), capsys
    )
    assert rc == 2 and "train.divergence_loss" in err and "entropy" in err
    rc, _ = plan(
        tmp_path, text(train=f"{{batch_size: 8, lr: 1.0e-2, divergence_loss: {floor + 1:.4f}}}"), capsys
    )
    assert rc == 0


def test_size_beyond_the_512_layer_cap_is_an_error(tmp_path, capsys):
    rc, err = plan(tmp_path, text(grid="{sizes: [1.0e5, 1.0e13], tokens: [4096]}"), capsys)
    assert rc == 2 and "grid.sizes[1]" in err and "512 layers" in err


def test_sizes_collapsing_into_one_run_are_an_error(tmp_path, capsys):
    body = text(grid="{sizes: [2.0e9, 5.0e9, 1.0e10], tokens: [4096]}").replace(
        "aspect_ratio: 8", "aspect_ratio: 1"
    )
    rc, err = plan(tmp_path, body, capsys)
    assert rc == 2 and "grid.sizes[" in err and ("same shape" in err or "512 layers" in err)
    rc, err = plan(tmp_path, text(grid="{sizes: [1.0e5, 1.01e5], tokens: [4096]}"), capsys)
    assert rc == 2 and "grid.sizes[1]" in err and "same shape as grid.sizes[0]" in err


def test_isoflop_points_spend_their_budget_within_5_percent():
    planned = expand(load_study("configs/isoflop.yaml"))
    assert len(planned) >= 15
    for p in planned:
        assert p.budget is not None
        assert abs(p.flops / p.budget - 1) <= 0.05, (p.label, p.flops, p.budget)
        assert float(p.mlflow_params()["budget"]) == pytest.approx(p.budget, rel=1e-6)
    assert {p.budget for p in planned} == {3e11, 1e12, 3e12}


def test_plan_json_shows_budget_per_row(tmp_path, capsys):
    import json

    assert main(["plan", "configs/isoflop.yaml", "--json", "--home", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(abs(r["flops"] / r["budget"] - 1) <= 0.05 for r in rows)
    path = tmp_path / "s.yaml"
    path.write_text(text())
    assert main(["plan", str(path), "--json", "--home", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["budget"] for r in rows] == [None]
    assert "budget" not in expand(load_study(path))[0].mlflow_params()
