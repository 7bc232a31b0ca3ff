"""When Ray dies under a running study, `run` ends with one line that says to rerun to resume."""

from __future__ import annotations

import pytest

from orchestrator.cli import main, ray_died
from orchestrator.run import scheduler
from tests.conftest import TINY_STUDY


def test_ray_death_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from ray.exceptions import RaySystemError

    path = tmp_path / "s.yaml"
    path.write_text(TINY_STUDY.format(name="ray-dies", schedule="cosine"))

    def dies(*args, **kwargs):
        try:
            raise ConnectionError("GCS has been unreachable for 60 s")
        except ConnectionError as e:
            raise RaySystemError("System error: the raylet died") from e

    monkeypatch.setattr(scheduler, "run_study", dies)
    assert main(["run", str(path), "--home", str(tmp_path / "h"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Ray stopped or failed" in err[0]
    assert "run the same `scalelab run` again to resume" in err[0]


def test_other_errors_are_not_mistaken_for_ray_dying(tmp_path, monkeypatch):
    assert not ray_died(ValueError("a bug"))
    path = tmp_path / "s.yaml"
    path.write_text(TINY_STUDY.format(name="ray-dies", schedule="cosine"))
    monkeypatch.setattr(
        scheduler, "run_study", lambda *a, **k: (_ for _ in ()).throw(ZeroDivisionError("bug"))
    )
    with pytest.raises(ZeroDivisionError):
        main(["run", str(path), "--home", str(tmp_path / "h"), "--no-progress"])
