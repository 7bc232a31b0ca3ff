"""`scalelab suggest`: candidate runs under the study's shape rule, scored by analysis.planner.

The candidate set: the shapes the study's rule builds for target sizes log-spaced from half the
study's smallest model to 4x its largest (plus the study's explicit shapes), times token budgets
log-spaced from half its smallest D to 4x its largest, all under the study's FIRST MoE setting
(the group the law is fitted on), never a point already in the study (grid, adaptive rounds,
finished). The maths (fit, Laplace variance, greedy) lives in analysis/planner.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from trainer.spec import SpecError

from .. import jsonout
from .config import ExplicitRun, ExplicitShape, StudyConfig, StudyError
from .grid import PlannedRun, base_shape, expand

if TYPE_CHECKING:  # analysis (scipy, pandas) loads only when suggest runs
    from analysis.planner import Plan

N_SIZES = 10  # candidate size targets (log grid)
N_TOKENS = 10  # candidate token budgets (log grid)
SPAN = (0.5, 4.0)  # candidate range relative to the study's smallest / largest N and D


@dataclass(frozen=True)
class Candidates:
    """Candidate runs as explicit runs, with their accounting (aligned lists)."""

    runs: tuple[ExplicitRun, ...]
    planned: tuple[PlannedRun, ...]

    def arrays(self, active: bool):
        n = [p.n_params_active if active else p.n_params for p in self.planned]
        return (
            np.array(n, float),
            np.array([p.tokens for p in self.planned], float),
            np.array([p.flops for p in self.planned], float),
        )


def with_runs(cfg: StudyConfig, runs) -> StudyConfig:
    """The study with extra explicit runs appended (the adaptive rounds)."""
    return replace(cfg, grid=replace(cfg.grid, runs=tuple(cfg.grid.runs) + tuple(runs)))


def _only_runs(cfg: StudyConfig, runs) -> StudyConfig:
    return replace(
        cfg, grid=replace(cfg.grid, sizes=(), tokens=(), tokens_per_param=(), isoflop=None, runs=tuple(runs))
    )


def _shapes(cfg: StudyConfig, lo: float, hi: float) -> list[ExplicitShape]:
    from trainer.accounting import shape_for_params

    rule, data = cfg.model, cfg.data
    seen, out = set(), []
    targets = [s for s in cfg.grid.sizes if isinstance(s, ExplicitShape)]
    for t in np.logspace(math.log10(lo), math.log10(hi), N_SIZES):
        try:
            m = shape_for_params(
                float(t),
                d_head=rule.d_head,
                aspect_ratio=rule.aspect_ratio,
                vocab_size=data.vocab_size,
                seq_len=data.seq_len,
                tied_head=rule.tied_head,
            )
        except SpecError:
            continue  # below the smallest shape of the rule
        targets.append(ExplicitShape(m.n_layer, m.d_model, m.n_head))
    for s in targets:
        shape = base_shape(s, cfg, "grid.sizes")
        if (shape.n_layer, shape.d_model, shape.n_head) not in seen:
            seen.add((shape.n_layer, shape.d_model, shape.n_head))
            out.append(ExplicitShape(shape.n_layer, shape.d_model, shape.n_head))
    return out


def build_candidates(cfg: StudyConfig, exclude_keys=(), span_of: StudyConfig | None = None) -> Candidates:
    """Every (shape, D) the rule builds in the range of `span_of`'s runs (default: cfg's; the
    adaptive loop passes the study without its rounds, so the range does not creep outward),
    minus `exclude_keys`."""
    grid = expand(span_of or cfg)
    n = [p.n_params for p in grid]
    d = [p.tokens for p in grid]
    per_step = cfg.train.batch_size * cfg.data.seq_len
    tokens = sorted(
        {
            max(per_step, int(round(t / per_step)) * per_step)
            for t in np.logspace(math.log10(min(d) * SPAN[0]), math.log10(max(d) * SPAN[1]), N_TOKENS)
        }
    )
    moe = cfg.grid.moe[0]
    runs = [
        ExplicitRun(size=s, tokens=float(t), moe=moe, seed=cfg.grid.seeds[0])
        for s in _shapes(cfg, min(n) * SPAN[0], max(n) * SPAN[1])
        for t in tokens
    ]
    skip, by_key = set(exclude_keys), {}
    for r in runs:  # align explicit runs with their accounting by key
        p = expand(_only_runs(cfg, [r]))[0]
        if p.key not in skip and p.key not in by_key:
            by_key[p.key] = (r, p)
    items = sorted(by_key.values(), key=lambda rp: (rp[1].flops, rp[1].key))
    return Candidates(tuple(r for r, _ in items), tuple(p for _, p in items))


def run_to_dict(r: ExplicitRun) -> dict:
    """An explicit run as it would be written in grid.runs (the persisted adaptive rounds)."""
    m = r.moe
    if not isinstance(r.size, ExplicitShape):  # suggest proposes shapes, never a bare N
        raise TypeError(f"run_to_dict: an explicit shape is needed, not N={r.size}")
    size = {"n_layer": r.size.n_layer, "d_model": r.size.d_model, "n_head": r.size.n_head}
    return {
        "size": size,
        "tokens": r.tokens,
        "seed": r.seed,
        "moe": {
            "experts": m.experts,
            "top_k": m.top_k,
            "granularity": m.granularity,
            "shared_experts": m.shared_experts,
            "aux_loss_coef": m.aux_loss_coef,
            "z_loss_coef": m.z_loss_coef,
        },
    }


def run_from_dict(d: dict) -> ExplicitRun:
    from .config import MoESetting

    return ExplicitRun(
        size=ExplicitShape(**d["size"]),
        tokens=float(d["tokens"]),
        moe=MoESetting(**d["moe"]),
        seed=int(d["seed"]),
    )


# --------------------------------------------------------------------------- points and checks


def finished_points(cfg: StudyConfig, tracking_uri: str):
    """The study's finished points of its first MoE setting: (frame, N column name)."""
    from analysis.data import InputError, load_mlflow

    from ..store.tracking import store_exists

    moe = cfg.grid.moe[0]
    active = moe.experts > 1
    col = "n_params_active" if active else "n_params"
    if not store_exists(tracking_uri):
        return None, col
    try:
        pts = load_mlflow(cfg.study, tracking_uri)
    except InputError:
        return None, col
    f = pts.frame
    keep = np.ones(len(f), bool)
    if "origin" in f:  # verify runs test the answer; they are never fitted
        keep &= (f["origin"] != "verify").to_numpy()
    for name, want in (("experts", moe.experts), ("top_k", moe.top_k)):
        if name in f:
            keep &= f[name].to_numpy(float) == want
    return f[keep].reset_index(drop=True), col


def study_answer(frame, col: str, target_flops: float):
    """The answer (analysis.answer) on the points suggest plans from: the same points, options
    and seed as the report and `fit`, so the interval quoted at the target is theirs."""
    from analysis.answer import compute_answer, prepare_points
    from analysis.data import Points

    te = frame["true_entropy"].dropna().unique() if "true_entropy" in frame else []
    pts = Points(frame.assign(n_params=frame[col]), true_entropy=float(te[0]) if len(te) == 1 else None)
    return compute_answer(prepare_points(pts), budgets=[target_flops])


def check_inputs(
    cfg: StudyConfig,
    target_flops: float,
    max_runs: int,
    max_flops: float | None,
    gamma: float,
    cands: Candidates,
    done_flops,
) -> None:
    """Bad flags exit 2, naming the flag, before anything is written."""
    largest = max([p.flops for p in expand(cfg)] + list(done_flops))
    if not math.isfinite(target_flops):
        raise StudyError("--target-flops", f"must be a finite number of FLOPs, got {target_flops}; e.g. 1e18")
    if not (target_flops > largest):
        raise StudyError(
            "--target-flops",
            f"{target_flops:g} is not above the study's largest run "
            f"({largest:.3g} FLOPs); give a budget beyond the grid, "
            f"e.g. {largest * 100:.0e}",
        )
    if max_runs < 1:
        raise StudyError("--max-runs", f"must be >= 1, got {max_runs}")
    if not (0 <= gamma < math.inf):
        raise StudyError("--gamma", f"must be >= 0 (0.4 is the published cost discount), got {gamma}")
    if not cands.planned:
        raise StudyError(
            "grid",
            "the shape rule builds no candidate run outside the study; widen grid.sizes or grid.tokens",
        )
    cheapest = min(p.flops for p in cands.planned)
    if max_flops is not None and math.isnan(max_flops):
        raise StudyError("--max-flops", "must be a number of FLOPs (inf: no limit), got nan")
    if max_flops is not None and not (max_flops >= cheapest):
        raise StudyError(
            "--max-flops",
            f"{max_flops:g} is below the cheapest candidate run ({cheapest:.3g} FLOPs); raise it",
        )


# --------------------------------------------------------------------------- the plan


@dataclass
class Suggestion:
    """A plan with the explicit runs it proposes (what `--adaptive` appends to the study)."""

    plan: Plan
    runs: list[ExplicitRun]
    planned: list[PlannedRun]

    def to_json(self) -> dict:
        """The `scalelab suggest --json` contract."""
        p = self.plan
        cur = {
            "value": p.value,
            "ci95": list(p.ci95) if p.ci95 else None,
            "n_points": p.n_points,
            "form": p.form,
            "interval": p.interval,
        }
        out = []
        for pick, r, q in zip(p.picks, self.runs, self.planned):
            m = q.spec.model
            ci = None if math.isnan(pick.expected_ci95[0]) else list(pick.expected_ci95)
            out.append(
                {
                    "n_params": q.n_params,
                    "tokens": q.tokens,
                    "flops": q.flops,
                    "moe": {
                        "experts": m.experts,
                        "top_k": m.top_k,
                        "granularity": r.moe.granularity,
                        "shared_experts": r.moe.shared_experts,
                    },
                    "arch": {"n_layer": m.n_layer, "d_model": m.d_model, "n_head": m.n_head},
                    "expected_ci95": ci,
                    "score": None if math.isnan(pick.score) else pick.score,
                }
            )
        return {
            "target_flops": p.target_flops,
            "objective": p.objective,
            "current": cur,
            "suggestions": out,
            "flops_requested": p.flops_requested,
        }


def suggest(
    cfg: StudyConfig,
    tracking_uri: str,
    *,
    target_flops: float,
    objective: str = "log_n_opt",
    max_runs: int = 4,
    max_flops: float | None = None,
    gamma: float = 0.4,
    planned_keys=(),
    span_of: StudyConfig | None = None,
) -> Suggestion:
    """Fit the study's finished points and propose the next runs. `planned_keys`: runs already
    planned (adaptive rounds) that must not be proposed again; finished points never are."""
    from analysis.planner import plan_next_runs, with_answer_interval

    frame, col = finished_points(cfg, tracking_uri)
    done_keys = set(frame["run_key"]) if frame is not None and "run_key" in frame else set()
    exclude = done_keys | set(planned_keys)
    cands = build_candidates(cfg, exclude, span_of)
    done_flops = frame["flops"].tolist() if frame is not None else []
    check_inputs(cfg, target_flops, max_runs, max_flops, gamma, cands, done_flops)
    cN, cD, cc = cands.arrays(active=col == "n_params_active")
    if frame is None or frame.empty:
        N = D = L = np.array([])
    else:
        N, D, L = (frame[c].to_numpy(float) for c in (col, "tokens", "loss"))
    plan = plan_next_runs(
        N,
        D,
        L,
        cN,
        cD,
        cc,
        target_flops=target_flops,
        objective=objective,
        max_runs=max_runs,
        max_flops=math.inf if max_flops is None else max_flops,
        gamma=gamma,
    )
    if plan.model is not None:  # quote the answer's interval (the report's and fit's), not Laplace's
        plan = with_answer_interval(plan, study_answer(frame, col, target_flops))
    return Suggestion(
        plan, [cands.runs[p.index] for p in plan.picks], [cands.planned[p.index] for p in plan.picks]
    )


def print_suggestion(s: Suggestion, as_json: bool) -> None:
    import sys

    if as_json:
        print(jsonout.dumps(s.to_json(), indent=1))
        if s.plan.seed:
            print(s.plan.message, file=sys.stderr)
        return
    p = s.plan
    what = "N_opt" if p.objective == "log_n_opt" else "loss"
    if p.ci95:
        how = (
            f"the answer: {p.form} form, bootstrap with form selection, as in the report and `fit`; "
            "expected intervals: it narrowed by the planner's Laplace variance ratio"
            if p.interval == "answer"
            else "Laplace approximation"
        )
        print(
            f"{what} at C = {p.target_flops:.3g}: {p.value:.4g}, 95% interval "
            f"[{p.ci95[0]:.4g}, {p.ci95[1]:.4g}] from {p.n_points} points ({how})"
        )
    print(p.message)
    print(f"{'shape':14} {'N':>9} {'tokens':>9} {'FLOPs':>9} {'expected 95% interval':>24} {'score':>9}")
    for pick, q in zip(p.picks, s.planned):
        ci = (
            ""
            if math.isnan(pick.expected_ci95[0])
            else f"[{pick.expected_ci95[0]:.4g}, {pick.expected_ci95[1]:.4g}]"
        )
        sc = "" if math.isnan(pick.score) else f"{pick.score:.3g}"
        print(f"{q.label:14} {q.n_params:9.3g} {q.tokens:9.3g} {q.flops:9.3g} {ci:>24} {sc:>9}")
    print(f"FLOPs requested: {p.flops_requested:.3g}")
