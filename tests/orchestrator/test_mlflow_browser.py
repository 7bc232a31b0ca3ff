"""The scaling-law view in a real browser: `scalelab ui` on a finished store, headless Chromium
on the URL it prints, and on every other route into the study (home page -> experiment, a run
page, its breadcrumb), each as a first-time visitor: all in MLflow's "Model training" mode, the
Assistant panel closed. Skipped (with the command that installs a browser) where none is installed.

Set SCALELAB_SCREENSHOT=docs/mlflow_view.png to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator import load_study, run_study
from orchestrator.store.mlflow_view import COLUMNS, run_color
from tests.reliability.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
GENAI_TABS = ("evaluation-runs", "chat-sessions", "overview")  # an experiment's GenAI-mode links
ASSISTANT_OPEN = "Ask questions about"  # the Assistant panel's greeting


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no headless browser (chromium) installed: `apt-get install -y chromium` to run the MLflow view check"
    )


def _chromium(browser: str, url: str, *extra: str, size: str = "3000,1100", budget_ms: int = 25000) -> str:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--virtual-time-budget={budget_ms}",
        f"--window-size={size}",
        *extra,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    return out.stdout


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "scalelab ui exited"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"MLflow UI did not answer at {base} within {timeout:.0f} s")


def test_the_printed_url_opens_the_scaling_law_view(tiny_study, store, ray_session, tmp_path):
    browser = _browser()
    cfg = load_study(tiny_study("browser"))
    assert run_study(cfg, store, show_progress=False).exit_code == 0
    from mlflow.tracking import MlflowClient

    c = MlflowClient(store.tracking_uri)
    exp = c.get_experiment_by_name("browser")
    points = c.search_runs(
        [exp.experiment_id], "tags.`scalelab.role` = 'point'", order_by=["metrics.val_loss ASC"]
    )
    expected_order = [r.info.run_name for r in points]

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--home", str(store.home), "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        first_lines = [proc.stdout.readline() for _ in range(2)]
        url = re.search(r"http://\S+viewStateShareKey=\S+", first_lines[1]).group(0)
        assert url.endswith("&workflowType=machine_learning")
        assert f"/#/experiments/{exp.experiment_id}/runs?" in url
        _wait_healthy(f"http://127.0.0.1:{port}", proc)

        dom = _chromium(browser, url, "--dump-dom")
        headers = set(re.findall(r'role="columnheader"[^>]*col-id="([^"]+)"', dom))
        assert {key for _, key in COLUMNS} <= headers, {key for _, key in COLUMNS} - headers
        assert "duration" in headers  # the run's own time
        assert re.search(r"<strong>8</strong> matching runs", dom)  # every point, flat
        names = [n for n in re.findall(r">(L\d-d\d+[^<]*-s\d)<", dom)]
        shown = list(dict.fromkeys(names))
        assert shown == expected_order  # sorted by val_loss

        charts = _chromium(browser, url + "&compareRunsMode=CHART", "--dump-dom", budget_ms=40000)
        section = re.search(r"Scaling law</div>(.*?)Model metrics</div>", charts, re.S)
        assert section, "the view's chart section is missing"
        text = re.sub(r"<[^>]+>", " ", section.group(1))
        assert "(3)" in text and "Step" in text  # val_loss curves over tokens
        assert all(f"{name} (val_loss)" in text for name in expected_order)  # every run drawn
        assert "log10_n_params_active vs. log10_val_loss" in text  # log-log: final val_loss vs N
        assert "log10_flops vs. log10_val_loss" in text  # and vs C
        drawn = set(re.findall(r"stroke: ?(rgb\([^)]*\))", section.group(1)))
        sizes = {r.data.metrics["n_params_active"] for r in points}
        expected = {_rgb(run_color(n)) for n in sizes}
        assert len(expected) == len(sizes) == 4 and expected <= drawn, (expected, drawn)  # one per N

        _every_route_opens_in_training_mode(
            browser, f"http://127.0.0.1:{port}", exp.experiment_id, points, tmp_path
        )

        shot = Path(os.environ.get("SCALELAB_SCREENSHOT") or tmp_path / "view.png").resolve()
        _chromium(browser, url, f"--screenshot={shot}", size="2300,760")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _every_route_opens_in_training_mode(browser, base, exp_id, points, tmp_path):
    """Each page as a first-time visitor (a fresh browser profile) opens it; a GenAI-mode run
    page (`workflowType=genai`, MLflow's own switch) shows the markers these checks look for."""
    run = points[0].info.run_id
    urls = {
        "home": f"{base}/#/",
        "home -> experiment": f"{base}/#/experiments/{exp_id}",  # the link the home page shows
        "run page": f"{base}/#/experiments/{exp_id}/runs/{run}",
        "breadcrumb": f"{base}/#/experiments/{exp_id}/runs",
        "genai control": f"{base}/#/experiments/{exp_id}/runs/{run}?workflowType=genai",
    }

    def dom(item):
        name, url = item
        profile = tmp_path / ("profile-" + re.sub(r"\W", "-", name))
        return name, _chromium(browser, url, "--dump-dom", f"--user-data-dir={profile}", size="1600,1000")

    with ThreadPoolExecutor(len(urls)) as pool:
        pages = dict(pool.map(dom, urls.items()))
    assert f'href="#/experiments/{exp_id}"' in pages["home"], "the home page links the study"
    assert any(f"/experiments/{exp_id}/{tab}" in pages["genai control"] for tab in GENAI_TABS)
    for name in ("home -> experiment", "run page", "breadcrumb"):
        page = pages[name]
        genai = [tab for tab in GENAI_TABS if f"/experiments/{exp_id}/{tab}" in page]
        assert not genai, f"{name} is in GenAI mode ({genai})"
        assert re.search(rf'href="#/experiments/{exp_id}/runs[?"]', page), f"{name} has no Runs link"
    assert "matching runs" in pages["home -> experiment"]  # lands on the runs table
    for name, page in pages.items():
        if name != "genai control":
            assert ASSISTANT_OPEN not in page, f"the Assistant panel is open on the {name}"
