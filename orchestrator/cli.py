"""`scalelab`: plan, run, status, cancel, ui, fit, report.

Exit status: 0 success (every run reached a result: finished or diverged), 1 some run failed
after its retries (or the study was cancelled), 2 bad input (nothing scheduled, nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Sequence

from .config import StudyConfig, StudyError, load_study
from .tracking import Settings

EXIT_BAD_INPUT = 2
ASSUMED_CPU_FLOPS = 1.0e10         # FLOP/s per CPU core for tiny models (measured 1-2e10 here), when nothing was measured
# The MLflow server's settings wherever scalelab starts one: no job runner (idle CPU, memory),
# and a DB pool that 32+ concurrent runs do not exhaust (MLflow's default 5 + 10 overflow lost
# points at K=32 in benchmarks/tracking_throughput.py).
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
              "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "20", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "20"}
ASSUMED_GPU_PEAK, ASSUMED_MFU = 989e12, 0.35   # H100 bf16 dense peak, a typical achieved MFU


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///$SCALELAB_HOME/mlflow.db)")
    p.add_argument("--ledger-uri", help="run ledger DB (default: $SCALELAB_LEDGER_URI, else beside "
                                        "the MLflow store)")
    p.add_argument("--home", help="directory for the embedded defaults (default: $SCALELAB_HOME "
                                  "or ./scalelab-store)")


def _settings(a: argparse.Namespace) -> Settings:
    return Settings.resolve(tracking_uri=getattr(a, "tracking_uri", None),
                            ledger_uri=getattr(a, "ledger_uri", None),
                            checkpoint_dir=getattr(a, "checkpoint_dir", None),
                            home=getattr(a, "home", None))


def redact(uri: str) -> str:
    """A URI fit to print: a password in it (postgresql://user:PASSWORD@host/db) is masked."""
    from urllib.parse import urlsplit, urlunsplit
    u = urlsplit(uri)
    if u.password:
        netloc = u.netloc.replace(f":{u.password}@", ":***@", 1)
        return urlunsplit(u._replace(netloc=netloc))
    return uri


def _read_ledger(settings: Settings, study: str):
    """Ledger rows by key, without creating anything (plan and status only read)."""
    from .ledger import Ledger
    if settings.ledger_uri.startswith("sqlite:///") and \
            not Path(settings.ledger_uri[len("sqlite:///"):]).exists():
        return {}, None
    ledger = Ledger(settings.ledger_uri, create=False)
    try:
        rows = {r.run_key: r for r in ledger.rows(study)}
        measured = [r.flops_per_s for r in ledger.rows() if r.state == "finished" and r.flops_per_s]
        return rows, (statistics.median(measured) if measured else None)
    except Exception:              # tables not created yet
        return {}, None
    finally:
        ledger.dispose()


# --------------------------------------------------------------------------- plan / status

def cmd_plan(a: argparse.Namespace) -> int:
    from .grid import expand
    cfg = load_study(a.study)
    planned = expand(cfg)
    settings = _settings(a)
    rows, measured = _read_ledger(settings, cfg.study)
    if measured:
        rate, how = measured, "measured"
    elif cfg.resources.num_gpus:
        rate, how = ASSUMED_GPU_PEAK * ASSUMED_MFU * cfg.resources.num_gpus, "assumed MFU 35%"
    else:
        rate, how = ASSUMED_CPU_FLOPS * cfg.resources.num_cpus, "assumed"
    out = []
    for p in planned:
        m = p.spec.model
        row = rows.get(p.key)
        out.append({"run_key": p.key, "label": p.label, "n_layer": m.n_layer, "d_model": m.d_model,
                    "n_head": m.n_head, "n_params": p.n_params, "n_params_active": p.n_params_active,
                    "n_params_nonembedding": p.n_params_nonembedding, "tokens": p.tokens,
                    "tokens_per_param": p.tokens / p.n_params_active, "flops": p.flops,
                    "flops_6n": p.flops_6n, "experts": m.experts, "top_k": m.top_k,
                    "seed": p.spec.seed, "trunk_key": p.trunk_key,
                    "est_wall_time_s": p.flops / rate,
                    "status": row.state if row else "pending"})
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"study {cfg.study}: {len(out)} runs; wall time {how} at {rate:.3g} FLOP/s per run")
    hdr = f"{'run_key':16} {'shape':18} {'N total':>9} {'N non-emb':>9} {'N active':>9} " \
          f"{'tokens':>9} {'D/N':>7} {'FLOPs':>9} {'est time':>9}  status"
    print(hdr)
    for r in out:
        print(f"{r['run_key']:16} {r['label']:18} {r['n_params']:9.3g} {r['n_params_nonembedding']:9.3g} "
              f"{r['n_params_active']:9.3g} {r['tokens']:9.3g} {r['tokens_per_param']:7.1f} "
              f"{r['flops']:9.3g} {r['est_wall_time_s']:8.0f}s  {r['status']}")
    total = sum(r["flops"] for r in out)
    done = sum(1 for r in out if r["status"] in ("finished", "diverged"))
    print(f"total: {total:.3g} FLOPs ({total / 8.64e19:.3g} PF-days), "
          f"{sum(r['est_wall_time_s'] for r in out):.0f} s of run time, {done}/{len(out)} done")
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from .grid import expand
    from .progress import summarize
    cfg = load_study(a.study)
    planned = expand(cfg)
    rows, _ = _read_ledger(_settings(a), cfg.study)
    summary = summarize(planned, rows, 0.0, 0.0)
    runs = []
    for p in planned:
        r = rows.get(p.key)
        runs.append({"run_key": p.key, "label": p.label, "n_params": p.n_params, "tokens": p.tokens,
                     "state": r.state if r else "pending", "attempts": r.attempts if r else 0,
                     "tokens_done": (r.tokens_done or 0) if r else 0,
                     "val_loss": r.val_loss if r else None,
                     "mlflow_run_id": r.mlflow_run_id if r else None,
                     "error": (r.error or "").strip().splitlines()[-1:] if r and r.error else None})
    if a.json:
        print(json.dumps({"study": cfg.study, "states": summary["states"],
                          "flops_done": summary["flops_done"], "flops_total": summary["flops_total"],
                          "runs": runs}, indent=1))
        return 0
    states = " ".join(f"{k}={v}" for k, v in sorted(summary["states"].items()))
    print(f"study {cfg.study}: {states}; FLOPs {summary['flops_done']:.3g}/{summary['flops_total']:.3g}")
    for r in runs:
        vl = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else ""
        err = f"  {r['error'][0][:100]}" if r["error"] else ""
        print(f"{r['run_key']:16} {r['label']:18} {r['tokens']:9.3g} {r['state']:9} "
              f"attempts={r['attempts']} {vl}{err}")
    return 0


# --------------------------------------------------------------------------- run / cancel / ui

def cmd_run(a: argparse.Namespace) -> int:
    from .scheduler import run_study
    cfg = load_study(a.study)
    settings = _settings(a)
    address = a.address or os.environ.get("RAY_ADDRESS") or None
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise StudyError("--max-concurrent", "must be >= 1")
    outcome = run_study(cfg, settings, address=address, max_concurrent=a.max_concurrent,
                        show_progress=not a.no_progress)
    for m in outcome.messages:
        print(m)
    counts: dict[str, int] = {}
    for s in outcome.states.values():
        counts[s] = counts.get(s, 0) + 1
    print(f"study {cfg.study}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    uri = redact(settings.tracking_uri)
    print(f"MLflow store: {uri} (experiment {cfg.study!r}, id "
          f"{outcome.experiment_id}); browse with: scalelab ui --tracking-uri {uri}")
    print(f"ledger: {redact(settings.ledger_uri)}; checkpoints: {settings.checkpoint_root}")
    return outcome.exit_code


def cmd_cancel(a: argparse.Namespace) -> int:
    from .ledger import Ledger
    cfg = load_study(a.study)
    settings = _settings(a)
    rows, _ = _read_ledger(settings, cfg.study)
    if not rows:
        print(f"study {cfg.study} has no runs in {settings.ledger_uri}; nothing to cancel")
        return 0
    ledger = Ledger(settings.ledger_uri)
    try:
        ledger.request_cancel(cfg.study, "now" if a.now else "graceful")
    finally:
        ledger.dispose()
    print(f"cancel ({'now' if a.now else 'graceful'}) requested for {cfg.study}: "
          + ("running runs checkpoint and stop at their next checkpoint, marked killed"
             if a.now else "no new runs start; running ones finish"))
    return 0


def cmd_ui(a: argparse.Namespace) -> int:
    settings = _settings(a)
    uri = settings.tracking_uri
    if uri.startswith("http"):
        raise StudyError("--tracking-uri", f"{uri} is already a server; open it in a browser")
    env = dict(os.environ, **SERVER_ENV)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", a.host, "--port", str(a.port), "--workers", "1",
           "--default-artifact-root", settings.artifact_root]
    print(f"MLflow UI on http://{a.host}:{a.port} for {uri} (Ctrl-C to stop)", flush=True)
    os.execve(sys.executable, cmd, env)      # argument list, no shell: nothing is interpolated
    return 0


# --------------------------------------------------------------------------- fit / report

def cmd_fit(a: argparse.Namespace) -> int:
    from analysis.cli import run_fit
    if a.experiment and not a.tracking_uri:
        a.tracking_uri = _settings(a).tracking_uri
    return run_fit(a)


def cmd_report(a: argparse.Namespace) -> int:
    from analysis.cli import run_report
    settings = _settings(a)
    true_entropy = None
    if a.study:
        cfg: StudyConfig = load_study(a.study)
        experiment = cfg.study
        if cfg.data.source in ("markov", "zipf"):
            from trainer import true_entropy as entropy
            true_entropy = entropy(cfg.data)
    elif a.experiment:
        experiment = a.experiment
    else:
        raise StudyError("report", "give a study file or --experiment NAME")
    budgets = _budgets(a.budgets) if a.budgets else None
    return run_report(experiment, settings.tracking_uri, a.out, true_entropy=true_entropy,
                      budgets=budgets, log_to_mlflow=not a.no_mlflow)


def _budgets(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StudyError("--budgets", f"{text!r} is not a comma-separated list of FLOP counts, "
                                      "e.g. 1e21,1e24") from None
    if not values or any(not (v > 0) for v in values):
        raise StudyError("--budgets", "budgets must be positive FLOP counts, e.g. 1e21,1e24")
    return values


# --------------------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scalelab", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="list every run of a study with its accounting")
    p.add_argument("study")
    p.add_argument("--json", action="store_true")
    _store_args(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="execute a study on Ray and block until it ends")
    p.add_argument("study")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else an "
                                     "embedded local Ray)")
    p.add_argument("--max-concurrent", type=int, help="at most K runs at once")
    p.add_argument("--checkpoint-dir", help="checkpoint root (default: $SCALELAB_CHECKPOINT_DIR, "
                                            "else $SCALELAB_HOME/checkpoints); shared storage on "
                                            "a multi-node cluster")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    _store_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="state of every run of a study")
    p.add_argument("study")
    p.add_argument("--json", action="store_true")
    _store_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="stop starting runs (--now: also stop running ones)")
    p.add_argument("study")
    p.add_argument("--now", action="store_true")
    _store_args(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("ui", help="start the MLflow UI on the store, bound to 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    _store_args(p)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("fit", help="fit a scaling law to an experiment or a CSV/Parquet file")
    from analysis.cli import add_fit_arguments
    add_fit_arguments(p)
    p.add_argument("--home", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("report", help="write the HTML + Markdown report of a study")
    p.add_argument("study", nargs="?", help="study YAML (or give --experiment)")
    p.add_argument("--experiment")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--budgets", help="FLOP budgets for the compute-optimal table, e.g. 1e15,1e18")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    _store_args(p)
    p.set_defaults(func=cmd_report)
    return ap


def load_dotenv_file(path: str = ".env") -> None:
    """Secrets (RAY_AUTH_TOKEN, database passwords) come from the environment or from a `.env`
    file in the working directory; variables already set win. Never logged anywhere."""
    if Path(path).is_file():
        from dotenv import load_dotenv
        load_dotenv(path, override=False)


def main(argv: Sequence[str] | None = None) -> int:
    load_dotenv_file()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: run `scalelab run` again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
