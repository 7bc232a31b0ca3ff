"""A tiny study end to end on a real local Ray and a real SQLite MLflow store."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator import Settings, load_study, run_study
from orchestrator.cli import main
from orchestrator.store.ledger import Ledger

POINT_PARAMS = {
    "run_key",
    "n_params",
    "n_params_active",
    "n_params_nonembedding",
    "tokens",
    "flops",
    "experts",
    "top_k",
    "n_layer",
    "d_model",
    "seed",
    "schedule",
}


def child_runs(settings: Settings, study: str):
    c = MlflowClient(settings.tracking_uri)
    exp = c.get_experiment_by_name(study)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    return c, runs


def test_study_runs_and_produces_the_documented_mlflow_layout(tiny_study, store, ray_session, capsys):
    path = tiny_study("layout")
    assert main(["run", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "MLflow store: sqlite:///" in out and "8 finished" in out

    c, runs = child_runs(store, "layout")
    parents = [r for r in runs if r.data.tags.get("scalelab.role") == "parent"]
    points = [r for r in runs if r.data.tags.get("scalelab.role") == "point"]
    assert len(parents) == 1 and len(points) == 8
    keys = set()
    for r in points:
        assert POINT_PARAMS <= set(r.data.params), POINT_PARAMS - set(r.data.params)
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.tags["scalelab.outcome"] == "finished"
        assert r.info.status == "FINISHED"
        history = c.get_metric_history(r.info.run_id, "val_loss")
        steps = [m.step for m in history]
        assert steps == sorted(set(steps)), "val_loss steps strictly increasing, no duplicates"
        assert steps[-1] == int(r.data.params["tokens"])  # the last value is at D
        assert r.data.metrics["val_loss"] == history[-1].value
        # the loss is a real held-out loss: above the source's entropy, below uniform guessing
        assert float(r.data.params["true_entropy"]) - 0.05 < history[-1].value < 2.78
        keys.add(r.data.params["run_key"])
    assert len(keys) == 8
    moe = [r for r in points if r.data.params["experts"] == "4"]
    assert len(moe) == 4 and all(
        int(r.data.params["n_params_active"]) < int(r.data.params["n_params"]) for r in moe
    )


def test_second_run_creates_nothing_and_trains_nothing(tiny_study, store, ray_session):
    cfg = load_study(tiny_study("rerun"))
    assert run_study(cfg, store, show_progress=False).exit_code == 0
    _, before = child_runs(store, "rerun")
    ledger = Ledger(store.ledger_uri)
    attempts = {r.run_key: r.attempts for r in ledger.rows("rerun")}
    ckpts = {p: p.stat().st_mtime_ns for p in Path(store.checkpoint_root).rglob("*.pt")}

    again = run_study(cfg, store, show_progress=False)
    assert again.exit_code == 0
    _, after = child_runs(store, "rerun")
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in before)
    assert {r.run_key: r.attempts for r in ledger.rows("rerun")} == attempts
    assert {p: p.stat().st_mtime_ns for p in Path(store.checkpoint_root).rglob("*.pt")} == ckpts
    ledger.dispose()


def test_wsd_study_gives_one_point_per_cooldown(tmp_path, store, ray_session):
    from tests.conftest import TINY_STUDY

    path = tmp_path / "wsd.yaml"
    path.write_text(TINY_STUDY.format(name="wsd", schedule="wsd"))
    cfg = load_study(path)
    assert run_study(cfg, store, show_progress=False).exit_code == 0
    c, runs = child_runs(store, "wsd")
    points = [r for r in runs if r.data.tags.get("scalelab.role") == "point"]
    trunks = [r for r in runs if r.data.tags.get("scalelab.role") == "trunk"]
    assert len(points) == 8 and len(trunks) == 4  # 4 (N, MoE) trunks, 2 cooldowns each
    for r in points:
        assert c.get_metric_history(r.info.run_id, "val_loss")[-1].step == int(r.data.params["tokens"])


def test_cancel_now_then_run_resumes_in_the_same_mlflow_run(tmp_path, store, ray_session):
    """`cancel --now` stops running runs at a checkpoint (marked killed); `run` resumes them."""
    import threading

    path = tmp_path / "resume.yaml"
    path.write_text("""\
study: resume
data: {source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 32, val_tokens: 2048}
model: {d_head: 8, aspect_ratio: 8}
grid:
  sizes: [{n_layer: 2, d_model: 32}]
  tokens: [6.4e5]
  seeds: [0, 1]
train: {batch_size: 16, lr: 1.0e-2, checkpoint_interval_tokens: 32768, eval_interval_tokens: 65536}
resources: {num_cpus: 1}
""")
    cfg = load_study(path)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("out", run_study(cfg, store, show_progress=False)))
    t.start()
    ledger = Ledger(store.ledger_uri)
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = ledger.rows("resume")
        if rows and all((r.tokens_done or 0) >= 65_536 for r in rows):
            break
        time.sleep(0.2)
    assert main(["cancel", str(path), "--now"]) == 0
    t.join(timeout=120)
    assert result["out"].exit_code == 1  # cancelled: not every run reached a result
    rows = {r.run_key: r for r in ledger.rows("resume")}
    assert {r.state for r in rows.values()} == {"killed"}
    c, runs = child_runs(store, "resume")
    killed_ids = {r.info.run_id for r in runs if r.data.tags.get("scalelab.role") == "point"}
    assert {r.info.status for r in runs if r.info.run_id in killed_ids} == {"KILLED"}
    assert all(list(Path(r.checkpoint_dir).glob("*.pt")) for r in rows.values())

    again = run_study(cfg, store, show_progress=False)
    assert again.exit_code == 0
    c, runs = child_runs(store, "resume")
    points = [r for r in runs if r.data.tags.get("scalelab.role") == "point"]
    assert {r.info.run_id for r in points} == killed_ids  # the same MLflow runs
    for r in points:
        assert r.info.status == "FINISHED"
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_loss")]
        assert steps == sorted(set(steps)) and steps[-1] == 640_000
        gaps = [b - a for a, b in zip(steps, steps[1:])]
        assert max(gaps) <= 65536  # nothing missing across the kill
    assert all(r.attempts == 2 for r in ledger.rows("resume"))
    ledger.dispose()
