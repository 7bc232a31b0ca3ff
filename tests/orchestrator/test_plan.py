"""`scalelab plan`: every grid kind expands to the right points with exact accounting."""

from __future__ import annotations

import json
import math

from orchestrator.cli import main
from tests.conftest import write_study

HEAD = """\
study: plan-{name}
data: {{source: markov, vocab_size: 32, order: 1, seed: 0, seq_len: 32}}
model: {{d_head: 16, aspect_ratio: 16}}
train: {{batch_size: 8, lr: 3.0e-3, schedule: {schedule}}}
"""


def plan(tmp_path, capsys, name, grid, schedule="cosine"):
    path = write_study(tmp_path / f"{name}.yaml", HEAD.format(name=name, schedule=schedule) + grid)
    assert main(["plan", str(path), "--json", "--home", str(tmp_path / "store")]) == 0
    return json.loads(capsys.readouterr().out)


def test_cartesian_grid_has_every_point_with_documented_fields(tmp_path, capsys):
    runs = plan(
        tmp_path,
        capsys,
        "cart",
        """\
grid:
  sizes: [{n_layer: 2, d_model: 32}, 2.0e5]
  tokens: [2.0e5, 4.0e5]
  moe: [{experts: 1}, {experts: 8, top_k: 2}]
  seeds: [0, 1]
""",
    )
    assert len(runs) == 2 * 2 * 2 * 2
    for r in runs:
        for k in (
            "run_key",
            "n_params",
            "n_params_active",
            "n_params_nonembedding",
            "tokens",
            "flops",
            "experts",
            "top_k",
            "status",
        ):
            assert k in r
        assert r["status"] == "pending"
        assert r["tokens"] % (8 * 32) == 0  # whole optimizer steps
        if r["experts"] == 1:
            assert r["n_params_active"] == r["n_params"]
        else:
            assert r["n_params_active"] < r["n_params"]
        assert r["n_params_nonembedding"] < r["n_params"]
        assert r["flops"] > 6 * r["n_params_active"] * r["tokens"]  # attention + head on top of 6N
    assert len({r["run_key"] for r in runs}) == len(runs)
    flops = [r["flops"] for r in runs]
    assert flops == sorted(flops, reverse=True)  # largest first


def test_tokens_per_param_sets_d_from_n(tmp_path, capsys):
    runs = plan(
        tmp_path,
        capsys,
        "tpp",
        """\
grid:
  sizes: [3.0e4, 1.0e5]
  tokens_per_param: [10, 40]
""",
    )
    assert len(runs) == 4
    for r in runs:
        ratio = r["tokens"] / r["n_params_active"]
        assert min(abs(ratio - 10), abs(ratio - 40)) / ratio < 0.02


def test_isoflop_grid_spans_sizes_at_constant_compute(tmp_path, capsys):
    runs = plan(
        tmp_path,
        capsys,
        "iso",
        """\
grid:
  isoflop: {budgets: [1.0e12, 1.0e13], points: 5, span: 0.5}
""",
    )
    assert len(runs) >= 6
    for budget in (1e12, 1e13):
        group = [r for r in runs if abs(6 * r["n_params"] * r["tokens"] / budget - 1) < 0.1]
        assert len(group) >= 3, budget  # several sizes per budget
        ns = sorted(r["n_params"] for r in group)
        assert ns[-1] / ns[0] > 2  # spread in N around the centre


def test_explicit_runs_and_wsd_branches_share_a_trunk(tmp_path, capsys):
    runs = plan(
        tmp_path,
        capsys,
        "wsd",
        """\
grid:
  sizes: [{n_layer: 2, d_model: 32}]
  tokens: [1.0e5, 2.0e5, 4.0e5]
  runs:
    - {size: {n_layer: 1, d_model: 16}, tokens: 5.0e4, moe: {experts: 4, top_k: 1}, seed: 3}
""",
        schedule="wsd",
    )
    assert len(runs) == 4
    branches = [r for r in runs if r["n_layer"] == 2]
    assert len({r["trunk_key"] for r in branches}) == 1  # one trunk, three cooldowns
    explicit = [r for r in runs if r["n_layer"] == 1]
    assert explicit[0]["experts"] == 4 and explicit[0]["seed"] == 3


def test_plan_text_output_has_totals(tmp_path, capsys):
    path = write_study(
        tmp_path / "t.yaml",
        HEAD.format(name="text", schedule="cosine")
        + """\
grid:
  sizes: [{n_layer: 2, d_model: 32}]
  tokens: [1.0e5]
""",
    )
    assert main(["plan", str(path), "--home", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "total:" in out and "PF-days" in out and "pending" in out
    assert not (tmp_path / "s").exists()  # plan writes nothing


def test_accounting_matches_trainer_conventions(tmp_path, capsys):
    from trainer import count_params, flops_per_token
    from trainer.spec import ModelSpec

    runs = plan(
        tmp_path,
        capsys,
        "acct",
        """\
grid:
  sizes: [{n_layer: 2, d_model: 32}]
  tokens: [1.0e5]
""",
    )
    m = ModelSpec(n_layer=2, d_model=32, n_head=2, vocab_size=32, seq_len=32)
    assert runs[0]["n_params"] == count_params(m).total
    assert math.isclose(runs[0]["flops"], flops_per_token(m, "chinchilla") * runs[0]["tokens"])
