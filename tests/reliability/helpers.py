"""Shared helpers for the fault-injection tests: study files, MLflow/ledger assertions, polling."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient

LONG_STUDY = """\
study: {name}
data: {{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16, val_tokens: 1024}}
model: {{d_head: 8, aspect_ratio: 8}}
grid:
  sizes: {sizes}
  tokens: {tokens}
  seeds: {seeds}
train: {{batch_size: 8, lr: {lr}, eval_interval_tokens: {interval}, checkpoint_interval_tokens: {interval}{extra_train}}}
resources: {{num_cpus: {num_cpus}, num_gpus: 0, max_retries: {max_retries}}}
"""


def long_study(
    path: Path,
    name: str,
    *,
    tokens="[98304]",
    sizes="[{n_layer: 1, d_model: 16}]",
    seeds="[0]",
    interval=4096,
    lr="1.0e-2",
    num_cpus=1,
    max_retries=2,
    extra_train="",
) -> Path:
    path.write_text(
        LONG_STUDY.format(
            name=name,
            tokens=tokens,
            sizes=sizes,
            seeds=seeds,
            interval=interval,
            lr=lr,
            num_cpus=num_cpus,
            max_retries=max_retries,
            extra_train=extra_train,
        )
    )
    return path


def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def in_thread(fn, *args, **kwargs):
    """Run fn in a daemon thread; returns (thread, box) where box['result'|'error'] is set."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - surfaced by the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def point_runs(tracking_uri: str, study: str):
    c = MlflowClient(tracking_uri)
    exp = c.get_experiment_by_name(study)
    runs = c.search_runs([exp.experiment_id], max_results=5000)
    return c, [r for r in runs if r.data.tags.get("scalelab.role") == "point"]


def assert_metric_series(c: MlflowClient, run, *, max_gap: int, key: str = "val_loss") -> list[int]:
    """Steps strictly increasing, no duplicates, gaps <= max_gap, last step = the run's tokens."""
    steps = [
        m.step
        for m in sorted(c.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
    ]
    assert steps, f"no {key} in run {run.info.run_id}"
    assert len(steps) == len(set(steps)), f"duplicate {key} steps: {steps}"
    assert steps == sorted(steps)
    gaps = [b - a for a, b in zip([0] + steps, steps)]
    assert max(gaps) <= max_gap, f"gap {max(gaps)} > {max_gap} in {key} steps {steps}"
    assert steps[-1] == int(run.data.params["tokens"])
    return steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (the store, ledger and checkpoints)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(name, state, ppid) from /proc/PID/stat, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return name, state, int(ppid)


def descendants(pid: int) -> set[int]:
    """Every live process below pid (children, grandchildren, ...)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st:
                parent[int(d.name)] = st[2]
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] not in ("Z", "X")


def proc_name(pid: int) -> str:
    st = _stat(pid)
    return st[0] if st else ""


def ledger_rows(ledger_uri: str, study: str) -> dict:
    """run_key -> ledger row of a study, read while a driver may still be creating the ledger
    ({} until its file and tables exist)."""
    from orchestrator.store.ledger import Ledger

    if not Path(ledger_uri[len("sqlite:///") :]).exists():
        return {}
    ledger = Ledger(ledger_uri, create=False)
    try:
        return {r.run_key: r for r in ledger.rows(study)}
    except Exception:  # tables not created yet
        return {}
    finally:
        ledger.dispose()
