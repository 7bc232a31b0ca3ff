"""The report's sections about the answer: each takes the fitted results (a ReportContext) and
returns a section dict `{"title", "markdown", "figures": {name.png: Figure}}` (or None).

Sections only read the context (the answer and FitResults): nothing is fitted here, so every
section names the same form and quotes the same intervals. A section whose law is
unidentifiable, or whose approach is not applicable to the data, says so in one line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..verdict import budget_key
from . import plots
from .doc import esc, fig_ref, fmt, md_list, md_table, one_line, section


def _ci_text(lo, hi) -> str:
    return f"[{fmt(lo, 3)}, {fmt(hi, 3)}]" if np.isfinite(lo) and np.isfinite(hi) else "—"


def _form_text(ans) -> str:
    return f"Approach 3, {ans.form} form"


def answer_section(ctx):
    """The answer first: N_opt, D_opt, D/N and loss per budget with 95% intervals, the decades
    beyond the largest run, the exponents, the cross-checks, and the verdict. No plots."""
    title = "Answer: compute-optimal allocation"
    ans = ctx.answer
    rows = ans.rows
    if not ans.ok or not len(rows):
        return one_line(
            title,
            f"No Approach 3 form is identified on the {len(ctx.base)} points of setting "
            f"{ctx.base_label!r} ({ans.selection.reason}); see the sections below for why.",
        )
    cols = {
        lab: [f"{fmt(v)} {_ci_text(lo, hi)}" for v, lo, hi in zip(rows[k], rows[f"{k}_lo"], rows[f"{k}_hi"])]
        for lab, k in (
            ("N_opt [95% CI]", "n_params"),
            ("D_opt [95% CI]", "tokens"),
            ("tokens/param [95% CI]", "tokens_per_param"),
            ("loss [95% prediction interval]", "loss"),
        )
    }
    table = pd.DataFrame(
        {
            "budget C (FLOPs)": [budget_key(c) for c in rows["flops"]],
            "decades beyond largest run": [f"{d:+.2f}" for d in rows["decades_beyond"]],
            **cols,
            "N_opt interval width": [f"{w:.3g}x" if np.isfinite(w) else "—" for w in rows["width"]],
            "trust": rows["verdict"],
        }
    )
    intro = (
        f"From {_form_text(ans)} (L = E + A/N^α + B/D^β; the form chosen by cross-validation over "
        f"compute, see Law form selection) on the {len(ctx.base)} points of setting {ctx.base_label!r} "
        f"(largest run: {fmt(ans.cmax, 3)} FLOPs). N_opt ~ C^a and D_opt ~ C^b; C = 6ND."
    )
    if ans.n_resamples:
        freq = pd.Series(ans.chosen).value_counts()
        ci_note = (
            f"95% intervals from a bootstrap over {ans.resample} ({ans.n_resamples} resamples) that "
            f"repeats the form choice in each (chosen: "
            + ", ".join(f"{k} {v}" for k, v in freq.items())
            + "), so they include the uncertainty of the form; loss intervals are prediction intervals "
            "(the law plus the noise a run shows around it)."
        )
    else:
        ci_note = "No bootstrap: intervals not computed."
    verdict = "\n".join(f"- {esc(v.line())}" for v in ans.verdicts)
    return section(
        title,
        [
            esc(intro),
            md_table(table),
            esc(ci_note),
            md_table(exponent_rows(ctx)),
            "**Verdict:**\n\n" + verdict,
        ],
    )


def exponent_rows(ctx) -> pd.DataFrame:
    """a and b (N_opt ~ C^a, D_opt ~ C^b): the answer's, with intervals, and every cross-check
    approach's where applicable (else why not)."""
    ans = ctx.answer
    ci = ans.fit.ci95
    rows = [
        {
            "approach": "Approach 3",
            "form": ans.form,
            "a": fmt(ans.fit.exponents.get("a")),
            "a 95% CI": _ci_text(*ci.get("a", (np.nan, np.nan))),
            "b": fmt(ans.fit.exponents.get("b")),
            "b 95% CI": _ci_text(*ci.get("b", (np.nan, np.nan))),
            "status": "the answer",
        }
    ]
    for name, a in ans.approaches.items():
        rows.append(
            {
                "approach": name,
                "form": "—",
                "a": fmt(a.get("a")),
                "a 95% CI": "—",
                "b": fmt(a.get("b")),
                "b 95% CI": "—",
                "status": "cross-check" if a["applicable"] else a["reason"],
            }
        )
    return pd.DataFrame(rows)


def data_section(ctx):
    pts, base = ctx.points, ctx.base
    notes = [f"excluded {k}: {v}" for k, v in pts.excluded.items()] or ["no runs excluded"]
    notes += ctx.answer.points.notes
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
        f"setting {ctx.base_label!r} ({len(base)} points)"
        + (f"; {len(ctx.others)} other setting(s) are fitted separately" if ctx.others else "")
    )
    cols = ("n_params", "tokens", "flops", "loss")
    summ = pd.DataFrame(
        {
            "quantity": ["N (params)", "D (tokens)", "C (FLOPs)", f"loss ({ctx.points.loss_unit})"],
            "min": [base[c].min() for c in cols],
            "max": [base[c].max() for c in cols],
            "distinct": [base[c].nunique() for c in cols],
        }
    )
    return section(
        "Data",
        [
            esc(
                f"{len(ctx.frame)} points in the study; {len(base)} in the baseline setting "
                f"{ctx.base_label!r}, which the table describes; {pts.n_excluded} excluded before fitting."
            ),
            md_list(notes),
            md_table(summ),
        ],
    )


def _every_point(ctx) -> tuple[dict, dict, str]:
    """The groups for the fitted-vs-observed plot and a caption saying what it leaves out."""
    groups = ctx.fitted_groups()
    extra = {}
    vf = ctx.verify_frame
    if vf is not None and len(vf) and ctx.answer.ok:
        extra["verify runs (not fitted)"] = (
            vf,
            ctx.answer.predict(vf["n_params"], vf["tokens"])["predicted"],
        )
    drawn = sum(len(f) for f, _ in groups.values()) + sum(len(f) for f, _ in extra.values())
    left = len(ctx.frame) - drawn
    cap = "Fitted vs observed loss, every point"
    if left:
        missing = [k for k in ctx.others if k not in groups]
        cap = (
            f"Fitted vs observed loss: {drawn} of {len(ctx.frame)} points; the {left} of settings "
            f"without an identified law ({', '.join(missing) or 'none'}) are not drawn"
        )
    return groups, extra, cap


def approach3_section(ctx):
    ans = ctx.answer
    title = "Chinchilla Approach 3: L(N, D) = E + A/N^α + B/D^β"
    fit = ctx.approach3
    if fit is None or not fit.success_:
        return one_line(title, "Approach 3 is not identified: " + ans.selection.reason)
    ci = ans.fit.ci95
    rows = []
    for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
        lo, hi = ci.get(k, (np.nan, np.nan))
        name = k if k not in ("a", "b") else f"exponent {k} (N_opt~C^a, D_opt~C^b)"
        val = ans.fit.params[k] if k in ans.fit.params else ans.fit.exponents[k]
        rows.append({"parameter": name, "estimate": val, "95% CI low": lo, "95% CI high": hi})
    parts = [
        esc(
            f"The answer's law: the {ans.form} form, fitted on all {len(ctx.base)} points (Huber δ=1e-3 on "
            f"log loss for free/tied/fixed-e, least squares on the loss for gadre); {fit.message_}."
        ),
        md_table(pd.DataFrame(rows)),
        esc(
            f"Objective {fit.objective_:.6g}; converged: {fit.converged_}; identifiable: {fit.identifiable_}."
        ),
    ]
    ent = ctx.entropy
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
    groups, extra, cap = _every_point(ctx)
    figs = {
        "fitted_vs_observed.png": plots.fitted_vs_observed(groups, extra),
        "loss_vs_compute.png": plots.loss_vs_compute(ctx.base, fit),
        "loss_vs_n.png": plots.loss_vs_x(ctx.base, fit, "tokens", "n_params"),
        "loss_vs_d.png": plots.loss_vs_x(ctx.base, fit, "n_params", "tokens"),
    }
    parts += [
        fig_ref(n, c)
        for n, c in (
            ("fitted_vs_observed.png", cap),
            ("loss_vs_compute.png", "Loss vs compute, frontier and Approach 3"),
            ("loss_vs_n.png", "L vs N at fixed D"),
            ("loss_vs_d.png", "L vs D at fixed N"),
        )
    ]
    return section(f"{title} ({ans.form} form)", parts, figs)


def forms_section(ctx):
    """Law forms scored by cross-validation over compute: the answer's own selection."""
    sel = ctx.answer.selection
    if not sel.candidates:
        return None
    return {"title": "Law form selection", "markdown": selection_markdown(sel), "figures": {}}


def form_selection_section(points, *, fixed_E=None, holdout_flops=None) -> dict | None:
    """The "Law form selection" section for bare Points: runs the selection (analysis.selection)
    and renders it. The report renders its answer's selection instead (forms_section)."""
    from ..selection import select_form

    E = fixed_E if fixed_E is not None else getattr(points, "true_entropy", None)
    sel = select_form(points.N, points.D, points.loss, points.C, holdout_flops=holdout_flops, fixed_E=E)
    if sel["chosen"] is None and not sel["table"]:
        return None
    return {"title": "Law form selection", "markdown": selection_markdown(sel["selection"]), "figures": {}}


def selection_markdown(sel) -> str:
    thr = ", ".join(f"{t:.3g}" for t in sel.folds.thresholds)
    lines = [
        "| form | free parameters | CV error (mean abs. rel.) | per fold | status |",
        "|---|---|---|---|---|",
    ]
    for f in sel.candidates:
        s = sel.scores[f]
        folds = ", ".join(f"{e:.2%}" for e in sel.fold_errors.get(f, [])) or "—"
        score = "—" if isinstance(s, str) else f"{s:.2%}"
        status = "chosen" if f == sel.chosen else (esc(s[:90]) if isinstance(s, str) else "")
        lines.append(f"| {f} | {5 if f == 'free' else 4} | {score} | {folds} | {status} |")
    return (
        f"**Chosen form: {sel.chosen or 'none'}.** {esc(sel.reason)}\n\n"
        + "\n".join(lines)
        + "\n\n"
        + esc(
            f"Cross-validation over compute: each form is fitted on the runs below a compute threshold "
            f"({thr or 'none possible'}) and scored on the runs above it; a fold counts only when its fit "
            "set keeps >= 3 model sizes and >= 3 token budgets. A form within 10% (or 0.01 points) of the "
            "best with fewer parameters wins. The answer, the headline and `scalelab fit` use this form."
        )
    )


def landscape_section(ctx):
    title = "Loss landscape over (N, D)"
    a3 = ctx.approach3
    if a3 is None or not a3.success_:
        return one_line(title, "Not drawn: Approach 3 is not identified.")
    return section(
        title,
        [
            esc(
                f"Fitted loss of the answer's law ({ctx.answer.form} form); dashed: IsoFLOP lines C = 6ND at "
                "the data's and the requested budgets; red: the fitted optimum."
            ),
            fig_ref("landscape.png", "Loss landscape"),
        ],
        {"landscape.png": plots.landscape(ctx.base, a3, ctx.budgets)},
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
    drawn = {k: v for k, v in ctx.kaplan.items() if (", with E" in k or "frontier" in k) and v[0].success_}
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
    a = ctx.answer.approaches["Approach 2"]
    iso = a["estimator"]
    if not a["applicable"]:
        return one_line(title, a["reason"] + " (a cross-check only: it does not vote in the verdict)")
    shown = iso.parabolas_[iso.parabolas_["n_runs"] >= iso.min_runs]
    parts = [esc(iso.message_ + " A cross-check of the answer: it votes only against a 'good' verdict.")]
    skipped = len(iso.parabolas_) - len(shown)
    if skipped:
        parts.append(
            esc(
                f"{skipped} budget group(s) with fewer than {iso.min_runs} runs are not IsoFLOP profiles and are skipped."
            )
        )
    parts += [
        md_table(shown[["budget", "n_runs", "n_opt", "d_opt", "loss_opt", "in_range", "note"]]),
        fig_ref("isoflop.png", "IsoFLOP profiles"),
    ]
    return section(title, parts, {"isoflop.png": plots.isoflop_profiles(ctx.base, iso)})


def approach1_section(ctx):
    title = "Chinchilla Approach 1: the compute frontier of final losses"
    a = ctx.answer.approaches["Approach 1"]
    env = a["estimator"]
    why = (
        "Each run contributes its final loss only: intermediate evaluations of a cosine run lie above "
        "the loss a run of that length reaches, so its curve is drawn, never fitted."
    )
    parts = [esc((env.message_ if a["applicable"] else a["reason"]) + ". " + why)]
    figs = {}
    if ctx.curves is not None and len(ctx.curves):
        figs["training_curves.png"] = plots.training_curves(ctx.curves, getattr(env, "envelope_", None))
        n_pts = ctx.curves.groupby("run_id").size()
        parts.append(
            esc(
                f"{len(n_pts)} curves with {int(n_pts.min())} to {int(n_pts.max())} evaluations each "
                "(train.eval_schedule: log gives one per doubling of tokens)."
            )
        )
        parts.append(fig_ref("training_curves.png", "Training curves, final points and their frontier"))
    if not a["applicable"]:
        parts.append(esc("Not applicable here, so it does not vote in the verdict."))
    return section(title, parts, figs)


def compute_optimal_section(ctx):
    title = "Compute-optimal allocation, every approach"
    ans = ctx.answer
    if not ans.ok:
        return one_line(title, "No approach is identified.")
    rows = [
        {
            "method": f"{_form_text(ans)} (the answer)",
            "flops": r["flops"],
            "N_opt": r["n_params"],
            "D_opt": r["tokens"],
            "D/N": r["tokens_per_param"],
            "loss": r["loss"],
            "95% CI N_opt": _ci_text(r["n_params_lo"], r["n_params_hi"]),
        }
        for r in ans.rows.to_dict("records")
    ]
    others = []
    for name, a in ans.approaches.items():
        if not a["applicable"]:
            continue
        others.append((name, a["estimator"]))
        for r in a["estimator"].compute_optimal(ctx.budgets).itertuples():
            rows.append(
                {
                    "method": name,
                    "flops": r.flops,
                    "N_opt": r.n_params,
                    "D_opt": r.tokens,
                    "D/N": r.tokens_per_param,
                    "loss": r.loss,
                    "95% CI N_opt": "—",
                }
            )
    ctx.results["compute_optimal"] = pd.DataFrame(rows)
    na = [f"{k}: {a['reason']}" for k, a in ans.approaches.items() if not a["applicable"]]
    parts = [md_table(ctx.results["compute_optimal"])] + ([md_list(na)] if na else [])
    good = ans._good()
    fig = plots.compute_optimal_panels(ctx.base, ctx.budgets, ctx.approach3, ans.thetas[good], others)
    parts.append(fig_ref("compute_optimal.png", "Compute-optimal N and D vs C"))
    return section(title, parts, {"compute_optimal.png": fig})
