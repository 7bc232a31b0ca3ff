"""The study report: report.html (plots embedded) + summary.md, led by the answer.

write_report(points, out_dir, ...) fits every law per setting into a ReportContext
(`build_context`), runs each function of SECTIONS on it, and writes both documents, the PNGs
and headline.json (the parent run's metrics and params). A section is a plain dict
`{"title", "markdown", "figures"}`; other modules add theirs with `register_section(fn)`.
log_report_to_mlflow(out_dir, experiment, tracking_uri) logs the files on the study's parent
run and the headline numbers as its metrics and params.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import answer
from . import report_sections as S
from .bootstrap import BootstrapResult, bootstrap_chinchilla
from .chinchilla import ChinchillaFit
from .compressor import compressor_section
from .data import Points
from .groups import in_active_params, is_dense, select_setting, setting_labels
from .isoflop import EnvelopeFit, IsoFLOPFit, envelope_fit, isoflop_fit
from .kaplan import PowerLawFit, frontier_points, kaplan_per_variable
from .moe import _config_cols
from .report_doc import esc, section, write_documents
from .validate import ExtrapolationResult, entropy_check, extrapolation_test, residuals_by_decile

Section = Callable[["ReportContext"], "dict | None"]


@dataclass
class ReportPaths:
    html: Path
    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)
    results: dict = field(default_factory=dict)


@dataclass
class ReportContext:
    """Everything the sections read. `base` is the baseline setting (dense points of the default
    architecture, when there are any); `others` the other settings, MoE ones in active params."""

    points: Points
    frame: pd.DataFrame
    base: pd.DataFrame
    base_label: str
    others: dict[str, pd.DataFrame]
    budgets: list[float]
    curves: pd.DataFrame | None
    seed: int
    approach3: ChinchillaFit
    boot: BootstrapResult | None
    approach2: IsoFLOPFit
    approach1: EnvelopeFit
    kaplan: dict[str, tuple[PowerLawFit, pd.DataFrame, str]]
    extrapolation: ExtrapolationResult | None
    setting_fits: dict[str, ChinchillaFit]
    results: dict[str, Any] = field(default_factory=dict)

    def fitted_groups(self) -> dict:
        """{label: (frame, fit)} of every setting with an identified Approach 3 law."""
        out = {self.base_label: (self.base, self.approach3)} if self.approach3.success_ else {}
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


SECTIONS: list[Section] = [
    S.answer_section,
    S.data_section,
    S.approach3_section,
    S.landscape_section,
    S.kaplan_section,
    S.approach2_section,
    S.approach1_section,
    S.compute_optimal_section,
    S.validation_section,
    S.settings_section,
    S.moe_section,
    S.forms_section,
    S.constrained_section,
    compressor_section,
    S.architecture_section,
    S.families_section,
    S.planner_section,
]


def register_section(fn: Section) -> Section:
    """Append a section function (e.g. analysis.compare's) to every report; usable as a decorator."""
    if fn not in SECTIONS:
        SECTIONS.append(fn)
    return fn


# ----------------------------------------------------------------------------- fitting
def _split(points: Points) -> tuple[Points, str, dict[str, pd.DataFrame]]:
    base = in_active_params(select_setting(points))
    labels = setting_labels(points.frame)
    base_label = str(setting_labels(base.frame).iloc[0])
    others = {}
    for lab in sorted(set(labels) - {base_label}, key=str):
        grp = Points(points.frame[(labels == lab).to_numpy()].reset_index(drop=True))
        others[str(lab)] = in_active_params(grp).frame
    return base, base_label, others


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


def _fit_approach3(base, budgets, grid, n_bootstrap, seed):
    fit = ChinchillaFit(grid=grid).fit(base["n_params"], base["tokens"], base["loss"])
    boot = None
    if fit.success_ and n_bootstrap:
        boot = bootstrap_chinchilla(
            base["n_params"],
            base["tokens"],
            base["loss"],
            n_resamples=n_bootstrap,
            seed=seed,
            budgets=budgets,
            full_fit=fit,
            groups=base["run_id"] if "run_id" in base else None,
        )
    return fit, boot


def _fit_validation(base, fit, grid):
    if not fit.success_:
        return None, None
    thr = float(np.quantile(base["flops"], 0.6))
    ex = extrapolation_test(
        base["n_params"],
        base["tokens"],
        base["loss"],
        base["flops"],
        threshold=thr,
        fitter=ChinchillaFit(grid=grid),
    )
    dec = residuals_by_decile(base["n_params"], base["tokens"], base["loss"], fit.params_, base["flops"])
    return ex, dec


def _base_curves(curves, base):
    """Approach 1 sees only the baseline setting's training curves."""
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
    grid="hoffmann",
) -> ReportContext:
    """Fit every law the report shows, per setting (see analysis.groups)."""
    from .cli import default_budgets

    base_pts, base_label, others = _split(points)
    base = base_pts.frame
    budgets = list(budgets) if budgets else default_budgets(base["flops"])
    fit, boot = _fit_approach3(base, budgets, grid, n_bootstrap, seed)
    ex, dec = _fit_validation(base, fit, grid)
    bcurves = _base_curves(curves, base)
    ctx = ReportContext(
        points=points,
        frame=points.frame,
        base=base,
        base_label=base_label,
        others=others,
        budgets=budgets,
        curves=bcurves,
        seed=seed,
        approach3=fit,
        boot=boot,
        approach2=isoflop_fit(base),
        approach1=envelope_fit(bcurves if bcurves is not None else base),
        kaplan=_fit_kaplan(base),
        extrapolation=ex,
        setting_fits={
            k: ChinchillaFit(grid="coarse").fit(f["n_params"], f["tokens"], f["loss"])
            for k, f in others.items()
        },
    )
    te = true_entropy if true_entropy is not None else points.true_entropy
    ctx.results.update(
        budgets=budgets,
        approach3=fit,
        bootstrap=boot,
        approach2=ctx.approach2,
        approach1=ctx.approach1,
        kaplan={k: v[0] for k, v in ctx.kaplan.items()},
        extrapolation=ex,
        residuals=dec,
        settings=ctx.setting_fits,
        entropy=entropy_check(fit.E_, te, boot.ci.get("E") if boot else None),
    )
    return ctx


# ----------------------------------------------------------------------------- writing
def _run(fn: Section, ctx: ReportContext) -> dict | None:
    try:
        return fn(ctx)
    except Exception as exc:  # noqa: BLE001 - a broken section is reported in the report, not fatal to it
        name = getattr(fn, "__name__", "section")
        return section(name, [esc(f"This section failed: {type(exc).__name__}: {exc}")])


def write_report(
    points: Points,
    out_dir,
    *,
    true_entropy=None,
    budgets=None,
    curves=None,
    n_bootstrap: int = 200,
    seed: int = 0,
    title: str | None = None,
    grid="hoffmann",
    sections: list[Section] | None = None,
) -> ReportPaths:
    """Fit everything the data supports and write report.html + summary.md (+ PNGs,
    headline.json) to out_dir. grid: Approach 3 start grid ("hoffmann" 4500 / "coarse" 1024)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = build_context(
        points,
        budgets=budgets,
        curves=curves,
        true_entropy=true_entropy,
        n_bootstrap=n_bootstrap,
        seed=seed,
        grid=grid,
    )
    from . import report_plots

    report_plots.UNIT[0] = points.loss_unit  # axis labels in the loss's unit (bits/byte: val_bpb)
    try:
        secs = [s for s in (_run(fn, ctx) for fn in (sections or SECTIONS)) if s]
    finally:
        report_plots.UNIT[0] = "nats/token"
    hp, mp, figs = write_documents(out, title or f"Scaling-law report: {points.source}", secs)
    head = answer.headline(ctx, answer.answer_rows(ctx), ctx.base_label)
    (out / "headline.json").write_text(json.dumps(head, indent=1), encoding="utf-8")
    ctx.results["headline"] = head
    return ReportPaths(hp, mp, figs, ctx.results)


def log_report_to_mlflow(
    out_dir, experiment: str, tracking_uri: str | None = None, artifact_path: str = "report"
) -> str:
    """Log the report files on the study's parent run (tag scalelab.role=parent), and the
    headline numbers of headline.json as its metrics and params. Returns the run id."""
    from mlflow.tracking import MlflowClient

    from .data import InputError, _experiment_id, search_all_runs

    client = MlflowClient(tracking_uri=tracking_uri)
    eid = _experiment_id(client, experiment)
    parents = search_all_runs(client, eid, "tags.`scalelab.role` = 'parent'")
    if not parents:
        raise InputError(f"experiment {experiment!r} has no parent run (tag scalelab.role=parent)")
    run = parents[0]
    head_file = Path(out_dir) / "headline.json"
    if head_file.exists():
        log_headline(client, run, json.loads(head_file.read_text(encoding="utf-8")))
    client.log_artifacts(run.info.run_id, str(out_dir), artifact_path=artifact_path)
    return run.info.run_id


def log_headline(client, run, head: dict) -> list[str]:
    """Metrics always (a rerun adds the new value); params only where not set before, since
    MLflow params are immutable: returns the keys whose param kept an older value."""
    import time

    from mlflow.entities import Metric, Param

    ts = int(time.time() * 1000)
    metrics = [
        Metric(k, float(v), ts, 0) for k, v in head.get("metrics", {}).items() if math.isfinite(float(v))
    ]
    old = run.data.params
    params = [Param(k, str(v)) for k, v in head.get("params", {}).items() if k not in old]
    stale = [k for k, v in head.get("params", {}).items() if k in old and old[k] != str(v)]
    for i in range(0, max(len(metrics), len(params)), 100):
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 100], params=params[i : i + 100])
    return stale
