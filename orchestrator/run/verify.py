"""`scalelab verify STUDY --budget C [--points K] [--json]`: test the study's answer by training.

Trains K runs (default 3) on the IsoFLOP line at C around the predicted N_opt: N_opt and
log-spaced factors of it (analysis.verification.design_factors), each shape built by the
study's rule, dense, in the default architecture, with the D that spends C in the study's FLOPs
convention (D = C / FLOPs per token of the built shape, as grid.isoflop does). They are
explicit runs of the same study and experiment, run by the same machinery as `run --adaptive`
(suggest.with_runs + scheduler.run_study), tagged `scalelab.origin=verify` and
`scalelab.verify_budget=C`, never fitted. The plan is stored on the parent run (tag
`scalelab.verify.<C>`, the runs as JSON) before anything runs, so a killed `verify` resumes
like any run and a rerun replays the same runs. Then analysis.verification.evaluate judges
the prediction: observed vs predicted with intervals, the observed IsoFLOP minimum, held.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainer import mlflow_contract as mc

from ..store import tracking
from ..study.config import ExplicitRun, ExplicitShape, MoESetting, StudyConfig, StudyError

PLAN_TAG = mc.VERIFY_PLAN
ORIGIN = mc.ORIGIN_VERIFY
MIN_POINTS = 3


@dataclass
class VerifyOutcome:
    exit_code: int
    result: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def budget_key(C: float) -> str:
    from analysis.verdict import budget_key as key

    return key(C)


# --------------------------------------------------------------------------- the answer
def study_answer(cfg: StudyConfig, settings: tracking.Settings, budget: float, points: int = MIN_POINTS):
    """The study's answer at `budget` (verify runs left out), as report/fit/suggest compute it,
    after the flags are checked against the study's points. A study with nothing to fit, a
    budget below its smallest run or fewer than 3 points are bad input (exit 2)."""
    from analysis.answer import compute_answer, prepare_points
    from analysis.data import InputError, load_mlflow

    if points < MIN_POINTS:
        raise StudyError(
            "--points", f"must be >= {MIN_POINTS} (an IsoFLOP minimum needs three runs), got {points}"
        )
    no_fit = (
        f"{cfg.source_path or cfg.study} has no fitted law to test at --budget {budget:g}: "
        f"{{why}}; run `scalelab run {cfg.source_path or 'STUDY.yaml'}` first"
    )
    if not tracking.store_exists(settings.tracking_uri):
        raise StudyError("STUDY", no_fit.format(why="its MLflow store does not exist"))
    try:
        pts = prepare_points(load_mlflow(cfg.study, settings.tracking_uri))
    except InputError as e:
        raise StudyError("STUDY", no_fit.format(why=str(e))) from None
    check_budget(pts.C, budget)
    ans = compute_answer(pts, budgets=[budget], study=cfg.source_path or "STUDY.yaml")
    if not ans.ok:
        raise StudyError(
            "STUDY", no_fit.format(why=f"no Approach 3 form is identified ({ans.selection.reason})")
        )
    return ans


def check_budget(flops, budget: float) -> None:
    """--budget must lie at or above the study's smallest run."""
    smallest, largest = float(min(flops)), float(max(flops))
    if not (math.isfinite(budget) and budget >= smallest):
        raise StudyError(
            "--budget",
            f"{budget:g} FLOPs is below the study's smallest run ({smallest:.3g} FLOPs); the runs it would "
            f"train are smaller than anything fitted. Give a budget within or beyond the study, e.g. "
            f"{largest:.0e}",
        )


# --------------------------------------------------------------------------- the design
def _shape_for(cfg: StudyConfig, target: float):
    from trainer.accounting import shape_for_params
    from trainer.spec import SpecError

    r, d = cfg.model, cfg.data
    try:
        m = shape_for_params(
            float(target),
            d_head=r.d_head,
            aspect_ratio=r.aspect_ratio,
            vocab_size=d.vocab_size,
            seq_len=d.seq_len,
            tied_head=r.tied_head,
        )
    except SpecError:
        return None
    return ExplicitShape(m.n_layer, m.d_model, m.n_head)


def _on_line(cfg: StudyConfig, shape: ExplicitShape, budget: float):
    """(explicit run spending `budget`, its planned run): D = C / FLOPs per token."""
    from ..study.grid import expand
    from ..study.suggest import _only_runs

    seed = cfg.grid.seeds[0]
    probe = expand(
        _only_runs(
            cfg, [ExplicitRun(shape, float(cfg.train.batch_size * cfg.data.seq_len), MoESetting(), seed)]
        )
    )[0]
    per_token = probe.flops / probe.tokens
    run = ExplicitRun(shape, float(budget / per_token), MoESetting(), seed)
    return run, expand(_only_runs(cfg, [run]))[0]


def design(cfg: StudyConfig, ans, budget: float, points: int) -> list[ExplicitRun]:
    """K runs on the IsoFLOP line at `budget`: the shapes nearest N_opt x design_factors, all
    distinct, each trained on the tokens that spend the budget."""
    import numpy as np

    from analysis.verification import design_factors

    row = ans.row(budget)
    n_opt = float(row["n_params"])
    shapes: dict[tuple[int, int, int], float] = {}
    for t in n_opt * np.logspace(-1.2, 1.2, 61):
        s = _shape_for(cfg, t)
        if s is not None and (s.n_layer, s.d_model, s.n_head) not in shapes:
            try:
                _, p = _on_line(cfg, s, budget)
            except StudyError:  # too big to spend the budget in a whole optimizer step
                continue
            shapes[(s.n_layer, s.d_model, s.n_head)] = float(p.n_params)
    taken: list[tuple[int, int, int]] = []
    for f in design_factors(points, row.get("width")):
        free = {k: n for k, n in shapes.items() if k not in taken}
        if not free:
            break
        taken.append(min(free, key=lambda k: abs(math.log(free[k] / (n_opt * f)))))
    if len(taken) < points:
        raise StudyError(
            "--points",
            f"the study's shape rule builds only {len(taken)} distinct models near N_opt {n_opt:.3g}",
        )
    runs = []
    for k in sorted(taken, key=lambda k: shapes[k]):
        run, p = _on_line(cfg, ExplicitShape(*k), budget)
        if abs(p.flops / budget - 1) > 0.05:
            raise StudyError(
                "--budget",
                f"{budget:g} gives the {p.n_params:.3g}-parameter run only {p.tokens} tokens, so its FLOPs "
                f"({p.flops:.3g}) cannot be within 5% of the budget; raise --budget or lower train.batch_size",
            )
        runs.append(run)
    return runs


# --------------------------------------------------------------------------- persistence
def load_plans(settings: tracking.Settings, study: str) -> dict[float, list[ExplicitRun]]:
    """{budget: runs} of every verify plan stored on the parent run."""
    from ..study.suggest import run_from_dict
    from .adaptive import _parent

    parent = _parent(settings, study)
    if parent is None:
        return {}
    tags = tracking.client(settings.tracking_uri).get_run(parent).data.tags
    out = {}
    for k, v in tags.items():
        if k.startswith(PLAN_TAG):
            d = json.loads(v)
            out[float(d["budget"])] = [run_from_dict(r) for r in d["runs"]]
    return out


def save_plan(
    cfg: StudyConfig, settings: tracking.Settings, parent: str, budget: float, runs: list[ExplicitRun]
) -> None:
    """The plan on the parent run, with its run keys: analysis reads them, so a verify run that
    finished before the driver could tag it is never fitted (analysis.data.store)."""
    from ..study.grid import expand
    from ..study.suggest import _only_runs, run_to_dict

    keys = [p.key for p in expand(_only_runs(cfg, runs))]
    plan = {"budget": budget, "runs": [run_to_dict(r) for r in runs], "run_keys": keys}
    text = json.dumps(plan, separators=(",", ":"))
    tracking.client(settings.tracking_uri).set_tag(parent, f"{PLAN_TAG}{budget_key(budget)}", text)


def tag_points(cfg: StudyConfig, settings: tracking.Settings, plans: dict[float, list[ExplicitRun]]) -> None:
    """Tag the verify points' MLflow runs (idempotent; redone on every resume)."""
    from ..store.ledger import Ledger
    from ..study.grid import expand
    from ..study.suggest import _only_runs

    if not plans:
        return
    ledger = Ledger(settings.ledger_uri)
    try:
        ids = {k: r.mlflow_run_id for k, r in ledger.for_study(cfg.study).snapshot().rows.items()}
    finally:
        ledger.dispose()
    c = tracking.client(settings.tracking_uri)
    for budget, runs in plans.items():
        for p in expand(_only_runs(cfg, runs)):
            if ids.get(p.key):
                c.set_tag(ids[p.key], mc.ORIGIN, ORIGIN)
                c.set_tag(ids[p.key], mc.VERIFY_BUDGET, f"{budget:.6e}")


# --------------------------------------------------------------------------- the command
def run_verify(
    cfg: StudyConfig,
    settings: tracking.Settings,
    budget: float,
    points: int = MIN_POINTS,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    show_progress: bool = True,
) -> VerifyOutcome:
    """Plan (or replay) the verify runs at `budget`, run them, and judge the prediction."""
    from ..study.suggest import with_runs
    from .scheduler import run_study

    if not (math.isfinite(budget) and budget > 0):
        raise StudyError("--budget", f"must be a positive FLOP count, e.g. 1e12; got {budget}")
    plans = load_plans(settings, cfg.study)
    tag_points(cfg, settings, plans)  # runs of an interrupted verify: never fitted
    ans = study_answer(cfg, settings, budget, points)
    same = next((b for b in plans if math.isclose(b, budget, rel_tol=1e-9)), None)
    msgs = []
    if same is None:
        runs = design(cfg, ans, budget, points)
        from .adaptive import _parent

        parent = _parent(settings, cfg.study)
        if parent is None:
            raise StudyError("STUDY", f"{cfg.study} has no parent MLflow run; run `scalelab run` first")
        save_plan(cfg, settings, parent, budget, runs)
        plans[budget] = runs
    else:
        budget = same
        if len(plans[same]) != points:
            msgs.append(
                f"replaying the stored plan of {len(plans[same])} runs at {budget:g} (--points ignored)"
            )
    runs = plans[budget]
    full = with_runs(cfg, [r for rs in plans.values() for r in rs])
    outcome = run_study(
        full, settings, address=address, max_concurrent=max_concurrent, show_progress=show_progress
    )
    tag_points(cfg, settings, plans)
    result = judge(cfg, settings, ans, budget, runs)
    return VerifyOutcome(outcome.exit_code, result, list(outcome.messages) + msgs)


def judge(cfg: StudyConfig, settings: tracking.Settings, ans, budget: float, runs: list[ExplicitRun]) -> dict:
    """analysis.verification.evaluate on the finished verify runs of this budget."""
    from analysis.data import load_mlflow
    from analysis.verification import evaluate

    from ..study.grid import expand
    from ..study.suggest import _only_runs

    keys = {p.key for p in expand(_only_runs(cfg, runs))}
    f = load_mlflow(cfg.study, settings.tracking_uri).frame
    f = f[f["run_key"].isin(keys)]
    out = evaluate(ans, budget, f)
    row = ans.row(budget)
    out.update(
        form=ans.form,
        n_opt_6nd={
            "n_params": float(row["n_params"]),
            "ci95": [float(row["n_params_lo"]), float(row["n_params_hi"])],
        },
        n_runs=len(keys),
        n_finished=int(len(f)),
    )
    return out


def print_verify(v: VerifyOutcome, as_json: bool) -> None:
    from analysis.cli import _jsonable

    r = v.result
    if as_json:
        print(json.dumps(_jsonable(r)))
        return
    for m in v.messages:
        print(m)
    p, m = r["predicted"], r["isoflop_min"]

    def iv(ci):
        return "[" + ", ".join("open" if x is None or not math.isfinite(x) else f"{x:.4g}" for x in ci) + "]"

    print(
        f"verify at C = {r['budget']:.3g} FLOPs ({r['form']} form): predicted optimum N {p['n_params']:.4g} "
        f"{iv(p['n_params_ci95'])}, D {p['tokens']:.4g}, loss {p['loss']:.4g} {iv(p['ci95'])}"
    )
    print(f"{'N':>10} {'D':>10} {'observed':>9} {'predicted':>9}  95% interval")
    for o in r["observed"]:
        print(
            f"{o['n_params']:10.4g} {o['tokens']:10.4g} {o['loss']:9.4f} {o['predicted']:9.4f}  {iv(o['ci95'])}"
        )
    n_txt = f"{m['n_params']:.4g}" if m["n_params"] else "none"
    print(f"observed IsoFLOP minimum: N {n_txt} {iv(m['ci95'])}")
    print(f"prediction {'HELD' if r['held'] else 'DID NOT HOLD'}: {r['reason']}")


def add_verify_parser(sub, store_args: Callable[[argparse.ArgumentParser], None], func) -> None:
    """`scalelab verify` and its options (the command is orchestrator.cli.cmd_verify)."""
    p = sub.add_parser("verify", help="test the study's compute-optimal prediction by training at a budget")
    p.add_argument("study")
    p.add_argument(
        "--budget", type=float, required=True, help="the budget C (FLOPs) whose prediction to test"
    )
    p.add_argument("--points", type=int, default=3, help="runs on the IsoFLOP line at C (>= 3, default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)"
    )
    p.add_argument("--max-concurrent", type=int, help="at most K runs at once")
    p.add_argument("--checkpoint-dir", help="checkpoint root (as for `run`)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    store_args(p)
    p.set_defaults(func=func)
