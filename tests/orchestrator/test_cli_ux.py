"""The CLI as a new user meets it: fast --help/plan, honest plan estimates, ETA from this study's
own rate, `ui` refusing a busy port or a missing store."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator import load_study
from orchestrator.cli import main
from orchestrator.study import estimate
from orchestrator.study.grid import expand
from tests.conftest import write_study

ROOT = Path(__file__).resolve().parents[2]
STUDY = """\
study: ux-{name}
data: {{source: markov, vocab_size: 32, order: 1, seed: 0, seq_len: 32}}
model: {{d_head: 16, aspect_ratio: 16}}
grid:
  sizes: [{{n_layer: 1, d_model: 16}}, {{n_layer: 2, d_model: 32}}]
  tokens: [1.0e5, 2.0e5, 4.0e5]
train: {{batch_size: 8, lr: 3.0e-3, schedule: {schedule}, cooldown_frac: 0.2}}
resources: {{num_cpus: 1, num_gpus: 0}}
"""


def study(tmp_path, name, schedule="cosine"):
    return write_study(tmp_path / f"{name}.yaml", STUDY.format(name=name, schedule=schedule))


@pytest.mark.parametrize("argv", [["--help"], ["plan", "configs/quickstart.yaml"]])
def test_help_and_plan_import_no_heavy_library(argv):
    code = (
        "import sys\nfrom orchestrator.cli import main\ntry:\n    main(%r)\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('ray', 'mlflow', 'torch', 'pandas', 'scipy') "
        "if m in sys.modules))" % argv
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "SCALELAB_HOME": "/nonexistent-scalelab-home"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_wsd_plan_counts_shared_trunks_once(tmp_path, capsys):
    path = study(tmp_path, "wsd", "wsd")
    assert main(["plan", str(path), "--json", "--home", str(tmp_path / "s")]) == 0
    runs = json.loads(capsys.readouterr().out)
    planned = expand(load_study(path))
    per_step = 8 * 32
    for n_layer in (1, 2):
        branch = sorted((r for r in runs if r["n_layer"] == n_layer), key=lambda r: r["tokens"])
        trained_tokens = sum(r["flops_trained"] / r["flops"] * r["tokens"] for r in branch)
        # the trunk to the longest branch's cooldown start, then every cooldown
        starts = [round(r["tokens"] // per_step * 0.8) * per_step for r in branch]
        expected = starts[-1] + sum(r["tokens"] - s for r, s in zip(branch, starts))
        assert trained_tokens == pytest.approx(expected)
    assert sum(r["flops_trained"] for r in runs) < 0.75 * sum(p.flops for p in planned)

    assert main(["plan", str(path), "--home", str(tmp_path / "s"), "--max-concurrent", "1"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs of the points" in out and "FLOPs trained (wsd branches share their trunk)" in out
    assert "1 run(s) at once (--max-concurrent 1" in out


def test_wall_time_follows_concurrency_and_largest_first_dispatch():
    assert estimate.makespan([4, 3, 2, 1], 1) == 10
    assert estimate.makespan([4, 3, 2, 1], 2) == 5  # 4+1 | 3+2
    assert estimate.makespan([4, 3, 2, 1], 8) == 4


def test_plan_rate_comes_from_this_study_on_the_same_device_kind():
    rows = [
        SimpleNamespace(state="finished", flops_per_s=2e9, device="cpu"),
        SimpleNamespace(state="finished", flops_per_s=4e9, device="cpu"),
        SimpleNamespace(state="finished", flops_per_s=9e13, device="cuda:0"),
        SimpleNamespace(state="failed", flops_per_s=1e3, device="cpu"),
    ]
    assert estimate.measured_rate(rows, "cpu") == (3e9, 2)
    assert estimate.measured_rate(rows, "cuda") == (9e13, 1)
    assert estimate.measured_rate([], "cpu") == (None, 0)
    assert estimate.device_kind(0) == "cpu" and estimate.device_kind(1) == "cuda"


def test_eta_uses_the_rate_after_warm_up(tmp_path, monkeypatch):
    from orchestrator.run import progress

    planned = expand(load_study(study(tmp_path, "eta")))
    total = sum(p.flops for p in planned)
    clock = {"t": 0.0}
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock["t"])

    def rows(frac):  # every run the same share done
        return {
            p.key: SimpleNamespace(
                state="running", done=False, tokens_done=int(frac * p.tokens), last_loss=None, val_loss=None
            )
            for p in planned
        }

    p = progress.Progress("eta", planned, enabled=False)
    assert p.update(rows(0.0))["eta_s"] is None
    clock["t"] = 30.0  # 30 s of Ray and worker start-up
    assert p.update(rows(0.1))["eta_s"] is None
    clock["t"] = 40.0  # 10% more in 10 s: 80 s left (not 160 s)
    s = p.update(rows(0.2))
    assert s["eta_s"] == pytest.approx(80.0, rel=0.02)
    assert s["flops_done"] == pytest.approx(0.2 * total, rel=0.02)
    assert progress.bar(0.5, 10) == "[#####.....]"
    assert "ETA 1m" in p._line(s) and "[####" in p._line(s)


def test_ui_on_a_busy_port_exits_2_naming_it(tmp_path, capsys):
    home = tmp_path / "store"
    home.mkdir()
    (home / "mlflow.db").touch()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["ui", "--home", str(home), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and "--port" in err and "already in use" in err


def test_ui_on_a_missing_store_says_so_and_creates_nothing(tmp_path, capsys):
    home = tmp_path / "not-a-store"
    assert main(["ui", "--home", str(home), "--port", "1"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not home.exists()


def test_run_says_what_it_does_without_ray_or_mlflow_log_noise(tiny_study, store, ray_session, capfd):
    path = tiny_study("quiet")
    assert main(["run", str(path), "--no-progress"]) == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("quiet: starting a local Ray and its workers")
    assert "INFO" not in out + err  # no MLflow/alembic/Ray INFO logs
    assert "viewStateShareKey=scalelab-scaling-law" in lines[-1]
