"""Tracking-path throughput: K concurrent fake runs logging through the project's own sink.

Each fake run is a separate process (real runs are Ray worker processes) that logs `--points`
metric points to its own pre-created MLflow run through `trainer.sinks.MlflowSink`
(`log_metrics`, `flush()` every `--flush-every` points as the trainer does at checkpoints, then
`close()`). The driver creates the experiment and the runs first (as `scalelab run` does), the
processes are started and import MLflow, then all begin logging at one signal: the figure is
points sent / wall time from that signal until the last process has closed its sink. Afterwards
every run's metric history is read back: lost = sent - stored (must be 0); errors = exceptions
raised in the processes (must be 0).

Backends: `sqlite` (direct, sqlite:///...), `server` (an `mlflow server --workers 1` on SQLite,
job execution off, clients over HTTP), `postgres` (direct, a fresh database on the server at
$SCALELAB_BENCH_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres; skipped with a
message when nothing answers).

    .venv/bin/python benchmarks/tracking_throughput.py                      # K=8,32 x 3 backends
    .venv/bin/python benchmarks/tracking_throughput.py --k 8 --backends sqlite,server
    .venv/bin/python benchmarks/tracking_throughput.py --smoke-test         # K=2, 200 points
    .venv/bin/python benchmarks/tracking_throughput.py --backends server --server-pool-size 40

Exit status 1 when any point was lost or any process raised. The server runs with scalelab's
settings (orchestrator.cli.SERVER_ENV: pool 20 + 20 overflow). With MLflow's default pool
(`--server-pool-size 0`: 5 + 10 overflow) K=32 concurrent runs exhaust it and the server answers
BAD_REQUEST ("QueuePool limit ... reached"); MlflowSink retries that as transient.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_URL = os.environ.get("SCALELAB_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
METRIC = "loss"


# --------------------------------------------------------------------------- one fake run


def fake_run(uri: str, run_id: str, points: int, flush_every: int, ready, go, results) -> None:
    try:
        from trainer.sinks import MlflowSink

        sink = MlflowSink(uri, run_id)
        ready.put(run_id)
        go.wait()
        t0 = time.perf_counter()
        for step in range(1, points + 1):
            sink.log_metrics({METRIC: 1.0 / step}, step)
            if step % flush_every == 0:
                sink.flush()  # the trainer flushes at every checkpoint
        sink.close()
        results.put((run_id, sink.points_sent, time.perf_counter() - t0, None))
    except BaseException:  # noqa: BLE001 - counted as an error
        results.put((run_id, 0, 0.0, traceback.format_exc()[-2000:]))


# --------------------------------------------------------------------------- backends


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_reachable() -> bool:
    from orchestrator.store.tracking import tcp_reachable

    u = urlparse(PG_URL)
    return tcp_reachable(u.hostname, u.port or 5432, timeout=2)


class Backend:
    """Context manager yielding a tracking URI for one measurement."""

    def __init__(self, kind: str, workdir: Path, pool_size: int | None = None):
        self.kind, self.workdir, self.pool_size = kind, workdir, pool_size
        self.proc: subprocess.Popen | None = None
        self.db: str | None = None

    def __enter__(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.workdir / 'mlflow.db'}"
        if self.kind == "server":
            port = free_port()
            from orchestrator.cli import SERVER_ENV  # what `scalelab ui` and compose use

            env = dict(os.environ, **SERVER_ENV)
            if self.pool_size == 0:  # MLflow's own default pool (5 + 10 overflow)
                env.pop("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE")
                env.pop("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW")
            elif self.pool_size:
                env.update(
                    MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=str(self.pool_size),
                    MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW="0",
                )
            mlflow = str(Path(sys.executable).parent / "mlflow")
            self.proc = subprocess.Popen(
                [
                    mlflow,
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{self.workdir / 'server.db'}",
                    "--default-artifact-root",
                    (self.workdir / "artifacts").as_uri(),
                ],
                env=env,
                stdout=open(self.workdir / "server.log", "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            uri = f"http://127.0.0.1:{port}"
            deadline = time.time() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                        r.read()
                    return uri
                except Exception:
                    if self.proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(
                            "mlflow server did not come up: "
                            + (self.workdir / "server.log").read_text()[-2000:]
                        ) from None
                    time.sleep(0.3)
        if self.kind == "postgres":
            import sqlalchemy as sa

            self.db = f"scalelab_bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(
                PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{self.db}"'))
            admin.dispose()
            return f"{PG_URL.rsplit('/', 1)[0]}/{self.db}"
        raise ValueError(self.kind)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # our own server's process group
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        if self.db:
            import sqlalchemy as sa

            admin = sa.create_engine(
                PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as c:
                c.execute(
                    sa.text(
                        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.db}'"
                    )
                )
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.db}"'))
            admin.dispose()


# --------------------------------------------------------------------------- one measurement


def measure(ctx, uri: str, workdir: Path, kind: str, k: int, points: int, flush_every: int) -> dict:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)  # the driver creates (and migrates) everything
    exp = c.create_experiment(
        f"tput-{kind}-{k}-{uuid.uuid4().hex[:6]}", artifact_location=(workdir / "artifacts").as_uri()
    )
    run_ids = [c.create_run(exp, run_name=f"fake-{i}").info.run_id for i in range(k)]
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=fake_run, args=(uri, rid, points, flush_every, ready, go, results))
        for rid in run_ids
    ]
    t_spawn = time.perf_counter()
    for p in procs:
        p.start()
    for _ in procs:  # every process imported MLflow: start together
        ready.get(timeout=300)
    t_ready = time.perf_counter() - t_spawn
    t0 = time.perf_counter()
    go.set()
    got = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=30)
    errors = [e for (_, _, _, e) in got if e]
    sent = sum(n for (_, n, _, _) in got)
    stored = sum(len(c.get_metric_history(rid, METRIC)) for rid in run_ids)
    per_run = sorted(t for (_, _, t, e) in got if not e)
    return {
        "backend": kind,
        "k": k,
        "points_sent": sent,
        "expected": k * points,
        "stored": stored,
        "lost": k * points - stored,
        "errors": len(errors),
        "wall_s": wall,
        "points_per_s": sent / wall if wall else 0.0,
        "run_median_s": per_run[len(per_run) // 2] if per_run else float("nan"),
        "startup_s": t_ready,
        "first_error": errors[0] if errors else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", default="8,32", help="concurrent runs, comma-separated (default 8,32)")
    ap.add_argument(
        "--backends",
        default="sqlite,server,postgres",
        help="comma-separated: sqlite, server, postgres (default: all three)",
    )
    ap.add_argument("--points", type=int, default=2000, help="metric points per run (default 2000)")
    ap.add_argument("--flush-every", type=int, default=200, help="points between flushes (default 200)")
    ap.add_argument(
        "--server-pool-size",
        type=int,
        default=None,
        help="the server's SQLAlchemy pool size (overflow 0); default: scalelab's "
        "server settings (20 + 20 overflow); 0: MLflow's own (5 + 10 overflow)",
    )
    ap.add_argument("--smoke-test", action="store_true", help="K=2, 200 points: a quick check")
    a = ap.parse_args(argv)
    ks = [2] if a.smoke_test else [int(x) for x in a.k.split(",")]
    points = 200 if a.smoke_test else a.points
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "server", "postgres"):
            ap.error(f"unknown backend {b!r}")

    ctx = mp.get_context("forkserver")  # clean children (no inherited DB engines) that
    ctx.set_forkserver_preload(["mlflow.tracking", "trainer.sinks"])  # start fast
    print(f"{points} points/run, flush every {a.flush_every}; {os.cpu_count()} CPUs")
    print(
        f"{'backend':9} {'K':>3} {'points/s':>10} {'wall s':>7} {'run med s':>9} "
        f"{'sent':>7} {'stored':>7} {'lost':>5} {'errors':>6}"
    )
    bad = 0
    for kind in backends:
        if kind == "postgres" and not pg_reachable():
            print(f"postgres: skipped, no PostgreSQL server answers at {PG_URL} (set SCALELAB_BENCH_PG_URL)")
            continue
        workdir = Path(tempfile.mkdtemp(prefix=f"tput-{kind}-"))
        try:
            with Backend(
                kind, workdir, a.server_pool_size
            ) as uri:  # one store (server) per backend, fresh runs per K
                for k in ks:
                    r = measure(ctx, uri, workdir, kind, k, points, a.flush_every)
                    print(
                        f"{r['backend']:9} {r['k']:3d} {r['points_per_s']:10.0f} {r['wall_s']:7.2f} "
                        f"{r['run_median_s']:9.2f} {r['points_sent']:7d} {r['stored']:7d} "
                        f"{r['lost']:5d} {r['errors']:6d}",
                        flush=True,
                    )
                    if r["first_error"]:
                        print("  first error:", r["first_error"].strip().splitlines()[-1])
                    bad += r["lost"] != 0 or r["errors"] != 0
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
