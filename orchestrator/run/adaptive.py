"""`scalelab run --adaptive`: run the grid (the seed design), then fit, suggest, run, until the
target's 95% interval is narrow enough or the FLOPs budget is spent.

One driver session for all rounds (scheduler.driver_session): the study's lock is held and Ray
kept up from the grid to the last round, so no other driver can slip in between rounds. Each
round's runs are explicit runs appended to the study (grid.runs), so they are ordinary points
for the ledger, MLflow and the fits; their MLflow runs are tagged `scalelab.origin=adaptive`
and `scalelab.round=<n>`. A round is recorded in the ledger (table scalelab_rounds: the round's
explicit runs as JSON), and mirrored on the study's parent MLflow run (tag
`scalelab.adaptive.round.<n>`), BEFORE it is run, so killing the driver and running the same
command again replays the recorded rounds (finishing what was interrupted) and continues with
the next: no round is planned twice. Rounds that studies recorded only as parent-run tags (before
the ledger kept them) are read from there and copied into the ledger. The planner is
deterministic given the finished points, so a rerun plans the same runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from trainer import mlflow_contract as mc

from ..store import tracking
from ..store.ledger import Ledger, StudyLedger
from ..store.states import RunState
from ..study.config import ExplicitRun, StudyConfig, StudyError
from ..study.grid import expand
from ..study.suggest import build_candidates, check_inputs, run_from_dict, run_to_dict, suggest, with_runs
from .scheduler import EXIT_OK, DriverSession, StudyOutcome, driver_session, validate

ROUND_TAG = mc.ADAPTIVE_ROUND_PREFIX


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
    found = c.search_runs([exp.experiment_id], filter_string=mc.PARENT_FILTER, max_results=1)
    return found[0].info.run_id if found else None


def _tag_rounds(settings: tracking.Settings, study: str) -> dict[int, str]:
    """Rounds as parent-run tags (every study's mirror; the only record of older studies)."""
    parent = _parent(settings, study)
    if parent is None:
        return {}
    tags = tracking.client(settings.tracking_uri).get_run(parent).data.tags
    return {int(k[len(ROUND_TAG) :]): v for k, v in tags.items() if k.startswith(ROUND_TAG)}


def _parse(rounds: dict[int, str]) -> list[list[ExplicitRun]]:
    return [[run_from_dict(d) for d in json.loads(rounds[n])] for n in sorted(rounds)]


def load_rounds(settings: tracking.Settings, study: str) -> list[list[ExplicitRun]]:
    """The recorded rounds, in order (round 1 first); read-only."""
    import sqlalchemy as sa

    rounds = _tag_rounds(settings, study)
    if tracking.store_exists(settings.ledger_uri):
        try:
            ledger = Ledger(settings.ledger_uri, create=False)
        except ImportError:  # no driver for this URI: the tags only
            return _parse(rounds)
        try:
            rounds.update(ledger.for_study(study).rounds())
        except sa.exc.SQLAlchemyError:  # no ledger tables yet
            pass
        finally:
            ledger.dispose()
    return _parse(rounds)


def session_rounds(settings: tracking.Settings, study: StudyLedger) -> list[list[ExplicitRun]]:
    """The recorded rounds, read under the driver lock; rounds only the parent run held (older
    studies) are copied into the ledger, where the rest of the study's truth is."""
    rounds = _tag_rounds(settings, study.study)
    kept = study.rounds()
    for n, text in rounds.items():
        if n not in kept:
            study.record_round(n, text)
    rounds.update(kept)
    return _parse(rounds)


def save_round(
    settings: tracking.Settings, study: StudyLedger, parent: str, n: int, runs: list[ExplicitRun]
) -> None:
    """Record round n before it runs: in the ledger, then on the parent run (the mirror)."""
    text = json.dumps([run_to_dict(r) for r in runs], separators=(",", ":"))
    study.record_round(n, text)
    tracking.client(settings.tracking_uri).set_tag(parent, mc.adaptive_round_tag(n), text)


def round_keys(cfg: StudyConfig, rounds: list[list[ExplicitRun]]) -> dict[str, int]:
    """run key -> round number (1-based) of every adaptive point."""
    from ..study.suggest import _only_runs

    out: dict[str, int] = {}
    for n, runs in enumerate(rounds, 1):
        for r in runs:
            out.setdefault(expand(_only_runs(cfg, [r]))[0].key, n)
    return out


def tag_rounds(settings: tracking.Settings, study: StudyLedger, keys: dict[str, int]) -> None:
    """Tag the adaptive points' MLflow runs (idempotent; redone on every resume)."""
    ids = {k: r.mlflow_run_id for k, r in study.snapshot().rows.items()}
    c = tracking.client(settings.tracking_uri)
    for key, n in keys.items():
        if ids.get(key):
            c.set_tag(ids[key], mc.ORIGIN, mc.ORIGIN_ADAPTIVE)
            c.set_tag(ids[key], mc.ROUND, str(n))


def flops_spent(study: StudyLedger) -> float:
    """Training FLOPs of every point run that ran to an end (finished, diverged or failed)."""
    ended = (RunState.FINISHED, RunState.DIVERGED, RunState.FAILED)
    return float(
        sum(r.flops or 0.0 for r in study.snapshot().rows.values() if r.kind == "point" and r.state in ended)
    )


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
    """Replay the recorded rounds (finishing what was interrupted), then plan and run new
    rounds until the interval is narrow enough, the budget is spent or max_rounds is reached;
    all in one driver session (one lock, one Ray)."""
    check_adaptive(cfg, a)
    full = with_runs(cfg, [r for runs in load_rounds(settings, cfg.study) for r in runs])
    planned = validate(full, settings, address)
    with driver_session(full, settings, address, planned) as session:
        study = session.ledger.for_study(cfg.study)
        rounds = session_rounds(settings, study)  # under the lock: the truth
        run = _RoundRunner(cfg, settings, session, study, max_concurrent, show_progress)
        res = AdaptiveOutcome(run(rounds), rounds)
        new = 0
        while res.outcome.exit_code == EXIT_OK:
            runs = _next_round(cfg, settings, a, res, new, study)
            if not runs:
                break
            new += 1
            parent = res.outcome.parent_run_id
            if parent is None:  # the session records it before any run
                raise RuntimeError(f"study {cfg.study}: no parent MLflow run to store round {new}")
            save_round(settings, study, parent, len(rounds) + 1, runs)
            rounds.append(runs)
            res.outcome = run(rounds)
        res.flops_spent = flops_spent(study)
    return res


@dataclass
class _RoundRunner:
    """Runs the study grown by the rounds so far through the session, then tags the rounds."""

    cfg: StudyConfig
    settings: tracking.Settings
    session: DriverSession
    study: StudyLedger
    max_concurrent: int | None
    show_progress: bool

    def __call__(self, rounds: list[list[ExplicitRun]]) -> StudyOutcome:
        full = with_runs(self.cfg, [r for runs in rounds for r in runs])
        out = self.session.run(
            full,
            self.session.check(full),
            max_concurrent=self.max_concurrent,
            show_progress=self.show_progress,
        )
        if rounds:
            tag_rounds(self.settings, self.study, round_keys(self.cfg, rounds))
        return out


def _next_round(cfg, settings, a: AdaptiveArgs, res: AdaptiveOutcome, new: int, study: StudyLedger):
    """The next round's runs, or [] with res.reason saying why the loop stops."""
    spent = flops_spent(study)
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
