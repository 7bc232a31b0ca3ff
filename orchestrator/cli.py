"""`scalelab`: plan, run, status, cancel, ui, fit, report, suggest, verify, data ingest.

Exit status: 0 success (every run reached a result: finished or diverged), 1 some run failed
after its retries (or the study was cancelled), 2 bad input (nothing scheduled, nothing written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from trainer.redact import redact_text

from . import jsonout
from .cli_planner import cmd_run_adaptive, cmd_suggest, cmd_verify, planner_args
from .corpus_cli import add_data_parser
from .envfile import STORE_KEYS, load_dotenv_file
from .logs import configure_logging, quiet_logs
from .run.ray_connection import Terminated, ray_died
from .store.states import RunState
from .store.tracking import Settings
from .study.config import StudyConfig, StudyError, load_study
from .ui_server import SERVER_ENV  # noqa: F401 - re-exported (benchmarks/tracking_throughput.py)
from .views import LedgerUnreadable, redact

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2


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


def cmd_plan(a: argparse.Namespace) -> int:
    from .study.corpus_plan import check_epochs
    from .study.estimate import study_wall_time, trained_flops
    from .study.grid import expand, work_items
    from .views import fmt_duration, plan_header, plan_line, plan_rate, plan_row, plan_slots

    cfg = load_study(a.study)
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise StudyError("--max-concurrent", "must be >= 1")
    planned = expand(cfg)
    items = work_items(planned)
    from .run.hostinfo import available_memory_bytes
    from .study.memory import check_memory

    check_memory(cfg, planned, None if os.environ.get("RAY_ADDRESS") else available_memory_bytes())
    check_epochs(cfg.data, planned)
    rows = _read_study(_settings(a), cfg).rows
    rate, how = plan_rate(cfg, rows)
    slots, slots_why = plan_slots(cfg, a.max_concurrent)
    trained = trained_flops(items)
    out = [plan_row(p, rows.get(p.key), trained[p.key], rate) for p in planned]
    if a.json:
        print(jsonout.dumps(out, indent=1))
        return 0
    print(f"study {cfg.study}: {len(out)} runs; rate {rate:.3g} FLOP/s per run ({how})")
    epochs = cfg.data.source == "corpus"  # passes over the corpus's training split
    print(plan_header(epochs))
    for r in out:
        print(plan_line(r, epochs))
    done = {r["run_key"] for r in out if RunState(r["status"]).is_result}
    total, spent = sum(r["flops"] for r in out), sum(r["flops_trained"] for r in out)
    wall = study_wall_time(planned, items, rate, slots, done)
    shared = " (wsd branches share their trunk)" if cfg.train.schedule == "wsd" else ""
    print(
        f"total: {total:.3g} FLOPs of the points, {spent:.3g} FLOPs trained{shared} "
        f"({spent / 8.64e19:.3g} PF-days); {sum(r['est_wall_time_s'] for r in out):.0f} s of "
        f"run time; wall time ~{fmt_duration(wall)} left at {slots} run(s) at once "
        f"({slots_why}); {len(done)}/{len(out)} done"
    )
    return 0


def _read_study(settings: Settings, cfg: StudyConfig):
    """The study's rows as a reader should see them, after a warning on stderr when the study
    file's recipe differs from the one the study ran with."""
    from .views import read_study

    view = read_study(settings, cfg)
    if view.warning:
        print(f"warning: {view.warning}", file=sys.stderr)
    return view


def cmd_status(a: argparse.Namespace) -> int:
    from .run.progress import summarize
    from .study.grid import expand
    from .views import status_line, status_row

    cfg = load_study(a.study)
    planned = expand(cfg)
    settings = _settings(a)
    view = _read_study(settings, cfg)
    summary = summarize(planned, view.rows, 0.0, 0.0)
    runs = [status_row(p, view.rows.get(p.key)) for p in planned]
    if a.json:
        print(
            jsonout.dumps(
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
    if view.experiment_id:
        from .store.mlflow_view import view_hint

        print(
            view_hint(
                settings.tracking_uri, view.experiment_id, _ui_command(a, redact(settings.tracking_uri))
            )
        )
    for r in runs:
        print(status_line(r))
    return 0


# --------------------------------------------------------------------------- run / cancel / ui


def cmd_run(a: argparse.Namespace) -> int:
    from .run.scheduler import run_study

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
    from .views import run_summary

    print("\n".join(run_summary(cfg, settings, outcome, _ui_command(a, redact(settings.tracking_uri)))))
    return outcome.exit_code


def _ui_command(a: argparse.Namespace, shown_uri: str) -> str:
    """The `scalelab ui` command for the store this command used."""
    explicit = getattr(a, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
    return (
        f"scalelab ui --tracking-uri {shown_uri}" if explicit or getattr(a, "home", None) else "scalelab ui"
    )


def cmd_cancel(a: argparse.Namespace) -> int:
    from .store.ledger import Ledger
    from .views import read_rows

    cfg = load_study(a.study)
    settings = _settings(a)
    if not read_rows(settings, cfg.study):
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
    from .store.tracking import store_exists

    if not store_exists(uri):
        raise StudyError(
            "--tracking-uri",
            f"no MLflow store at {redact(uri)} (run `scalelab run "
            "STUDY.yaml` first, or point --home / --tracking-uri "
            "at an existing store)",
        )
    _check_port_free(a.host, a.port)
    from .ui_server import serve

    return serve(uri, settings.artifact_root, a.host, a.port)


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


# --------------------------------------------------------------------------- fit / report


def cmd_fit(a: argparse.Namespace) -> int:
    from analysis.cli import run_fit

    from .store.tracking import bounded_http_retries, check_store_readable

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
    metric = a.metric or "val_loss"
    if a.study:
        cfg: StudyConfig = load_study(a.study)
        experiment = cfg.study
        if cfg.data.source == "corpus" and not a.metric:  # tokenizer-independent: bits per byte
            metric = "val_bpb"
        if cfg.data.source in ("markov", "zipf"):
            from trainer import true_entropy as entropy

            true_entropy = entropy(cfg.data)
    elif a.experiment:
        experiment = a.experiment
    else:
        raise StudyError("report", "give a study file or --experiment NAME")
    budgets = _budgets(a.budgets) if a.budgets else None
    from .store.tracking import bounded_http_retries, check_store_readable

    check_store_readable(settings.tracking_uri)
    with bounded_http_retries():
        return run_report(
            experiment,
            settings.tracking_uri,
            a.out,
            true_entropy=true_entropy,
            budgets=budgets,
            log_to_mlflow=not a.no_mlflow,
            metric=metric,
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
    planner_args(p, required=False)
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
    planner_args(p, required=True)
    _store_args(p)
    p.set_defaults(func=cmd_suggest)

    from .run.verify import add_verify_parser

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

    add_data_parser(sub)  # scalelab data ingest (orchestrator/corpus_cli.py)

    p = sub.add_parser("report", help="write the HTML + Markdown report of a study")
    p.add_argument("study", nargs="?", help="study YAML (or give --experiment)")
    p.add_argument("--experiment")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--budgets", help="FLOP budgets for the compute-optimal table, e.g. 1e15,1e18")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    p.add_argument(
        "--metric", help="run metric to report (default: val_bpb for corpus studies, else val_loss)"
    )
    _store_args(p)
    p.set_defaults(func=cmd_report)
    _log_level_arg(ap, default=None)
    ap.add_argument("--trust-env", action="store_true", help=TRUST_ENV_HELP)
    for p in sub.choices.values():  # also after the subcommand, not overriding one before it
        _log_level_arg(p, default=argparse.SUPPRESS)
        p.add_argument("--trust-env", action="store_true", default=argparse.SUPPRESS, help=TRUST_ENV_HELP)
    return ap


TRUST_ENV_HELP = "use a store (MLFLOW_TRACKING_URI, SCALELAB_LEDGER_URI) that ./.env selects"


def _log_level_arg(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--log-level",
        default=default,
        metavar="LEVEL",
        help="diagnostics shown on stderr: DEBUG, INFO (default), WARNING or ERROR "
        "(default: $SCALELAB_LOG_LEVEL)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command(argv)).parse_args(argv)
    try:
        flags = {k for k, a in zip(STORE_KEYS, ("tracking_uri", "ledger_uri")) if getattr(args, a, None)}
        load_dotenv_file(trust=getattr(args, "trust_env", False), flags=flags)
        configure_logging(getattr(args, "log_level", None))
        return args.func(args)
    except StudyError as e:
        print(f"error: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LedgerUnreadable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Terminated:  # SIGTERM during `run`: the same clean path as Ctrl-C
        print("interrupted: run `scalelab run` again to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:  # Ctrl-C
        print("interrupted: run `scalelab run` again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
