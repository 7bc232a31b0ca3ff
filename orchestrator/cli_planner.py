"""The planner's commands: `scalelab suggest` (the next runs that most narrow the compute-optimal
answer per FLOP), `scalelab run --adaptive` (suggest and run, round by round) and `scalelab
verify` (train points around the answer's N_opt at a budget and judge the prediction)."""

from __future__ import annotations

import argparse

from .store.tracking import Settings
from .study.config import StudyConfig, StudyError, load_study


def cmd_run_adaptive(a: argparse.Namespace, cfg: StudyConfig, settings: Settings, address: str | None) -> int:
    from .run.adaptive import AdaptiveArgs, run_adaptive

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
    from .views import adaptive_summary

    print("\n".join(adaptive_summary(cfg, res, a.objective, a.target_flops)))
    return res.outcome.exit_code


def cmd_suggest(a: argparse.Namespace) -> int:
    from .run.adaptive import load_rounds, round_keys
    from .study.suggest import print_suggestion, suggest, with_runs

    cfg = load_study(a.study)
    settings = Settings.resolve(tracking_uri=a.tracking_uri, ledger_uri=a.ledger_uri, home=a.home)
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


def planner_args(p: argparse.ArgumentParser, *, required: bool) -> None:
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


def cmd_verify(a: argparse.Namespace) -> int:
    import os

    from .logs import quiet_logs
    from .run.verify import print_verify, run_verify

    cfg = load_study(a.study)
    settings = Settings.resolve(
        tracking_uri=a.tracking_uri,
        ledger_uri=a.ledger_uri,
        checkpoint_dir=getattr(a, "checkpoint_dir", None),
        home=a.home,
    )
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
