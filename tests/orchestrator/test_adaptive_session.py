"""`run --adaptive` keeps one driver session across its rounds: the study's lock stays held and
Ray stays up from the grid to the last round, so a second driver started between two rounds is
refused; each round is recorded in the ledger (and mirrored on the parent run) before it runs."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import load_study, run_study
from orchestrator.cli import main
from orchestrator.run import adaptive, ray_connection
from orchestrator.run.driverlock import StudyBusy
from orchestrator.store.ledger import Ledger
from orchestrator.study.config import ExplicitRun, ExplicitShape
from tests.conftest import write_study
from trainer import mlflow_contract as mc

STUDY = """\
study: {name}
data: {{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16, val_tokens: 2048}}
model: {{d_head: 8, aspect_ratio: 8}}
grid:
  sizes: [{{n_layer: 1, d_model: 8}}]
  tokens: [2048, 4096]
train: {{batch_size: 8, lr: 1.0e-2}}
resources: {{num_cpus: 1, num_gpus: 0}}
"""
ROUNDS = [[ExplicitRun(size=ExplicitShape(n_layer=1, d_model=16), tokens=2048.0)]]


def test_a_second_driver_between_rounds_is_refused(tmp_path, store, ray_session, monkeypatch, capsys):
    path = write_study(tmp_path / "s.yaml", STUDY.format(name="one-session"))
    cfg = load_study(path)
    connects: list[str | None] = []
    real_connect = ray_connection.connect_ray
    monkeypatch.setattr(ray_connection, "connect_ray", lambda a: connects.append(a) or real_connect(a))
    seen: list[str] = []

    def next_round(cfg, settings, a, res, new, study):
        seen.append(study.info()["driver"])
        if new == 0:  # between the grid and round 1: `scalelab run` of the same study
            capsys.readouterr()
            assert main(["run", str(path), "--home", str(store.home), "--no-progress"]) == 2
            assert "already being run by another `scalelab run`" in capsys.readouterr().err
        else:  # between round 1 and the next
            with pytest.raises(StudyBusy):
                run_study(load_study(path), store, show_progress=False)
        if new < len(ROUNDS):
            return ROUNDS[new]
        res.reason = "test: no more rounds"
        return []

    monkeypatch.setattr(adaptive, "_next_round", next_round)
    args = adaptive.AdaptiveArgs(target_flops=1e12, until_ci=1e-4)
    res = adaptive.run_adaptive(cfg, store, args, show_progress=False)

    assert res.outcome.exit_code == 0, res.outcome.messages
    assert len(res.rounds) == 1 and res.reason == "test: no more rounds"
    assert connects == [None]  # one Ray session for the grid and the round
    assert len(seen) == 2 and seen[0] and seen[0] == seen[1]  # one driver lock, held throughout

    ledger = Ledger(store.ledger_uri)
    try:
        recorded = ledger.for_study(cfg.study).rounds()
        assert set(recorded) == {1}
        assert ledger.study(cfg.study)["driver"] is None  # released at the end
        points = [r for r in ledger.rows(cfg.study) if r.kind == "point"]
        assert len(points) == 3 and all(r.state == "finished" for r in points)
    finally:
        ledger.dispose()
    c = MlflowClient(store.tracking_uri)
    exp = c.get_experiment_by_name(cfg.study)
    (parent,) = c.search_runs([exp.experiment_id], mc.PARENT_FILTER)
    assert parent.data.tags[mc.adaptive_round_tag(1)] == recorded[1]  # the mirror


def test_rounds_only_on_the_parent_run_are_read_and_copied_into_the_ledger(tmp_path, store):
    """Studies that ran before the ledger kept rounds: their parent-run tags still count."""
    from orchestrator.store import tracking

    c = tracking.client(store.tracking_uri)
    exp_id = c.create_experiment("old-rounds")
    parent = tracking.ensure_parent_run(c, exp_id, "old-rounds")
    text = '[{"size":{"n_layer":1,"d_model":16,"n_head":0},"tokens":2048.0,"seed":0,"moe":{"experts":1,"top_k":1,"granularity":1,"shared_experts":0,"aux_loss_coef":0.01,"z_loss_coef":0.001}}]'
    c.set_tag(parent, mc.adaptive_round_tag(1), text)
    ledger = Ledger(store.ledger_uri)
    try:
        assert adaptive.load_rounds(store, "old-rounds") == ROUNDS  # read-only (suggest)
        study = ledger.for_study("old-rounds")
        assert study.rounds() == {}
        assert adaptive.session_rounds(store, study) == ROUNDS  # under the driver lock
        assert study.rounds() == {1: text}  # now in the ledger too
    finally:
        ledger.dispose()
