"""`scalelab verify`: trains K runs on the IsoFLOP line of a budget around the predicted N_opt,
as verify-tagged runs of the same study (never fitted), resumes from its stored plan, judges the
prediction; bad input (no fit, a budget below the smallest run, --points < 3) exits 2 naming
it. A real local Ray, a real SQLite store, tiny markov models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.store.ledger import Ledger
from orchestrator.study.config import load_study
from orchestrator.study.grid import expand
from orchestrator.study.suggest import _only_runs, run_from_dict

STUDY = """\
study: {name}
data: {{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16, val_tokens: 2048}}
model: {{d_head: 8, aspect_ratio: 8}}
grid:
  sizes: [{{n_layer: 1, d_model: 8}}, {{n_layer: 1, d_model: 16}}, {{n_layer: 2, d_model: 16}}]
  tokens: [2048, 4096, 8192]
train: {{batch_size: 8, lr: 1.0e-2, eval_schedule: log}}
resources: {{num_cpus: 1, num_gpus: 0}}
"""
BUDGET = "3e8"  # about the largest grid run (3.6e8 FLOPs)


@pytest.fixture
def study(tmp_path):
    p = tmp_path / "ver.yaml"
    p.write_text(STUDY.format(name="ver"))
    return str(p)


def test_verify_without_a_fit_exits_2_and_writes_nothing(study, store, capsys):
    assert main(["verify", study, "--budget", BUDGET]) == 2
    err = capsys.readouterr().err
    assert "STUDY" in err and "--budget" in err and "scalelab run" in err
    assert not Path(store.tracking_uri[len("sqlite:///") :]).exists()


def _verify_points(store):
    c = MlflowClient(store.tracking_uri)
    exp = c.get_experiment_by_name("ver")
    runs = c.search_runs([exp.experiment_id], "tags.`scalelab.role` = 'point'", max_results=1000)
    return c, exp, [r for r in runs if r.data.tags.get("scalelab.origin") == "verify"], runs


def test_verify_trains_tags_resumes_and_judges(study, store, ray_session, capsys, monkeypatch):
    assert main(["run", study, "--no-progress"]) == 0
    capsys.readouterr()
    for argv, flag in (
        (["--budget", "1e3"], "--budget"),
        (["--budget", BUDGET, "--points", "2"], "--points"),
    ):
        assert main(["verify", study, *argv]) == 2
        assert flag in capsys.readouterr().err

    import orchestrator.run.scheduler as sched

    real = sched.run_study

    def killed(*a, **k):  # the driver dies once the plan is stored, before any run
        raise KeyboardInterrupt

    monkeypatch.setattr(sched, "run_study", killed)
    assert main(["verify", study, "--budget", BUDGET, "--no-progress"]) == 130
    c, exp, ver, _ = _verify_points(store)
    parent = c.search_runs([exp.experiment_id], "tags.`scalelab.role` = 'parent'")[0]
    plan = json.loads(parent.data.tags["scalelab.verify.3e8"])
    assert len(plan["runs"]) == 3 and not ver

    monkeypatch.setattr(sched, "run_study", real)
    assert main(["verify", study, "--budget", BUDGET, "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"budget", "predicted", "observed", "isoflop_min", "held", "reason"} <= set(res)
    assert ("did not hold" in res["reason"]) != res["held"]
    from orchestrator.run.verify import VerifyOutcome, print_verify

    print_verify(VerifyOutcome(0, res), as_json=False)
    assert ("prediction HELD" if res["held"] else "prediction DID NOT HOLD") in capsys.readouterr().out
    assert res["budget"] == 3e8 and isinstance(res["held"], bool) and res["reason"]
    assert {"n_params", "tokens", "loss", "ci95"} <= set(res["predicted"])
    assert {"n_params", "ci95"} <= set(res["isoflop_min"]) and len(res["observed"]) == 3
    for o in res["observed"]:
        assert {"n_params", "tokens", "loss", "predicted", "ci95"} <= set(o)
        assert o["ci95"][0] < o["predicted"] < o["ci95"][1]
        assert abs(6 * o["n_params"] * o["tokens"] / 3e8 - 1) < 0.5  # on the IsoFLOP line
    _, _, ver, runs = _verify_points(store)
    assert len(ver) == 3 and len(runs) == 12
    planned = expand(_only_runs(load_study(study), [run_from_dict(d) for d in plan["runs"]]))
    assert {r.data.params["run_key"] for r in ver} == {p.key for p in planned} == set(plan["run_keys"])
    assert all(r.data.tags["scalelab.verify_budget"] == "3.000000e+08" for r in ver)
    ledger = Ledger(store.ledger_uri)
    assert all(r.attempts == 1 for r in ledger.rows("ver"))  # the interrupted plan ran once, resumed
    ledger.dispose()
    assert main(["fit", "--experiment", "ver", "--form", "tied", "--bootstrap", "0", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["n_points"] == 9 and fit["excluded"]["verify run (tests the answer, not fitted)"] == 3
