"""`scalelab suggest` and `scalelab run --adaptive` end to end on a real local Ray and a real
SQLite MLflow store, with tiny models; resume without repeating a round; bad input exits 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.store.ledger import Ledger

STUDY = """\
study: {name}
data: {{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16, val_tokens: 2048}}
model: {{d_head: 8, aspect_ratio: 8}}
grid:
  sizes: [{{n_layer: 1, d_model: 8}}, {{n_layer: 1, d_model: 16}}, {{n_layer: 2, d_model: 16}}]
  tokens: [2048, 4096, 8192]
train: {{batch_size: 8, lr: 1.0e-2}}
resources: {{num_cpus: 1, num_gpus: 0}}
"""
GRID_FLOPS_MAX = 4.0e8  # the largest grid run: 3.6e8 FLOPs
GRID_FLOPS = 1.1e9  # the whole grid: 1.07e9 FLOPs


@pytest.fixture
def study(tmp_path):
    def make(name):
        p = tmp_path / f"{name}.yaml"
        p.write_text(STUDY.format(name=name))
        return p

    return make


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["suggest", "{s}", "--target-flops", "1e3"], "--target-flops"),
        (["suggest", "{s}", "--target-flops", "1e12", "--max-runs", "0"], "--max-runs"),
        (["suggest", "{s}", "--target-flops", "inf", "--json"], "--target-flops"),
        (["suggest", "{s}", "--target-flops", "nan"], "--target-flops"),
        (["suggest", "{s}", "--target-flops", "1e12", "--max-flops", "nan"], "--max-flops"),
        (["suggest", "{s}", "--target-flops", "1e12", "--gamma", "inf"], "--gamma"),
        (["suggest", "{s}", "--target-flops", "1e12", "--max-flops", "10"], "--max-flops"),
        (["run", "{s}", "--adaptive", "--target-flops", "1e12", "--until-ci", "0"], "--until-ci"),
        (["run", "{s}", "--adaptive", "--target-flops", "1e12", "--until-ci", "-1"], "--until-ci"),
        (["run", "{s}", "--adaptive", "--target-flops", "1e5", "--until-ci", "0.2"], "--target-flops"),
        (
            ["run", "{s}", "--adaptive", "--target-flops", "1e12", "--until-ci", "0.2", "--max-flops", "10"],
            "--max-flops",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_flag(study, store, capsys, argv, flag):
    path = str(study("bad"))
    assert main([a.format(s=path) for a in argv]) == 2
    assert flag in capsys.readouterr().err
    assert not Path(store.tracking_uri[len("sqlite:///") :]).exists()  # nothing written


def test_json_output_is_strict_json(capsys):
    """Python's json writes Infinity/NaN, which jq and JavaScript reject: scripts get null."""
    from types import SimpleNamespace

    from orchestrator.study.suggest import print_suggestion

    out = {
        "target_flops": float("inf"),
        "current": {"value": float("nan")},
        "suggestions": [{"score": -math.inf}],
    }
    print_suggestion(SimpleNamespace(to_json=lambda: out, plan=SimpleNamespace(seed=False)), as_json=True)

    def reject(token):
        raise AssertionError(f"{token} in --json output")

    parsed = json.loads(capsys.readouterr().out, parse_constant=reject)
    assert parsed == {"target_flops": None, "current": {"value": None}, "suggestions": [{"score": None}]}


def _points(settings, study_name):
    c = MlflowClient(settings.tracking_uri)
    exp = c.get_experiment_by_name(study_name)
    runs = c.search_runs(
        [exp.experiment_id], filter_string="tags.`scalelab.role` = 'point'", max_results=1000
    )
    return c, exp, runs


def test_suggest_proposes_new_runs_within_the_budget(study, store, ray_session, capsys):
    path = str(study("sugg"))
    assert main(["suggest", path, "--target-flops", "1e12", "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["current"]["value"] is None and fresh["current"]["n_points"] == 0
    assert len(fresh["suggestions"]) >= 9  # a seed design: 3 sizes x 3 budgets

    assert main(["run", path, "--no-progress"]) == 0
    capsys.readouterr()
    _, _, runs = _points(store, "sugg")
    done = {(int(r.data.params["n_params"]), int(r.data.params["tokens"])) for r in runs}
    budget = 2 * GRID_FLOPS_MAX
    assert (
        main(
            [
                "suggest",
                path,
                "--target-flops",
                "1e12",
                "--max-runs",
                "3",
                "--max-flops",
                str(budget),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"target_flops", "objective", "current", "suggestions", "flops_requested"}
    assert out["target_flops"] == 1e12 and out["objective"] == "log_n_opt"
    assert out["current"]["n_points"] == 9
    assert out["suggestions"] and out["flops_requested"] <= budget
    assert out["flops_requested"] == pytest.approx(sum(s["flops"] for s in out["suggestions"]))
    for s in out["suggestions"]:
        assert set(s) == {"n_params", "tokens", "flops", "moe", "arch", "expected_ci95", "score"}
        assert (s["n_params"], s["tokens"]) not in done
    if out["current"]["value"] is not None:  # the fit was usable: greedy picks
        lo, hi = out["current"]["ci95"]
        assert lo < out["current"]["value"] < hi and len(out["suggestions"]) <= 3
    assert main(["suggest", path, "--target-flops", "1e12", "--objective", "loss"]) == 0
    assert "FLOPs requested" in capsys.readouterr().out


def test_adaptive_rounds_are_tagged_and_resume_without_repeating(study, store, ray_session, capsys):
    path = str(study("adapt"))
    args = [
        "run",
        path,
        "--adaptive",
        "--target-flops",
        "1e12",
        "--until-ci",
        "0.0001",
        "--max-runs",
        "2",
        "--max-flops",
        str(GRID_FLOPS + 1e9),
        "--no-progress",
    ]
    assert main(args + ["--max-rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 adaptive round(s)" in out and "--max-rounds 1 reached" in out
    c, exp, runs = _points(store, "adapt")
    first = {r.info.run_id: r.data.tags.get("scalelab.round") for r in runs}
    r1 = [r for r in runs if r.data.tags.get("scalelab.origin") == "adaptive"]
    assert r1 and all(r.data.tags["scalelab.round"] == "1" for r in r1)
    assert len(runs) == 9 + len(r1)
    ledger = Ledger(store.ledger_uri)
    attempts = {r.run_key: r.attempts for r in ledger.rows("adapt")}

    assert main(args + ["--max-rounds", "1"]) == 0  # continues: round 2, round 1 not redone
    out = capsys.readouterr().out
    assert "2 adaptive round(s)" in out
    _, _, runs2 = _points(store, "adapt")
    for r in runs2:
        if r.info.run_id in first:
            assert r.data.tags.get("scalelab.round") == first[r.info.run_id]
    r2 = [r for r in runs2 if r.data.tags.get("scalelab.round") == "2"]
    assert r2 and len(runs2) == len(runs) + len(r2)
    keys = [r.data.params["run_key"] for r in runs2]
    assert len(keys) == len(set(keys))  # no point planned twice
    after = {r.run_key: r.attempts for r in ledger.rows("adapt")}
    assert all(after[k] == n for k, n in attempts.items())  # nothing retrained
    spent = sum(r.flops for r in ledger.rows("adapt") if r.kind == "point")
    assert spent <= GRID_FLOPS + 1e9
    ledger.dispose()
    parent = c.search_runs([exp.experiment_id], "tags.`scalelab.role` = 'parent'")[0]
    assert {"scalelab.adaptive.round.1", "scalelab.adaptive.round.2"} <= set(parent.data.tags)
