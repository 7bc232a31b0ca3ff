"""`scalelab`: plan, run, status, cancel, ui, fit, report, suggest, verify.

Exit status: 0 success (every run reached a result: finished or diverged), 1 some run failed
after its retries (or the study was cancelled), 2 bad input (nothing scheduled, nothing written).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.redact import redact_text

from .config import StudyConfig, StudyError, load_study
from .states import RunState
from .tracking import Settings

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
# The MLflow server's settings wherever scalelab starts one: no job runner (idle CPU, memory),
# and a DB pool that 32+ concurrent runs do not exhaust (MLflow's default 5 + 10 overflow lost
# points at K=32 in benchmarks/tracking_throughput.py).
SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "20",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "20",
}


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///$SCALELAB_HOME/mlflow.db)",
    )
    p.add_argument(
        "--ledger-uri", help="run ledger DB (default: $SCALELAB_LEDGER_URI, else beside the MLflow store)"
    )
    p.add_argument(
        "--home", help="directory for the embedded defaults (default: $SCALELAB_HOME or ./scalelab-store)"
    )


def _settings(a: argparse.Namespace) -> Settings:
    return Settings.resolve(
        tracking_uri=getattr(a, "tracking_uri", None),
        ledger_uri=getattr(a, "ledger_uri", None),
        checkpoint_dir=getattr(a, "checkpoint_dir", None),
        home=getattr(a, "home", None),
    )


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
    if (
        settings.ledger_uri.startswith("sqlite:///")
        and not Path(settings.ledger_uri[len("sqlite:///") :]).exists()
    ):
        return {}, None
    from .ledger import Ledger  # SQLAlchemy: only when there is a ledger to read

    ledger = None
    try:
        ledger = Ledger(settings.ledger_uri, create=False)
        import sqlalchemy as sa

        if not sa.inspect(ledger.engine).has_table("scalelab_runs"):  # not created yet
            return {}, None
        rows = {r.run_key: r for r in ledger.rows(study)}
        measured = [r.flops_per_s for r in ledger.rows() if r.state == RunState.FINISHED and r.flops_per_s]
        return rows, (statistics.median(measured) if measured else None)
    except Exception as e:  # noqa: BLE001 - unreadable: say so, never show every run as pending
        reason = redact_text(str(e).splitlines()[0] if str(e) else "")[:300]
        raise LedgerUnreadable(
            f"cannot read the ledger {redact(settings.ledger_uri)}: "
            f"{type(e).__name__}: {reason}; fix its permissions or restore "
            "it (--ledger-uri / SCALELAB_LEDGER_URI)"
        ) from None
    finally:
        if ledger is not None:
            ledger.dispose()


class LedgerUnreadable(Exception):
    """The ledger exists but cannot be read: exit 1 with the reason."""


def _study_view(settings: Settings, cfg: StudyConfig, rows: dict) -> dict:
    """Rows as a reader should see them (runs of a dead driver: `interrupted`), after a warning
    on stderr when the study file's recipe differs from the one the study ran with."""
    from .bookkeeping import inspect_study

    view = inspect_study(settings.ledger_uri, cfg, rows)
    if view.warning:
        print(f"warning: {view.warning}", file=sys.stderr)
    return view.rows


# --------------------------------------------------------------------------- plan / status


def _plan_rate(cfg: StudyConfig, rows: dict) -> tuple[float, str]:
    """FLOP/s per run: measured on this study's finished runs of its device kind, else assumed."""
    from .estimate import ASSUMED_CPU_FLOPS, assumed_rate, device_kind, measured_rate

    kind = device_kind(cfg.resources.num_gpus, cfg.train.device)
    rate, n = measured_rate(rows.values(), kind)
    if rate:
        return rate, f"measured on {n} finished {kind} run(s) of this study"
    rate = assumed_rate(kind, cfg.resources.num_cpus, cfg.resources.num_gpus)
    how = "assumed MFU 35%" if kind == "cuda" else f"assumed {ASSUMED_CPU_FLOPS:.0e} FLOP/s per core"
    return rate, f"{how}; nothing of this study measured on {kind} yet"


def _plan_slots(cfg: StudyConfig, max_concurrent: int | None) -> tuple[int, str]:
    """Runs at once on the embedded local Ray (a cluster may hold more: pass --max-concurrent)."""
    if cfg.resources.num_gpus:
        local, why = 1, "1 local GPU assumed"
    else:
        cpus = os.cpu_count() or 1
        local = max(1, int(cpus // cfg.resources.num_cpus))
        why = f"{cpus} local CPUs / resources.num_cpus {cfg.resources.num_cpus:g}"
    if max_concurrent:
        return min(local, max_concurrent), f"--max-concurrent {max_concurrent}, {why}"
    return local, why


def cmd_plan(a: argparse.Namespace) -> int:
    from .estimate import study_wall_time, trained_flops
    from .grid import expand, work_items

    cfg = load_study(a.study)
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise StudyError("--max-concurrent", "must be >= 1")
    planned = expand(cfg)
    items = work_items(planned)
    from .hostinfo import available_memory_bytes
    from .memory import check_memory

    check_memory(cfg, planned, None if os.environ.get("RAY_ADDRESS") else available_memory_bytes())
    settings = _settings(a)
    rows, _ = _read_ledger(settings, cfg.study)
    rows = _study_view(settings, cfg, rows)
    rate, how = _plan_rate(cfg, rows)
    slots, slots_why = _plan_slots(cfg, a.max_concurrent)
    trained = trained_flops(items)
    out = [_plan_row(p, rows.get(p.key), trained[p.key], rate) for p in planned]
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"study {cfg.study}: {len(out)} runs; rate {rate:.3g} FLOP/s per run ({how})")
    print(
        f"{'run_key':16} {'shape':18} {'N total':>9} {'N non-emb':>9} {'N active':>9} "
        f"{'tokens':>9} {'D/N':>7} {'FLOPs':>9} {'trained':>9} {'est time':>9}  status"
    )
    for r in out:
        print(
            f"{r['run_key']:16} {r['label']:18} {r['n_params']:9.3g} {r['n_params_nonembedding']:9.3g} "
            f"{r['n_params_active']:9.3g} {r['tokens']:9.3g} {r['tokens_per_param']:7.1f} "
            f"{r['flops']:9.3g} {r['flops_trained']:9.3g} {r['est_wall_time_s']:8.0f}s  {r['status']}"
        )
    done = {r["run_key"] for r in out if RunState(r["status"]).is_result}
    total, spent = sum(r["flops"] for r in out), sum(r["flops_trained"] for r in out)
    wall = study_wall_time(planned, items, rate, slots, done)
    shared = " (wsd branches share their trunk)" if cfg.train.schedule == "wsd" else ""
    print(
        f"total: {total:.3g} FLOPs of the points, {spent:.3g} FLOPs trained{shared} "
        f"({spent / 8.64e19:.3g} PF-days); {sum(r['est_wall_time_s'] for r in out):.0f} s of "
        f"run time; wall time ~{_fmt_duration(wall)} left at {slots} run(s) at once "
        f"({slots_why}); {len(done)}/{len(out)} done"
    )
    return 0


def _plan_row(p, row, flops_trained: float, rate: float) -> dict:
    from .memory import run_memory

    m = p.spec.model
    return {
        "run_key": p.key,
        "label": p.label,
        "n_layer": m.n_layer,
        "d_model": m.d_model,
        "n_head": m.n_head,
        "n_params": p.n_params,
        "n_params_active": p.n_params_active,
        "n_params_nonembedding": p.n_params_nonembedding,
        "tokens": p.tokens,
        "tokens_per_param": p.tokens / p.n_params_active,
        "flops": p.flops,
        "flops_trained": flops_trained,
        "flops_6n": p.flops_6n,
        "experts": m.experts,
        "top_k": m.top_k,
        "seed": p.spec.seed,
        "trunk_key": p.trunk_key,
        "budget": p.budget,
        "est_wall_time_s": flops_trained / rate,
        "est_memory_bytes": sum(run_memory(p).values()),
        "status": RunState.of(row.state if row else None).value,
    }


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def cmd_status(a: argparse.Namespace) -> int:
    from .grid import expand
    from .progress import summarize

    cfg = load_study(a.study)
    planned = expand(cfg)
    settings = _settings(a)
    rows, _ = _read_ledger(settings, cfg.study)
    rows = _study_view(settings, cfg, rows)
    summary = summarize(planned, rows, 0.0, 0.0)
    runs: list[dict[str, Any]] = []
    for p in planned:
        r = rows.get(p.key)
        runs.append(
            {
                "run_key": p.key,
                "label": p.label,
                "n_params": p.n_params,
                "tokens": p.tokens,
                "state": RunState.of(r.state if r else None).value,
                "attempts": r.attempts if r else 0,
                "tokens_done": (r.tokens_done or 0) if r else 0,
                "val_loss": r.val_loss if r else None,
                "mlflow_run_id": r.mlflow_run_id if r else None,
                "error": redact_text(r.error or "").strip().splitlines()[-1:] if r and r.error else None,
            }
        )
    if a.json:
        print(
            json.dumps(
                {
                    "study": cfg.study,
                    "states": summary["states"],
                    "flops_done": summary["flops_done"],
                    "flops_total": summary["flops_total"],
                    "runs": runs,
                },
                indent=1,
            )
        )
        return 0
    states = " ".join(f"{k}={v}" for k, v in sorted(summary["states"].items()))
    print(f"study {cfg.study}: {states}; FLOPs {summary['flops_done']:.3g}/{summary['flops_total']:.3g}")
    exp_id = _experiment_id(settings, cfg.study)
    if exp_id:
        from .mlflow_view import view_hint

        print(view_hint(settings.tracking_uri, exp_id, _ui_command(a, redact(settings.tracking_uri))))
    for r in runs:
        vl = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else ""
        err = f"  {r['error'][0][:100]}" if r["error"] else ""
        print(
            f"{r['run_key']:16} {r['label']:18} {r['tokens']:9.3g} {r['state']:9} "
            f"attempts={r['attempts']} {vl}{err}"
        )
    return 0


# --------------------------------------------------------------------------- run / cancel / ui


def cmd_run(a: argparse.Namespace) -> int:
    from .scheduler import run_study

    cfg = load_study(a.study)
    settings = _settings(a)
    address = a.address or os.environ.get("RAY_ADDRESS") or None
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise StudyError("--max-concurrent", "must be >= 1")
    quiet_logs()
    print(
        f"{cfg.study}: starting {'Ray at ' + address if address else 'a local Ray'} and its "
        "workers (the first progress appears once a worker has loaded torch) ...",
        flush=True,
    )
    if a.adaptive:
        return cmd_run_adaptive(a, cfg, settings, address)
    try:
        outcome = run_study(
            cfg,
            settings,
            address=address,
            max_concurrent=a.max_concurrent,
            show_progress=not a.no_progress,
            reuse=not a.no_reuse,
        )
    except Exception as e:
        if isinstance(e, StudyError) or not ray_died(e):
            raise
        print(
            f"error: Ray stopped or failed under the study ({type(e).__name__}: "
            f"{redact_text(str(e)).strip().splitlines()[0][:160] if str(e).strip() else ''}); "
            "run the same `scalelab run` again to resume (finished runs are kept, interrupted "
            "ones resume from their checkpoints)",
            file=sys.stderr,
        )
        return 1
    for m in outcome.messages:
        print(redact_text(m))
    counts: dict[str, int] = {}
    for s in outcome.states.values():
        counts[s] = counts.get(s, 0) + 1
    print(f"study {cfg.study}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    uri = redact(settings.tracking_uri)
    print(
        f"MLflow store: {uri} (experiment {cfg.study!r}, id "
        f"{outcome.experiment_id}); browse with: scalelab ui --tracking-uri {uri}"
    )
    print(f"ledger: {redact(settings.ledger_uri)}; checkpoints: {settings.checkpoint_root}")
    if outcome.experiment_id:
        from .mlflow_view import view_hint

        print(view_hint(settings.tracking_uri, outcome.experiment_id, _ui_command(a, uri)))
    return outcome.exit_code


def ray_died(error: BaseException) -> bool:
    """An error raised because the Ray cluster (GCS, raylet, the embedded Ray) went away."""
    e: BaseException | None = error
    while e is not None:
        if type(e).__module__.startswith("ray") or "raylet" in str(e) or "GCS" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _ui_command(a: argparse.Namespace, shown_uri: str) -> str:
    """The `scalelab ui` command for the store this command used."""
    explicit = getattr(a, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
    return (
        f"scalelab ui --tracking-uri {shown_uri}" if explicit or getattr(a, "home", None) else "scalelab ui"
    )


def _experiment_id(settings: Settings, study: str) -> str | None:
    """The study's MLflow experiment id as the ledger recorded it (None before any run)."""
    if (
        settings.ledger_uri.startswith("sqlite:///")
        and not Path(settings.ledger_uri[len("sqlite:///") :]).exists()
    ):
        return None
    from .ledger import Ledger

    ledger = Ledger(settings.ledger_uri, create=False)
    try:
        return (ledger.study(study) or {}).get("experiment_id")
    except Exception as e:  # noqa: BLE001 - no tables yet: no experiment to show
        log.debug("no experiment id for %s in the ledger: %s", study, e)
        return None
    finally:
        ledger.dispose()


def quiet_logs() -> None:
    """The terminal shows scalelab's lines, not Ray's or MLflow's INFO logs (warnings stay).
    MLflow sets its own logger's level from MLFLOW_LOGGING_LEVEL when it is imported (later,
    possibly in a worker): the environment is the only way in; setdefault keeps a user's choice."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))


def cmd_run_adaptive(a: argparse.Namespace, cfg: StudyConfig, settings: Settings, address: str | None) -> int:
    from .adaptive import AdaptiveArgs, run_adaptive

    if a.target_flops is None or a.until_ci is None:
        raise StudyError(
            "--target-flops" if a.target_flops is None else "--until-ci",
            "required with --adaptive, e.g. --target-flops 1e15 --until-ci 0.25",
        )
    args = AdaptiveArgs(
        target_flops=a.target_flops,
        until_ci=a.until_ci,
        max_flops=a.max_flops,
        objective=a.objective,
        max_runs=a.max_runs,
        gamma=a.gamma,
        max_rounds=a.max_rounds,
    )
    res = run_adaptive(
        cfg, settings, args, address=address, max_concurrent=a.max_concurrent, show_progress=not a.no_progress
    )
    for m in res.outcome.messages:
        print(redact_text(m))
    what = "N_opt" if a.objective == "log_n_opt" else "loss"
    if res.ci95:
        print(
            f"{what} at C = {a.target_flops:.3g}: {res.value:.4g}, 95% interval "
            f"[{res.ci95[0]:.4g}, {res.ci95[1]:.4g}] (±{res.relative_halfwidth:.1%})"
        )
    print(
        f"study {cfg.study}: {len(res.rounds)} adaptive round(s), {res.flops_spent:.3g} FLOPs "
        f"spent; {res.reason or 'stopped: a run did not finish'}"
    )
    return res.outcome.exit_code


def cmd_suggest(a: argparse.Namespace) -> int:
    from .adaptive import load_rounds, round_keys
    from .suggest import print_suggestion, suggest, with_runs

    cfg = load_study(a.study)
    settings = _settings(a)
    rounds = load_rounds(settings, cfg.study)
    full = with_runs(cfg, [r for runs in rounds for r in runs])
    s = suggest(
        full,
        settings.tracking_uri,
        target_flops=a.target_flops,
        objective=a.objective,
        max_runs=a.max_runs,
        max_flops=a.max_flops,
        gamma=a.gamma,
        planned_keys=round_keys(cfg, rounds),
        span_of=cfg,
    )
    print_suggestion(s, a.json)
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    from .verify import print_verify, run_verify

    cfg = load_study(a.study)
    settings = _settings(a)
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise StudyError("--max-concurrent", "must be >= 1")
    quiet_logs()
    address = a.address or os.environ.get("RAY_ADDRESS") or None
    v = run_verify(
        cfg,
        settings,
        a.budget,
        a.points,
        address=address,
        max_concurrent=a.max_concurrent,
        show_progress=not (a.no_progress or a.json),
    )
    print_verify(v, a.json)
    return v.exit_code


def _planner_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--target-flops",
        type=float,
        required=required,
        help="the budget C the answer is for (above the study's largest run)",
    )
    p.add_argument(
        "--max-flops",
        type=float,
        help="FLOPs budget F (suggest: for the proposed runs; --adaptive: for the whole study)",
    )
    p.add_argument("--max-runs", type=int, default=4, help="runs proposed (per round), default 4")
    p.add_argument(
        "--objective",
        choices=("log_n_opt", "loss"),
        default="log_n_opt",
        help="the target: log N_opt at C (default) or the predicted loss at C",
    )
    p.add_argument(
        "--gamma",
        type=float,
        default=0.4,
        help="cost discount: score = variance reduction / FLOPs^gamma (default 0.4)",
    )


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
    print(
        f"cancel ({'now' if a.now else 'graceful'}) requested for {cfg.study}: "
        + (
            "running runs checkpoint and stop at their next checkpoint, marked killed"
            if a.now
            else "no new runs start; running ones finish"
        )
    )
    return 0


def cmd_ui(a: argparse.Namespace) -> int:
    settings = _settings(a)
    uri = settings.tracking_uri
    if uri.startswith("http"):
        raise StudyError("--tracking-uri", f"{uri} is already a server; open it in a browser")
    from .tracking import store_exists

    if not store_exists(uri):
        raise StudyError(
            "--tracking-uri",
            f"no MLflow store at {redact(uri)} (run `scalelab run "
            "STUDY.yaml` first, or point --home / --tracking-uri "
            "at an existing store)",
        )
    _check_port_free(a.host, a.port)
    env = dict(os.environ, **SERVER_ENV)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        a.host,
        "--port",
        str(a.port),
        "--workers",
        "1",
        "--default-artifact-root",
        settings.artifact_root,
    ]
    base = f"http://{a.host}:{a.port}"
    print(f"MLflow UI on {base} for {redact(uri)} (Ctrl-C to stop)", flush=True)
    for name, exp_id in _scalelab_experiments(uri):
        from .mlflow_view import view_url

        print(f"  {name}: {view_url(base, exp_id)}", flush=True)
    os.execve(sys.executable, cmd, env)  # argument list, no shell: nothing is interpolated
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Exit 2 before starting a server whose port another process holds (its URL would open
    the other server)."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a listener still blocks it
        try:
            s.bind((host, port))
        except OSError:
            raise StudyError(
                "--port",
                f"port {port} on {host} is already in use (another "
                f"`scalelab ui` or server?); stop it or choose another "
                f"port, e.g. --port {port + 1}",
            ) from None


def _scalelab_experiments(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's experiments that carry the scaling-law view; [] if unreadable."""
    from .mlflow_view import TAG_PREFIX, VIEW_KEY

    try:
        from mlflow.tracking import MlflowClient

        exps = MlflowClient(uri).search_experiments(max_results=1000)
    except Exception as e:  # noqa: BLE001 - the server reports a broken store itself
        log.debug("could not list the experiments of %s: %s", redact(uri), e)
        return []
    return [(e.name, e.experiment_id) for e in exps if TAG_PREFIX + VIEW_KEY in e.tags]


# --------------------------------------------------------------------------- fit / report


def cmd_fit(a: argparse.Namespace) -> int:
    from analysis.cli import run_fit

    from .tracking import bounded_http_retries, check_store_readable

    if a.experiment and not a.tracking_uri:
        a.tracking_uri = _settings(a).tracking_uri
    if a.experiment:
        check_store_readable(a.tracking_uri)
    with bounded_http_retries():
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
    from .tracking import bounded_http_retries, check_store_readable

    check_store_readable(settings.tracking_uri)
    with bounded_http_retries():
        return run_report(
            experiment,
            settings.tracking_uri,
            a.out,
            true_entropy=true_entropy,
            budgets=budgets,
            log_to_mlflow=not a.no_mlflow,
            study_file=a.study,
        )


def _budgets(text: str) -> list[float]:
    """--budgets as FLOP counts (analysis.cli's parser), bad input as a StudyError."""
    from analysis.cli import parse_budgets
    from analysis.data import InputError

    try:
        return list(parse_budgets(text))
    except InputError as e:
        raise StudyError("--budgets", str(e).removeprefix(f"--budgets {text!r}: ")) from None


# --------------------------------------------------------------------------- entry point


def _command(argv: Sequence[str] | None) -> str | None:
    """The subcommand named in argv ("" when there is none), None when argv is not given."""
    if argv is None:
        return None
    rest = [a for i, a in enumerate(argv) if i == 0 or argv[i - 1] != "--log-level"]
    return next((a for a in rest if not a.startswith("-")), "")


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    """`scalelab run` and its options (grid, reuse, adaptive rounds)."""
    p = sub.add_parser("run", help="execute a study on Ray and block until it ends")
    p.add_argument("study")
    p.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)"
    )
    p.add_argument("--max-concurrent", type=int, help="at most K runs at once")
    p.add_argument(
        "--checkpoint-dir",
        help="checkpoint root (default: $SCALELAB_CHECKPOINT_DIR, "
        "else $SCALELAB_HOME/checkpoints); shared storage on "
        "a multi-node cluster",
    )
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="train every point, even those another study of the store finished "
        "(default: copy such results in, tagged scalelab.reused_from)",
    )
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="after the grid, add the runs "
        "`suggest` proposes, round by round, until --until-ci or --max-flops",
    )
    p.add_argument(
        "--until-ci",
        type=float,
        help="--adaptive: stop when the 95%% interval's half-width is below this fraction (0.25: ±25%%)",
    )
    p.add_argument("--max-rounds", type=int, help="--adaptive: at most this many new rounds")
    _planner_args(p, required=False)
    _store_args(p)
    p.set_defaults(func=cmd_run)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """`command`: the subcommand about to be parsed (None: all); only its heavy options load."""
    ap = argparse.ArgumentParser(prog="scalelab", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="list every run of a study with its accounting")
    p.add_argument("study")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--max-concurrent",
        type=int,
        help="at most K runs at once (as for `run`); the wall time estimate uses it",
    )
    _store_args(p)
    p.set_defaults(func=cmd_plan)

    _add_run_parser(sub)

    p = sub.add_parser(
        "suggest", help="propose the next runs that most narrow the compute-optimal answer per FLOP"
    )
    p.add_argument("study")
    p.add_argument("--json", action="store_true")
    _planner_args(p, required=True)
    _store_args(p)
    p.set_defaults(func=cmd_suggest)

    from .verify import add_verify_parser

    add_verify_parser(sub, _store_args, cmd_verify)

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
    if command in (None, "fit"):  # analysis (scipy, pandas) loads only for `fit`
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
    _log_level_arg(ap, default=None)
    for p in sub.choices.values():  # also after the subcommand, not overriding one before it
        _log_level_arg(p, default=argparse.SUPPRESS)
    return ap


def _log_level_arg(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--log-level",
        default=default,
        metavar="LEVEL",
        help="diagnostics shown on stderr: DEBUG, INFO (default), WARNING or ERROR "
        "(default: $SCALELAB_LOG_LEVEL)",
    )


# What `.env` may set: the secrets README and .env.example document (tokens, passwords, and the
# store URIs that embed passwords). Anything else (PYTHONPATH, SCALELAB_CHECKPOINT_DIR, ...) in an
# untrusted checkout's .env could redirect data or run code, so it is ignored.
DOTENV_KEYS = (
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_MODE",
    "POSTGRES_PASSWORD",
    "PGPASSWORD",
    "MLFLOW_TRACKING_URI",
    "SCALELAB_LEDGER_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def load_dotenv_file(path: str = ".env") -> None:
    """Secrets (DOTENV_KEYS) come from the environment or from a `.env` file in the working
    directory; variables already set win; other keys are ignored with one warning."""
    if not Path(path).is_file():
        return
    from dotenv import dotenv_values

    values = dotenv_values(path)
    ignored = sorted(k for k in values if k not in DOTENV_KEYS)
    for k in DOTENV_KEYS:  # environment: MLflow, Ray and psycopg read these from there
        value = values.get(k)
        if value is not None and k not in os.environ:
            os.environ[k] = value
    if ignored:
        print(
            f"warning: {path}: ignored {', '.join(ignored)[:300]} (a .env may set only "
            f"{', '.join(DOTENV_KEYS)}; export other settings or pass flags)",
            file=sys.stderr,
        )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
OWN_LOGGERS = ("orchestrator", "trainer", "analysis")
LIBRARY_LOGGERS = ("mlflow", "alembic", "ray", "urllib3", "matplotlib")


def configure_logging(level: str | None) -> None:
    """The one logging set-up: diagnostics go to stderr as `LEVEL logger: message`; scalelab's
    own loggers at `level` (--log-level, else $SCALELAB_LOG_LEVEL, else INFO), libraries at
    WARNING (or `level` when that is stricter). User-facing output (tables, fit text, progress)
    is printed, not logged."""
    flag = "--log-level" if level else "SCALELAB_LOG_LEVEL"
    name = (level or os.environ.get("SCALELAB_LOG_LEVEL") or "INFO").upper()
    if name not in LOG_LEVELS:
        raise StudyError(flag, f"{name!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
    value = getattr(logging, name)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for library in ("", *LIBRARY_LOGGERS):  # the root, and those that set their own level
        logging.getLogger(library).setLevel(max(value, logging.WARNING))
    for own in OWN_LOGGERS:
        logging.getLogger(own).setLevel(value)


def main(argv: Sequence[str] | None = None) -> int:
    load_dotenv_file()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command(argv)).parse_args(argv)
    try:
        configure_logging(getattr(args, "log_level", None))
        return args.func(args)
    except StudyError as e:
        print(f"error: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LedgerUnreadable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during `run` (same clean path)
        print("interrupted: run `scalelab run` again to resume", file=sys.stderr)
        sched = sys.modules.get(f"{__package__}.scheduler")
        terminated = type(e).__name__ == "Terminated" or bool(getattr(sched, "TERMINATED", None))
        return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
