"""The report's other sections: validation, other settings, MoE, data-constrained scaling,
architectures, the interval against compute spent, and tested predictions. Like
sections.py, each only reads the ReportContext."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..selection import predict_theta
from ..verdict import budget_key
from . import plots
from .doc import esc, fig_ref, md_table, one_line, section


def validation_section(ctx):
    title = "Validation of the fit"
    ans, fit = ctx.answer, ctx.approach3
    if fit is None or not fit.success_:
        return one_line(title, "Not possible: Approach 3 is not identified.")
    sel, form = ans.selection, ans.form
    parts = []
    held, thr = None, None
    if form in sel.fold_errors:
        P = np.asarray(ctx.base["loss"], float)
        rows = []
        for k, t in enumerate(sel.folds.thresholds):
            tr = sel.folds.train[k]
            rows.append(
                {
                    "fitted on C <=": f"{t:.3g}",
                    "runs fitted": int(tr.sum()),
                    "runs held out": int((~tr).sum()),
                    f"{form}: mean abs. rel. error": f"{sel.fold_errors[form][k]:.2%}",
                }
            )
        parts.append(
            esc(
                f"Cross-validation over compute, the {form} form (the answer's): fitted on the cheaper runs, "
                f"scored on the more expensive ones. Mean over folds: {ans.cv_error:.2%}; this is the CV "
                "error the verdict uses."
            )
        )
        parts.append(md_table(pd.DataFrame(rows)))
        k = int(np.argmin(sel.folds.train.sum(1)))
        test = ~sel.folds.train[k]
        b = ctx.base[test]
        pred = predict_theta(sel.fold_thetas[form][k][None, :], b["n_params"], b["tokens"])[0]
        held = pd.DataFrame({"loss": P[test], "predicted": pred})
        thr = float(sel.folds.thresholds[k])
    else:
        parts.append(esc(f"No cross-validation: {sel.scores.get(form, 'no form tested')}."))
    if ctx.residuals is not None:
        parts.append(esc("Log residuals of the answer's law by compute decile:"))
        parts.append(md_table(ctx.residuals.reset_index()))
    parts.append(fig_ref("validation.png", "Residuals and held-out runs"))
    return section(title, parts, {"validation.png": plots.validation_panels(ctx.base, fit, held, thr)})


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
                f"D/N at {budget_key(ctx.budgets[0])}": co["tokens_per_param"].iloc[0]
                if co is not None
                else np.nan,
                "status": "ok" if res.success else res.message,
            }
        )
    return section(
        title,
        [
            esc(
                "Approach 3, free form, per setting; MoE settings in active parameters. The answer is the baseline's."
            ),
            md_table(pd.DataFrame(rows)),
        ],
    )


def moe_section(ctx):
    title = "Mixture of experts across expert counts"
    if ctx.moe is None:
        return one_line(title, "No MoE runs in this study.")
    clark, kraj, eff = ctx.moe["clark"], ctx.moe["krajewski"], ctx.moe["effective"]
    coef = ", ".join(f"{k}={v:.4g}" for k, v in clark.coef_.items()) if clark.success_ else clark.message_
    parts = [esc("Clark et al. (log L = a log N + b log Ê + c log N log Ê + d): " + coef)]
    if kraj is not None:
        kp = ", ".join(f"{k}={v:.4g}" for k, v in kraj.params_.items()) if kraj.success_ else kraj.message_
        parts.append(esc("Krajewski et al. (L = c + (a + g/G^γ)·N^−α + b·D^−β): " + kp))
    if eff is None:
        return section(
            title,
            parts + [esc("Effective parameter counts need a dense Approach 3 fit, which is unavailable.")],
        )
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
        esc(
            f"Effective dense parameter count (dense N reaching the same loss at the same D, under the answer's {ctx.answer.form} law):"
        ),
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


def constrained_section(ctx):
    """Muennighoff's data-constrained law, when runs repeat data (fitted in the context)."""
    fit = ctx.constrained
    if fit is None:
        return None
    df = fit.frame_
    rows = ["| parameter | value | 95% interval | flat | at bound |", "|---|---|---|---|---|"]
    for k in ("R_D_star", "R_N_star"):
        ci = fit.ci95_.get(k)
        val = fit.params_.get(k, float("nan"))
        side = getattr(fit, "one_sided_", {}).get(k)
        shown = f"{side[0]} {side[1]:.4g}" if side else f"{val:.4g}"
        rows.append(
            f"| {k} | {shown} | "
            + (f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "-")
            + f" | {fit.flat_.get(k, '-')} | {fit.at_bound_.get(k, '-')} |"
        )
    md = (
        f"Muennighoff et al. (2023) decay of repeated data and excess parameters, fitted on "
        f"{len(df)} runs ({int(np.sum(df.tokens > df.unique_tokens))} repeat data). "
        f"{esc(fit.message_)}.\n\n" + "\n".join(rows)
    )
    return {"title": "Data-constrained scaling", "markdown": md, "figures": {}}


def architecture_section(ctx):
    """Architectures (grid.arch) compared within each objective and MoE setting (analysis.compare)."""
    from .compare import section_from

    if ctx.architecture is None:
        return None
    comps, lengths = ctx.architecture
    return section_from(ctx.frame, comps, lengths)


def families_section(ctx):
    """Model families (GPT, BERT, T5) under different objectives, compared by exponents,
    allocations and multipliers, never by raw losses (analysis.families)."""
    from .families import section as section_of

    return section_of(ctx.frame, ctx.families) if ctx.families else None


def planner_section(ctx):
    """The interval of N_opt at the largest budget against the FLOPs spent (Laplace, the
    planner's model), ending with the answer's own bootstrap interval."""
    hist = ctx.planner
    if not hist or not ctx.budgets:
        return None
    import matplotlib.pyplot as plt

    C = float(max(ctx.budgets))
    r = ctx.answer.row(C) if ctx.answer.ok else None
    x = [h["flops_spent"] for h in hist]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.fill_between(
        x, [h["lo"] for h in hist], [h["hi"] for h in hist], alpha=0.3, step="post", label="95% (Laplace)"
    )
    ax.plot(x, [h["value"] for h in hist], "o-", label="estimate (free form, Laplace)")
    if r is not None and np.isfinite(r["n_params_lo"]):
        ax.errorbar(
            [x[-1]],
            [r["n_params"]],
            yerr=[[r["n_params"] - r["n_params_lo"]], [r["n_params_hi"] - r["n_params"]]],
            fmt="s",
            color="k",
            label=f"the answer ({ctx.answer.form}, bootstrap)",
        )
    for h in hist:
        if h["round"] is not None:
            ax.annotate(f"r{h['round']}", (h["flops_spent"], h["hi"]), fontsize=7)
    ax.set(
        xscale="log", yscale="log", xlabel="cumulative training FLOPs spent", ylabel=f"N_opt at C = {C:.3g}"
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    lines = [
        f"The 95% interval of N_opt at C = {C:.3g} FLOPs as runs were added "
        f"({'per adaptive round' if hist[0]['round'] is not None else 'cheapest runs first'}). The history "
        "uses the planner's Laplace approximation of the free form (what `scalelab suggest` scores runs "
        "with); the last row is the answer's own interval (bootstrap with form selection), the one the "
        "answer, the headline and `suggest` quote.",
        "",
        "| points | FLOPs spent | round | estimate | 95% interval | method |",
        "|---|---|---|---|---|---|",
    ]
    for h in hist:
        rd = "" if h["round"] is None else str(h["round"])
        lines.append(
            f"| {h['n_points']} | {h['flops_spent']:.3g} | {rd} | {h['value']:.4g} | [{h['lo']:.4g}, {h['hi']:.4g}] | Laplace |"
        )
    if r is not None:
        lines.append(
            f"| {len(ctx.base)} | {x[-1]:.3g} | | {r['n_params']:.4g} | [{r['n_params_lo']:.4g}, {r['n_params_hi']:.4g}] "
            f"| the answer ({ctx.answer.form}) |"
        )
    return {
        "title": "Uncertainty of the compute-optimal answer vs compute spent",
        "markdown": "\n".join(lines),
        "figures": {"planner_ci.png": fig},
    }


def _iv(ci) -> str:
    return "[" + ", ".join("open" if v is None or not math.isfinite(v) else f"{v:.4g}" for v in ci) + "]"


def tested_section(ctx):
    """`scalelab verify` runs: the prediction at a budget tested by training (None without them)."""
    if not ctx.tested:
        return None
    parts, figs = [], {}
    for t in ctx.tested:
        p, m = t["predicted"], t["isoflop_min"]
        key = budget_key(t["budget"])
        parts.append(
            f"**C = {key} FLOPs: {'held' if t['held'] else 'did not hold'}.** "
            + esc(
                f"Predicted optimum on this IsoFLOP line: N {p['n_params']:.4g} {_iv(p['n_params_ci95'])}, loss "
                f"{p['loss']:.4g} {_iv(p['ci95'])}. Observed minimum (parabola in log N): "
                + (f"N {m['n_params']:.4g} {_iv(m['ci95'])}" if m["n_params"] else f"none {_iv(m['ci95'])}")
                + f". {t['reason']}."
            )
        )
        obs = pd.DataFrame(
            [
                {
                    "N": o["n_params"],
                    "D": o["tokens"],
                    "observed loss": o["loss"],
                    "predicted": o["predicted"],
                    "95% interval": _iv(o["ci95"]),
                    "inside": o["ci95"][0] <= o["loss"] <= o["ci95"][1],
                }
                for o in t["observed"]
            ]
        )
        parts.append(md_table(obs))
        name = f"tested_{key}.png"
        figs[name] = plots.tested_prediction(t)
        parts.append(fig_ref(name, f"Tested prediction at {key} FLOPs"))
    parts.append(
        esc(
            "Verify runs (tag scalelab.origin=verify) are never fitted: the prediction they test is the one "
            "the other runs make. They are drawn in 'Fitted vs observed' against the answer."
        )
    )
    return section("Tested prediction", parts, figs)
