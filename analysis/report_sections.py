"""The report's sections: each takes the fitted results (a ReportContext) and returns a section
dict `{"title", "markdown", "figures": {name.png: Figure}}` (or None: nothing to show).

A section whose law is unidentifiable says so in one line and draws nothing. Adding a law adds
a function here (or in its own module) and one entry in `report.SECTIONS`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import answer
from . import report_plots as plots
from .moe import fit_clark, fit_krajewski, moe_effective_table
from .report_doc import esc, fig_ref, fmt, md_list, md_table, one_line, section


def _ci_text(lo, hi) -> str:
    return f"[{fmt(lo, 3)}, {fmt(hi, 3)}]" if np.isfinite(lo) and np.isfinite(hi) else "—"


def answer_section(ctx):
    """The answer first: N_opt, D_opt, D/N and loss per budget with CIs, decades beyond the
    largest run, exponents from every identified approach, and the verdict. No plots."""
    title = "Answer: compute-optimal allocation"
    rows = answer.answer_rows(ctx)
    if not len(rows):
        return one_line(
            title,
            f"No approach is identified on the {len(ctx.base)} points of "
            f"setting {ctx.base_label!r}; see the sections below for why.",
        )
    cmax = float(ctx.base["flops"].max())
    table = pd.DataFrame(
        {
            "budget C (FLOPs)": [answer.budget_key(c) for c in rows["flops"]],
            "decades beyond largest run": [f"{d:+.2f}" for d in rows["decades_beyond"]],
            **{
                lab: [
                    f"{fmt(v)} {_ci_text(lo, hi)}"
                    for v, lo, hi in zip(rows[k], rows[f"{k}_lo"], rows[f"{k}_hi"])
                ]
                for lab, k in (
                    ("N_opt [95% CI]", "n_params"),
                    ("D_opt [95% CI]", "tokens"),
                    ("tokens/param [95% CI]", "tokens_per_param"),
                    ("loss [95% CI]", "loss"),
                )
            },
            "trust": rows["verdict"],
        }
    )
    intro = (
        f"From {rows['approach'].iloc[0]} on the {len(ctx.base)} points of setting "
        f"{ctx.base_label!r} (largest run: {fmt(cmax, 3)} FLOPs). "
        "N_opt ~ C^a and D_opt ~ C^b."
    )
    ci_note = (
        "95% intervals from a bootstrap over runs."
        if ctx.boot is not None
        else "No bootstrap: intervals not computed."
    )
    return section(
        title,
        [
            esc(intro),
            md_table(table),
            esc(ci_note),
            md_table(answer.exponent_rows(ctx)),
            "**" + esc(answer.verdict_text(ctx, rows)) + "**",
        ],
    )


def data_section(ctx):
    pts, frame = ctx.points, ctx.frame
    notes = [f"excluded {k}: {v}" for k, v in pts.excluded.items()] or ["no runs excluded"]
    notes += pts.notes
    notes.append(
        "outlier policy: "
        + (
            "drop the highest-loss points as listed above"
            if "outlier (top-loss)" in pts.excluded
            else "none (all finished runs kept); pass drop_top_loss to change"
        )
    )
    notes.append("diverged, failed, killed and unfinished runs are excluded by default")
    notes.append(
        f"laws are fitted per setting, never across settings: the main sections use "
        f"setting {ctx.base_label!r} ({len(ctx.base)} points)"
        + (f"; {len(ctx.others)} other setting(s) are fitted separately" if ctx.others else "")
    )
    cols = ("n_params", "tokens", "flops", "loss")
    summ = pd.DataFrame(
        {
            "quantity": ["N (params)", "D (tokens)", "C (FLOPs)", f"loss ({pts.loss_unit})"],
            "min": [frame[c].min() for c in cols],
            "max": [frame[c].max() for c in cols],
            "distinct": [frame[c].nunique() for c in cols],
        }
    )
    return section(
        "Data",
        [
            esc(
                f"{len(frame)} points used ({len(ctx.base)} in the baseline "
                f"setting {ctx.base_label!r}); "
                f"{pts.n_excluded} excluded before fitting."
            ),
            md_list(notes),
            md_table(summ),
        ],
    )


def approach3_section(ctx):
    title = "Chinchilla Approach 3: L(N, D) = E + A/N^α + B/D^β"
    fit, boot = ctx.approach3, ctx.boot
    if not fit.success_:
        return one_line(title, "Approach 3 is not identified: " + fit.message_)
    rows = []
    for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
        ci = boot.ci.get(k, (np.nan, np.nan)) if boot else (np.nan, np.nan)
        name = k if k not in ("a", "b") else f"exponent {k} (N_opt~C^a, D_opt~C^b)"
        val = fit.params_[k] if k in fit.params_ else fit.exponents_[k]
        rows.append({"parameter": name, "estimate": val, "95% CI low": ci[0], "95% CI high": ci[1]})
    parts = [
        esc(f"Huber (δ=1e-3) on log loss, L-BFGS from {fit.n_starts_} starts; {fit.message_}."),
        md_table(pd.DataFrame(rows)),
        esc(
            f"Objective {fit.objective_:.6g}; converged: {fit.converged_}. "
            + (f"Bootstrap: {boot.message} (seed {ctx.seed})." if boot else "No bootstrap.")
        ),
    ]
    ent = ctx.results.get("entropy", {})
    if ent.get("available"):
        parts.append(
            esc(
                f"Known entropy of the data source: {ent['true_entropy']:.4f} nats; fitted E = "
                f"{ent['fitted_E']:.4f} (difference {ent['difference']:+.4f}"
                + (
                    f", 95% CI {'covers' if ent['covered'] else 'does NOT cover'} the truth"
                    if "covered" in ent
                    else ""
                )
                + ")."
            )
        )
    figs = {
        "fitted_vs_observed.png": plots.fitted_vs_observed(ctx.fitted_groups()),
        "loss_vs_compute.png": plots.loss_vs_compute(ctx.base, fit),
        "loss_vs_n.png": plots.loss_vs_x(ctx.base, fit, "tokens", "n_params"),
        "loss_vs_d.png": plots.loss_vs_x(ctx.base, fit, "n_params", "tokens"),
    }
    parts += [
        fig_ref(n, c)
        for n, c in (
            ("fitted_vs_observed.png", "Fitted vs observed loss, every point"),
            ("loss_vs_compute.png", "Loss vs compute, frontier and Approach 3"),
            ("loss_vs_n.png", "L vs N at fixed D"),
            ("loss_vs_d.png", "L vs D at fixed N"),
        )
    ]
    return section(title, parts, figs)


def landscape_section(ctx):
    title = "Loss landscape over (N, D)"
    if not ctx.approach3.success_:
        return one_line(title, "Not drawn: Approach 3 is not identified.")
    fig = plots.landscape(ctx.base, ctx.approach3, ctx.budgets)
    return section(
        title,
        [
            esc(
                "Fitted loss of Approach 3; dashed: IsoFLOP lines C = 6ND at the "
                "data's and the requested budgets; red: the fitted optimum."
            ),
            fig_ref("landscape.png", "Loss landscape"),
        ],
        {"landscape.png": fig},
    )


def kaplan_section(ctx):
    title = "Kaplan-style single-variable laws"
    krow = [
        {
            "law": name,
            "points": len(sel),
            "E (c)": kf.E_,
            "x_c": kf.x_c_,
            "alpha": kf.alpha_,
            "a (coef)": kf.coef_,
            "b (exponent)": kf.exponent_,
            "status": kf.message_,
        }
        for name, (kf, sel, _) in ctx.kaplan.items()
    ]
    drawn = {k: v for k, v in ctx.kaplan.items() if ", with E" in k or "frontier" in k}
    drawn = {k: v for k, v in drawn.items() if v[0].success_}
    if not any(v[0].success_ for v in ctx.kaplan.values()):
        return one_line(
            title, "Not identified: " + "; ".join(f"{k}: {v[0].message_}" for k, v in ctx.kaplan.items())
        )
    parts = [
        md_table(pd.DataFrame(krow)),
        esc(
            "L(N) uses the lowest loss per N (longest-trained run), L(D) the lowest loss per D, "
            "L(C) the lower envelope of (C, L)."
        ),
    ]
    figs = {"kaplan.png": plots.kaplan_panels(drawn)} if drawn else {}
    if figs:
        parts.append(fig_ref("kaplan.png", "Kaplan single-variable fits"))
    return section(title, parts, figs)


def approach2_section(ctx):
    title = "Chinchilla Approach 2: IsoFLOP profiles"
    iso = ctx.approach2
    if not iso.success_:
        return one_line(title, iso.message_)
    shown = iso.parabolas_[iso.parabolas_["n_runs"] >= iso.min_runs]
    parts = [esc(iso.message_)]
    skipped = len(iso.parabolas_) - len(shown)
    if skipped:
        parts.append(
            esc(
                f"{skipped} budget group(s) with fewer than {iso.min_runs} runs are not "
                "IsoFLOP profiles and are skipped."
            )
        )
    parts += [
        md_table(shown[["budget", "n_runs", "n_opt", "d_opt", "loss_opt", "in_range", "note"]]),
        fig_ref("isoflop.png", "IsoFLOP profiles"),
    ]
    return section(title, parts, {"isoflop.png": plots.isoflop_profiles(ctx.base, iso)})


def approach1_section(ctx):
    title = "Chinchilla Approach 1: lower envelope of training curves"
    env = ctx.approach1
    if not env.success_:
        return one_line(title, env.message_)
    has_curves = ctx.curves is not None and len(ctx.curves)
    parts = [
        esc(env.message_ + ("" if has_curves else " (no loss curves given: envelope over final points only)"))
    ]
    figs = {}
    if has_curves:
        figs["training_curves.png"] = plots.training_curves(ctx.curves, env.envelope_)
        parts.append(fig_ref("training_curves.png", "Training curves and their lower envelope"))
    return section(title, parts, figs)


def compute_optimal_section(ctx):
    title = "Compute-optimal allocation, every approach"
    found = answer.identified(ctx)
    if not found:
        return one_line(title, "No approach is identified.")
    rows = []
    for name, m in found:
        for r in m.compute_optimal(ctx.budgets).itertuples():
            ci = ""
            if name == "Approach 3" and ctx.boot is not None:
                ci = _ci_text(*ctx.boot.ci.get(f"N_opt@{r.flops:.3g}", (np.nan, np.nan)))
            rows.append(
                {
                    "method": name,
                    "flops": r.flops,
                    "N_opt": r.n_params,
                    "D_opt": r.tokens,
                    "D/N": r.tokens_per_param,
                    "loss": r.loss,
                    "95% CI N_opt": ci,
                }
            )
    ctx.results["compute_optimal"] = pd.DataFrame(rows)
    parts = [md_table(ctx.results["compute_optimal"])]
    figs = {}
    if ctx.approach3.success_:
        figs["compute_optimal.png"] = plots.compute_optimal_panels(
            ctx.base, ctx.budgets, ctx.approach3, ctx.boot, found[1:]
        )
        parts.append(fig_ref("compute_optimal.png", "Compute-optimal N and D vs C"))
    return section(title, parts, figs)


def validation_section(ctx):
    title = "Validation of the fit"
    fit, ex = ctx.approach3, ctx.extrapolation
    if not fit.success_:
        return one_line(title, "Not possible: Approach 3 is not identified.")
    parts = [
        esc(
            f"Extrapolation: fitted on {ex.n_fit} runs with C ≤ {ex.threshold:.3g}, predicted "
            f"{ex.n_test} above: mean relative error {ex.mean_rel_error:.2%}, max "
            f"{ex.max_rel_error:.2%}."
        )
        if ex.success
        else esc("Extrapolation test not possible: " + ex.message)
    ]
    parts.append(md_table(ctx.results["residuals"].reset_index()))
    parts.append(fig_ref("validation.png", "Residuals and extrapolation"))
    return section(title, parts, {"validation.png": plots.validation_panels(ctx.base, fit, ex, ex.threshold)})


def settings_section(ctx):
    """Approach 3 per other setting (MoE settings in active parameters, other architectures)."""
    title = "Other settings, each fitted on its own"
    if not ctx.others:
        return one_line(title, f"Every point belongs to setting {ctx.base_label!r}.")
    rows = []
    for label, fit in ctx.setting_fits.items():
        res = fit.result_
        co = fit.compute_optimal(ctx.budgets) if res.success else None
        rows.append(
            {
                "setting": label,
                "points": res.n_points,
                **{k: res.params.get(k) for k in ("E", "A", "B", "alpha", "beta")},
                "a": res.exponents.get("a"),
                "b": res.exponents.get("b"),
                f"D/N at {answer.budget_key(ctx.budgets[0])}": co["tokens_per_param"].iloc[0]
                if co is not None
                else np.nan,
                "status": "ok" if res.success else res.message,
            }
        )
    return section(
        title,
        [esc("Approach 3 per setting; MoE settings in active parameters."), md_table(pd.DataFrame(rows))],
    )


def moe_section(ctx):
    title = "Mixture of experts across expert counts"
    moe = ctx.moe_frame()
    if moe is None:
        return one_line(title, "No MoE runs in this study.")
    clark = fit_clark(pd.concat([ctx.base, moe]))
    kraj = fit_krajewski(moe) if "granularity" in moe else None
    ctx.results.update(clark=clark, krajewski=kraj)
    parts = [
        esc(
            "Clark et al. (log L = a log N + b log Ê + c log N log Ê + d): "
            + (
                ", ".join(f"{k}={v:.4g}" for k, v in clark.coef_.items())
                if clark.success_
                else clark.message_
            )
        )
    ]
    if kraj is not None:
        parts.append(
            esc(
                "Krajewski et al. (L = c + (a + g/G^γ)·N^−α + b·D^−β): "
                + (
                    ", ".join(f"{k}={v:.4g}" for k, v in kraj.params_.items())
                    if kraj.success_
                    else kraj.message_
                )
            )
        )
    if not ctx.approach3.success_:
        return section(
            title,
            parts + [esc("Effective parameter counts need a dense Approach 3 fit, which is unavailable.")],
        )
    eff = moe_effective_table(moe, ctx.approach3, budgets=ctx.budgets, per_config=ctx.moe_per_config())
    ctx.results["moe_effective"] = eff
    cols = [
        c
        for c in (
            "source",
            "experts",
            "top_k",
            "granularity",
            "n_params_active",
            "flops",
            "tokens",
            "loss",
            "n_eff",
            "n_eff_over_active",
        )
        if c in eff
    ]
    laws, runs = eff[eff["source"] != "run"], eff[eff["source"] == "run"]
    parts += [
        esc("Effective dense parameter count (dense N reaching the same loss at the same D):"),
        md_table((laws if len(laws) else eff)[cols]),
    ]
    beyond = int((~np.isfinite(runs["n_eff"].astype(float))).sum())
    if beyond:
        parts.append(
            esc(
                f"{beyond} of {len(runs)} MoE run(s) reach a loss below the dense law's floor at their D "
                "(E + B/D^β): no dense model of any size matches them there, so their multiplier is "
                "unbounded (— in tables, left out of the plot)."
            )
        )
    parts.append(fig_ref("moe.png", "MoE comparison"))
    return section(title, parts, {"moe.png": plots.moe_multiplier(runs)})


# --------------------------------------------------------------- sections of other modules


def _base_points(ctx):
    """The baseline setting's points (laws are never fitted across settings)."""
    from dataclasses import replace

    return replace(ctx.points, frame=ctx.base.reset_index(drop=True))


def forms_section(ctx):
    """Law forms scored by extrapolation to the largest runs (analysis.forms)."""
    from .forms import form_selection_section

    return form_selection_section(_base_points(ctx))


def constrained_section(ctx):
    """Muennighoff's data-constrained law, when runs repeat data (analysis.constrained)."""
    from .constrained import constrained_section as section_of

    return section_of(_base_points(ctx))


def architecture_section(ctx):
    """Architectures (grid.arch) compared within each objective and MoE setting (analysis.compare)."""
    from .compare import architecture_section as section_of

    return section_of(ctx.frame, n_boot=50, seed=ctx.seed)


def families_section(ctx):
    """Model families (GPT, BERT, T5) under different objectives, compared by exponents,
    allocations and multipliers, never by raw losses (analysis.families)."""
    from .families import families_section as section_of

    return section_of(ctx.frame, n_boot=50, seed=ctx.seed)


def planner_section(ctx):
    """The answer's interval against FLOPs spent, per adaptive round when there are rounds."""
    from .planner import planner_section as section_of

    if not ctx.budgets:
        return None
    f = ctx.base
    return section_of(f, float(max(ctx.budgets)), round_col="round" if "round" in f else None)
