"""CLI start-up: wall time of `scalelab --help` and `scalelab plan configs/quickstart.yaml`
against `python -c pass` (the interpreter's own start), as ratios.

Each command runs as a fresh process (what a user waits for), alternating with the reference;
the best of `--repeat` runs is reported, which keeps the ratios robust to other load.
`plan` runs on an empty SCALELAB_HOME (no ledger to read), as on a first try.

    .venv/bin/python benchmarks/cli_startup.py
    .venv/bin/python benchmarks/cli_startup.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "scalelab --help": [sys.executable, "-m", "orchestrator.cli", "--help"],
    "scalelab plan configs/quickstart.yaml": [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "plan",
        "configs/quickstart.yaml",
    ],
}


def _time(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SCALELAB_HOME": home}
        env.pop("MLFLOW_TRACKING_URI", None)
        best = {name: float("inf") for name in COMMANDS}
        for _ in range(args.repeat):
            for name, cmd in COMMANDS.items():
                best[name] = min(best[name], _time(cmd, env))
    ref = best["python -c pass"]
    print(f"best of {args.repeat} fresh processes each")
    for name, t in best.items():
        print(f"{name:40s} {t * 1000:7.0f} ms  {t / ref:5.1f}x python -c pass")


if __name__ == "__main__":
    main()
