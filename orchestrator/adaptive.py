"""`scalelab run --adaptive`: run the grid (the seed design), then fit, suggest, run, until the
target's 95% interval is narrow enough or the FLOPs budget is spent.

Each round's runs are explicit runs appended to the study (grid.runs), so they are ordinary
points for the ledger, MLflow and the fits; their MLflow runs are tagged
`scalelab.origin=adaptive` and `scalelab.round=<n>`. A round is persisted on the study's parent
MLflow run (tag `scalelab.adaptive.round.<n>`: the round's explicit runs as JSON) BEFORE it is
run, so killing the driver and running the same command again replays the persisted rounds
(finishing what was interrupted) and continues with the next: no round is planned twice. The
planner is deterministic given the finished points, so a rerun plans the same runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from . import tracking
from .config import ExplicitRun, StudyConfig, StudyError
from .grid import expand
from .scheduler import EXIT_OK, StudyOutcome, run_study
from .states import RunState
from .suggest import build_candidates, check_inputs, run_from_dict, run_to_dict, suggest, with_runs

ROUND_TAG = "scalelab.adaptive.round."


@dataclass
class AdaptiveOutcome:
    outcome: StudyOutcome
    rounds: list[list[ExplicitRun]] = field(default_factory=list)
    flops_spent: float = 0.0
    ci95: tuple[float, float] | None = None
    value: float | None = None
    relative_halfwidth: float | None = None
    reason: str = ""


# --------------------------------------------------------------------------- persistence


def _parent(settings: tracking.Settings, study: str) -> str | None:
    """The study's parent MLflow run id, read-only (None before the first run)."""
    if not tracking.store_exists(settings.tracking_uri):
        return None
    c = tracking.client(settings.tracking_uri)
    exp = c.get_experiment_by_name(study)
    if exp is None:
        return None
    found = c.search_runs([exp.experiment_id], filter_string="tags.`scalelab.role` = 'parent'", max_results=1)
    return found[0].info.run_id if found else None


def load_rounds(settings: tracking.Settings, study: str) -> list[list[ExplicitRun]]:
    """The persisted rounds, in order (round 1 first)."""
    parent = _parent(settings, study)
    if parent is None:
        return []
    tags = tracking.client(settings.tracking_uri).get_run(parent).data.tags
    rounds = {int(k[len(ROUND_TAG) :]): v for k, v in tags.items() if k.startswith(ROUND_TAG)}
    return [[run_from_dict(d) for d in json.loads(rounds[n])] for n in sorted(rounds)]


def save_round(settings: tracking.Settings, parent: str, n: int, runs: list[ExplicitRun]) -> None:
    text = json.dumps([run_to_dict(r) for r in runs], separators=(",", ":"))
    tracking.client(settings.tracking_uri).set_tag(parent, f"{ROUND_TAG}{n}", text)


def round_keys(cfg: StudyConfig, rounds: list[list[ExplicitRun]]) -> dict[str, int]:
    """run key -> round number (1-based) of every adaptive point."""
    from .suggest import _only_runs

    out: dict[str, int] = {}
    for n, runs in enumerate(rounds, 1):
        for r in runs:
            out.setdefault(expand(_only_runs(cfg, [r]))[0].key, n)
    return out


def tag_rounds(cfg: StudyConfig, settings: tracking.Settings, keys: dict[str, int]) -> None:
    """Tag the adaptive points' MLflow runs (idempotent; redone on every resume)."""
    from .ledger import Ledger

    ledger = Ledger(settings.ledger_uri)
    try:
        ids = {r.run_key: r.mlflow_run_id for r in ledger.rows(cfg.study)}
    finally:
        ledger.dispose()
    c = tracking.client(settings.tracking_uri)
    for key, n in keys.items():
        if ids.get(key):
            c.set_tag(ids[key], "scalelab.origin", "adaptive")
            c.set_tag(ids[key], "scalelab.round", str(n))


def flops_spent(settings: tracking.Settings, study: str) -> float:
    """Training FLOPs of every point run that ran to an end (finished, diverged or failed)."""
    from .ledger import Ledger

    ledger = Ledger(settings.ledger_uri)
    try:
        return float(
            sum(
                r.flops or 0.0
                for r in ledger.rows(study)
                if r.kind == "point" and r.state in (RunState.FINISHED, RunState.DIVERGED, RunState.FAILED)
            )
        )
    finally:
        ledger.dispose()


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class AdaptiveArgs:
    target_flops: float
    until_ci: float  # relative half-width of the 95% interval (0.25 = ±25%)
    max_flops: float | None = None  # total training FLOPs of the study, grid included
    objective: str = "log_n_opt"
    max_runs: int = 4  # runs per round
    gamma: float = 0.4
    max_rounds: int | None = None  # new rounds this invocation (None: until done)


def check_adaptive(cfg: StudyConfig, a: AdaptiveArgs) -> None:
    """Bad flags exit 2 before anything is scheduled or written."""
    if not (a.until_ci > 0):
        raise StudyError(
            "--until-ci",
            f"must be > 0 (a relative half-width, e.g. 0.25 for ±25% on N_opt), got {a.until_ci}",
        )
    if cfg.train.schedule == "wsd":
        raise StudyError(
            "--adaptive",
            "needs train.schedule: cosine (adding token budgets to a "
            "wsd trunk would change its warmup and its runs' keys)",
        )
    if a.max_rounds is not None and a.max_rounds < 0:
        raise StudyError("--max-rounds", f"must be >= 0, got {a.max_rounds}")
    cands = build_candidates(cfg, {p.key for p in expand(cfg)})
    check_inputs(cfg, a.target_flops, a.max_runs, a.max_flops, a.gamma, cands, [])


def run_adaptive(
    cfg: StudyConfig,
    settings: tracking.Settings,
    a: AdaptiveArgs,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    show_progress: bool = True,
) -> AdaptiveOutcome:
    """Replay the persisted rounds (finishing what was interrupted), then plan and run new
    rounds until the interval is narrow enough, the budget is spent or max_rounds is reached."""
    check_adaptive(cfg, a)
    rounds = load_rounds(settings, cfg.study)
    res = AdaptiveOutcome(_run(cfg, settings, rounds, address, max_concurrent, show_progress), rounds)
    new = 0
    while res.outcome.exit_code == EXIT_OK:
        runs = _next_round(cfg, settings, a, res, new)
        if not runs:
            break
        new += 1
        parent = res.outcome.parent_run_id
        if parent is None:  # run_study records it before any run
            raise RuntimeError(f"study {cfg.study}: no parent MLflow run to store round {new}")
        save_round(settings, parent, len(rounds) + 1, runs)
        rounds.append(runs)
        res.outcome = _run(cfg, settings, rounds, address, max_concurrent, show_progress)
    res.flops_spent = flops_spent(settings, cfg.study)
    return res


def _run(cfg, settings, rounds, address, max_concurrent, show_progress) -> StudyOutcome:
    full = with_runs(cfg, [r for runs in rounds for r in runs])
    out = run_study(
        full, settings, address=address, max_concurrent=max_concurrent, show_progress=show_progress
    )
    if rounds:
        tag_rounds(full, settings, round_keys(cfg, rounds))
    return out


def _next_round(cfg, settings, a: AdaptiveArgs, res: AdaptiveOutcome, new: int):
    """The next round's runs, or [] with res.reason saying why the loop stops."""
    spent = flops_spent(settings, cfg.study)
    full = with_runs(cfg, [r for runs in res.rounds for r in runs])
    left = math.inf if a.max_flops is None else a.max_flops - spent
    cheapest = min(
        (p.flops for p in build_candidates(full, {p.key for p in expand(full)}, span_of=cfg).planned),
        default=math.inf,
    )
    s = suggest(
        full,
        settings.tracking_uri,
        target_flops=a.target_flops,
        objective=a.objective,
        max_runs=a.max_runs,
        max_flops=None if a.max_flops is None else max(left, cheapest),
        gamma=a.gamma,
        planned_keys=round_keys(cfg, res.rounds),
        span_of=cfg,
    )
    plan = s.plan
    if plan.model is not None:
        res.value, res.ci95 = plan.value, plan.ci95
        res.relative_halfwidth = plan.relative_halfwidth() or plan.model.relative_halfwidth()
        if res.relative_halfwidth <= a.until_ci:
            res.reason = f"95% interval ±{res.relative_halfwidth:.1%} is within --until-ci {a.until_ci:g}"
            return []
    if left < cheapest:
        res.reason = (
            f"--max-flops reached: {spent:.3g} FLOPs spent, the cheapest next run needs {cheapest:.3g}"
        )
        return []
    if a.max_rounds is not None and new >= a.max_rounds:
        res.reason = f"--max-rounds {a.max_rounds} reached; run again to continue"
        return []
    if not s.runs:
        res.reason = "no candidate run left within the budget"
        return []
    return s.runs
