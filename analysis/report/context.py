"""Fit first: everything the report shows, computed once into a ReportContext.

`build_context` fits the answer (analysis/answer.py) on the baseline setting and every other
law the report draws (Kaplan, per-setting Approach 3, MoE laws, the data-constrained law, the
architecture comparison, the interval history, tested predictions). Sections then only read
the context: no section fits anything, so no two sections can disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..answer import Answer, compute_answer, prepare_points
from ..data import Points
from ..groups import in_active_params, is_dense, setting_labels
from ..laws.chinchilla import ChinchillaFit
from ..laws.kaplan import PowerLawFit, frontier_points, kaplan_per_variable
from ..laws.moe import _config_cols
from ..validate import entropy_check, residuals_by_decile
from ..verification import evaluate_all


@dataclass
class ReportContext:
    """Everything the sections read. `base` is the baseline setting (dense points of the default
    architecture, when there are any, without verify runs); `others` the other settings, MoE ones
    in active params; `answer` the one answer every section and the headline read."""

    points: Points
    frame: pd.DataFrame
    base: pd.DataFrame
    base_label: str
    others: dict[str, pd.DataFrame]
    budgets: list[float]
    curves: pd.DataFrame | None
    seed: int
    answer: Answer
    kaplan: dict[str, tuple[PowerLawFit, pd.DataFrame, str]]
    setting_fits: dict[str, ChinchillaFit]
    residuals: pd.DataFrame | None = None
    entropy: dict[str, Any] = field(default_factory=dict)
    moe: dict[str, Any] | None = None
    constrained: Any = None
    architecture: tuple[list, pd.DataFrame] | None = None
    families: list | None = None  # analysis.families.compare_families (several families/objectives)
    planner: list[dict] = field(default_factory=list)
    tested: list[dict] = field(default_factory=list)
    verify_frame: pd.DataFrame | None = None
    study_file: str = "STUDY.yaml"
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def approach3(self):
        """The chosen form's fit on every baseline point (a FormFit)."""
        return self.answer.selection.fits.get(self.answer.form) if self.answer.form else None

    @property
    def approach2(self):
        return self.answer.approaches["Approach 2"]["estimator"]

    @property
    def approach1(self):
        return self.answer.approaches["Approach 1"]["estimator"]

    def fitted_groups(self) -> dict:
        """{label: (frame, fit)} of every setting with an identified Approach 3 law."""
        a3 = self.approach3
        out = {self.base_label: (self.base, a3)} if a3 is not None and a3.success_ else {}
        out.update({k: (self.others[k], f) for k, f in self.setting_fits.items() if f.success_})
        return out

    def moe_frame(self) -> pd.DataFrame | None:
        moe = [f for f in self.others.values() if not is_dense(f).all()]
        return pd.concat(moe, ignore_index=True) if moe else None

    def moe_per_config(self) -> dict:
        """{(experts, top_k, granularity): fit} for moe_effective_table."""
        out = {}
        for label, fit in self.setting_fits.items():
            f = self.others[label]
            if not is_dense(f).all():
                out[tuple(f[c].iloc[0] for c in _config_cols(f))] = fit
        return out


def _others(points: Points, base_label: str) -> dict[str, pd.DataFrame]:
    f = points.frame
    if "origin" in f.columns:
        f = f[f["origin"] != "verify"]
    labels = setting_labels(f)
    out = {}
    for lab in sorted(set(labels) - {base_label}, key=str):
        grp = Points(f[(labels == lab).to_numpy()].reset_index(drop=True))
        out[str(lab)] = in_active_params(grp).frame
    return out


def _fit_kaplan(base: pd.DataFrame) -> dict:
    per_n, per_d = kaplan_per_variable(base, "N"), kaplan_per_variable(base, "D")
    specs = (
        ("L(N), with E", "N", per_n, "n_params", True),
        ("L(N), pure power law", "N", per_n, "n_params", False),
        ("L(D), with E", "D", per_d, "tokens", True),
        ("L(D), pure power law", "D", per_d, "tokens", False),
        ("L(C) frontier = a·C^b + c", "C", frontier_points(base), "flops", True),
    )
    return {
        name: (PowerLawFit(variable=var, irreducible=irr).fit(sel[xcol], sel["loss"]), sel, xcol)
        for name, var, sel, xcol, irr in specs
    }


def _base_curves(curves, base):
    """The baseline setting's training curves (drawn only; no law is fitted on them)."""
    if curves is None or not len(curves) or "run_id" not in base:
        return None
    return curves[curves["run_id"].isin(set(base["run_id"]))].reset_index(drop=True)


def build_context(
    points: Points,
    *,
    budgets=None,
    curves=None,
    true_entropy=None,
    n_bootstrap: int = 200,
    seed: int = 0,
    grid="full",
    study_file: str | None = None,
) -> ReportContext:
    """Fit every law the report shows, per setting (see analysis.groups)."""
    base_pts = prepare_points(points)
    if base_pts.true_entropy is None and true_entropy is not None:
        base_pts = dataclasses.replace(base_pts, true_entropy=float(true_entropy))
    base = base_pts.frame
    base_label = str(setting_labels(base).iloc[0]) if len(base) else "none"
    others = _others(points, base_label)
    ans = compute_answer(
        base_pts,
        budgets=budgets,
        n_bootstrap=n_bootstrap,
        seed=seed,
        grid="coarse" if grid == "coarse" else "full",
        study=study_file or "STUDY.yaml",
    )
    ctx = ReportContext(
        points=points,
        frame=points.frame,
        base=base,
        base_label=base_label,
        others=others,
        budgets=list(ans.budgets),
        curves=_base_curves(curves, base),
        seed=seed,
        answer=ans,
        kaplan=_fit_kaplan(base),
        setting_fits={
            k: ChinchillaFit(grid="coarse").fit(f["n_params"], f["tokens"], f["loss"])
            for k, f in others.items()
        },
        study_file=study_file or "STUDY.yaml",
    )
    _fit_extras(ctx, base_pts)
    return ctx


def _fit_extras(ctx: ReportContext, base_pts: Points) -> None:
    """The laws beyond the answer: residuals, entropy, MoE, data-constrained, architectures,
    the interval history and tested predictions."""
    from ..compare import compare_architectures, length_table
    from ..families import compare_families
    from ..laws.constrained import fit_constrained_points
    from ..laws.moe import fit_clark, fit_krajewski, moe_effective_table
    from ..planner import ci_history_of

    ans, a3 = ctx.answer, ctx.approach3
    if a3 is not None and a3.success_:
        b = ctx.base
        ctx.residuals = residuals_by_decile(b["n_params"], b["tokens"], b["loss"], a3.params_, b["flops"])
        ctx.entropy = entropy_check(a3.params_["E"], base_pts.true_entropy, ans.fit.ci95.get("E"))
    moe = ctx.moe_frame()
    if moe is not None:
        clark = fit_clark(pd.concat([ctx.base, moe]))
        kraj = fit_krajewski(moe) if "granularity" in moe else None
        eff = None
        if a3 is not None and a3.success_:
            eff = moe_effective_table(moe, a3, budgets=ctx.budgets, per_config=ctx.moe_per_config())
        ctx.moe = {"clark": clark, "krajewski": kraj, "effective": eff}
    ctx.constrained = fit_constrained_points(base_pts)
    comps = compare_architectures(ctx.frame, n_boot=50, seed=ctx.seed)
    ctx.architecture = (comps, length_table(ctx.frame))
    ctx.families = compare_families(ctx.frame, n_boot=50, seed=ctx.seed) or None
    if ctx.budgets:
        ctx.planner = ci_history_of(ctx.base, float(max(ctx.budgets)))
    verify = ctx.frame[ctx.frame["origin"] == "verify"] if "origin" in ctx.frame.columns else None
    if verify is not None and len(verify):
        ctx.verify_frame = verify
        ctx.tested = evaluate_all(ans, verify)
    ctx.results.update(
        answer=ans,
        budgets=ctx.budgets,
        approach3=a3,
        approach2=ctx.approach2,
        approach1=ctx.approach1,
        kaplan={k: v[0] for k, v in ctx.kaplan.items()},
        residuals=ctx.residuals,
        settings=ctx.setting_fits,
        entropy=ctx.entropy,
        tested=ctx.tested,
    )
