"""The study report: one self-contained HTML page (PNG plots base64-embedded) + summary.md.

write_report(points, out_dir, ...) fits everything the data supports, writes report.html and
summary.md (and the PNGs, for the MLflow artifact view), and returns ReportPaths.
log_report_to_mlflow(out_dir, experiment, tracking_uri) logs them on the study's parent run.
Each section that cannot be fitted on this data says why instead of being silently omitted.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .bootstrap import bootstrap_chinchilla  # noqa: E402
from .chinchilla import ChinchillaFit  # noqa: E402
from .data import Points  # noqa: E402
from .isoflop import envelope_fit, isoflop_fit  # noqa: E402
from .kaplan import PowerLawFit, kaplan_per_variable, lower_envelope  # noqa: E402
from .moe import fit_clark, fit_krajewski, fit_moe_per_config, is_dense, moe_effective_table  # noqa: E402
from .validate import entropy_check, extrapolation_test, residuals_by_decile  # noqa: E402

PFDAY = 8.64e19


@dataclass
class ReportPaths:
    html: Path
    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)
    results: dict = field(default_factory=dict)


def _fmt(v, p=4):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(v)
    return f"{v:.{p}g}"


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) if not isinstance(r[c], str) else r[c] for c in cols) + " |")
    return "\n".join(lines)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(
        f"<td>{html.escape(r[c] if isinstance(r[c], str) else _fmt(r[c]))}</td>" for c in df.columns)
        + "</tr>" for _, r in df.iterrows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Doc:
    """Collects sections for both outputs."""

    def __init__(self, out_dir: Path):
        self.html: list[str] = []
        self.md: list[str] = []
        self.figs: dict[str, Path] = {}
        self.out = out_dir

    def h(self, text, level=2):
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md.append("#" * level + " " + text + "\n")

    def p(self, text):
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md.append(text + "\n")

    def ul(self, items):
        if not items:
            return
        self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
        self.md.append("\n".join(f"- {i}" for i in items) + "\n")

    def table(self, df):
        self.html.append(_html_table(df))
        self.md.append(_md_table(df) + "\n")

    def fig(self, name, fig, caption):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        data = buf.getvalue()
        path = self.out / f"{name}.png"
        path.write_bytes(data)
        self.figs[name] = path
        b64 = base64.b64encode(data).decode()
        self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}"/>'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        self.md.append(f"![{caption}]({name}.png)\n")


def _cmap(values):
    v = np.log(np.asarray(values, float))
    lo, hi = v.min(), v.max()
    return plt.cm.viridis((v - lo) / (hi - lo if hi > lo else 1.0))


def _points_plot(frame, fit):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sc = ax.scatter(frame["flops"], frame["loss"], c=np.log10(frame["n_params"]), cmap="viridis", s=14)
    fig.colorbar(sc, ax=ax, label="log10 N (parameters)")
    m = lower_envelope(frame["flops"], frame["loss"])
    fr = frame[m].sort_values("flops")
    ax.plot(fr["flops"], fr["loss"], "k-", lw=0.8, label="frontier (lower envelope)")
    if fit is not None and fit.success_:
        C = np.logspace(np.log10(frame["flops"].min()), np.log10(frame["flops"].max()) + 1, 100)
        co = fit.compute_optimal(C)
        ax.plot(C, co["loss"], "r-", label="Approach 3 at compute-optimal N, D")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title("Loss vs compute")
    ax.legend(fontsize=8)
    return fig


def _lvn_plot(frame, fit, by, x):
    """L vs x ('n_params' or 'tokens') for each value of `by`, with the fitted law."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = sorted(frame[by].unique())
    if len(groups) > 12:   # bin when every run has its own value (digitised data)
        edges = np.quantile(np.log(frame[by]), np.linspace(0, 1, 7))
        lab = np.clip(np.searchsorted(edges, np.log(frame[by]), side="right") - 1, 0, 5)
        frame = frame.assign(_g=lab)
        reps = frame.groupby("_g")[by].apply(lambda v: float(np.exp(np.log(v).mean())))
        key = "_g"
        groups = list(reps.index)
        label = {g: f"{by}≈{reps[g]:.2g}" for g in groups}
        value = reps.to_dict()
    else:
        key = by
        label = {g: f"{by}={g:.3g}" for g in groups}
        value = {g: g for g in groups}
    colors = _cmap([value[g] for g in groups])
    xs = np.logspace(np.log10(frame[x].min()) - 0.2, np.log10(frame[x].max()) + 0.2, 100)
    for g, col in zip(groups, colors):
        sub = frame[frame[key] == g]
        ax.scatter(sub[x], sub["loss"], color=col, s=14, label=label[g])
        if fit is not None and fit.success_:
            yv = fit.predict(xs, value[g]) if x == "n_params" else fit.predict(value[g], xs)
            ax.plot(xs, yv, color=col, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel({"n_params": "N (parameters)", "tokens": "D (training tokens)"}[x])
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title(f"L vs {'N' if x == 'n_params' else 'D'} at fixed {'D' if by == 'tokens' else 'N'}"
                 " (lines: Approach 3)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def write_report(points: Points, out_dir, *, true_entropy=None, budgets=None, curves=None,
                 n_bootstrap: int = 200, seed: int = 0, title: str | None = None,
                 grid="hoffmann") -> ReportPaths:
    """Fit everything the data supports and write report.html + summary.md (+ PNGs) to out_dir.
    grid: start grid of the Approach 3 fits ("hoffmann": 4500 starts; "coarse": 1024)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = _Doc(out)
    frame = points.frame.copy()
    true_entropy = true_entropy if true_entropy is not None else points.true_entropy
    dense_mask = is_dense(frame)
    has_moe = (~dense_mask).any()
    dense = frame[dense_mask] if dense_mask.any() else frame
    if budgets is None:
        cmax = float(dense["flops"].max())
        budgets = [float(f"{cmax * k:.0e}") for k in (1, 10, 100)]
    results: dict = {"budgets": list(budgets)}

    doc.h(title or f"Scaling-law report: {points.source}", 1)
    # ---------------------------------------------------------------- data
    doc.h("Data")
    doc.p(f"{len(frame)} points used ({int(dense_mask.sum())} dense, {int((~dense_mask).sum())} MoE); "
          f"{points.n_excluded} excluded before fitting.")
    notes = [f"excluded {k}: {v}" for k, v in points.excluded.items()] or ["no runs excluded"]
    notes += points.notes
    notes.append("outlier policy: " + ("drop the highest-loss points as listed above"
                                       if "outlier (top-loss)" in points.excluded
                                       else "none (all finished runs kept); pass drop_top_loss to change"))
    notes.append("diverged, failed, killed and unfinished runs are excluded by default")
    doc.ul(notes)
    summ = pd.DataFrame({"quantity": ["N (params)", "D (tokens)", "C (FLOPs)", "loss (nats/token)"],
                         "min": [frame[c].min() for c in ("n_params", "tokens", "flops", "loss")],
                         "max": [frame[c].max() for c in ("n_params", "tokens", "flops", "loss")],
                         "distinct": [frame[c].nunique() for c in ("n_params", "tokens", "flops", "loss")]})
    doc.table(summ)

    # ---------------------------------------------------------------- Approach 3
    doc.h("Chinchilla Approach 3: L(N, D) = E + A/N^α + B/D^β")
    fit = ChinchillaFit(grid=grid).fit(dense["n_params"], dense["tokens"], dense["loss"])
    results["approach3"] = fit
    doc.p(f"Huber (δ=1e-3) on log loss, L-BFGS from {fit.n_starts_} starts; {fit.message_}.")
    boot = None
    if fit.success_:
        if n_bootstrap:
            boot = bootstrap_chinchilla(dense["n_params"], dense["tokens"], dense["loss"],
                                        n_resamples=n_bootstrap, seed=seed, budgets=budgets,
                                        full_fit=fit, groups=dense["run_id"] if "run_id" in dense else None)
            results["bootstrap"] = boot
        rows = []
        for k in ("E", "A", "B", "alpha", "beta"):
            ci = boot.ci.get(k, (np.nan, np.nan)) if boot else (np.nan, np.nan)
            rows.append({"parameter": k, "estimate": fit.params_[k], "95% CI low": ci[0], "95% CI high": ci[1]})
        for k in ("a", "b"):
            ci = boot.ci.get(k, (np.nan, np.nan)) if boot else (np.nan, np.nan)
            rows.append({"parameter": f"exponent {k} (N_opt~C^a, D_opt~C^b)", "estimate": fit.exponents_[k],
                         "95% CI low": ci[0], "95% CI high": ci[1]})
        doc.table(pd.DataFrame(rows))
        doc.p(f"Objective {fit.objective_:.6g}; converged: {fit.converged_}. "
              + (f"Bootstrap: {boot.message} (seed {seed})." if boot else "No bootstrap."))
        ent = entropy_check(fit.E_, true_entropy, boot.ci.get("E") if boot else None)
        results["entropy"] = ent
        if ent["available"]:
            doc.p(f"Known entropy of the data source: {ent['true_entropy']:.4f} nats; fitted E = "
                  f"{ent['fitted_E']:.4f} (difference {ent['difference']:+.4f}"
                  + (f", 95% CI {'covers' if ent['covered'] else 'does NOT cover'} the truth" if "covered" in ent else "")
                  + ").")
    else:
        doc.p("Approach 3 could not be fitted: " + fit.message_)
    doc.fig("loss_vs_compute", _points_plot(dense, fit), "Loss vs compute, frontier and Approach 3")
    doc.fig("loss_vs_n", _lvn_plot(dense, fit, "tokens", "n_params"), "L vs N at fixed D")
    doc.fig("loss_vs_d", _lvn_plot(dense, fit, "n_params", "tokens"), "L vs D at fixed N")

    # ---------------------------------------------------------------- Kaplan
    doc.h("Kaplan-style single-variable laws")
    krow = []
    kfits = {}
    for name, var, sel, xcol, irr in (
            ("L(N), with E", "N", kaplan_per_variable(dense, "N"), "n_params", True),
            ("L(N), pure power law", "N", kaplan_per_variable(dense, "N"), "n_params", False),
            ("L(D), with E", "D", kaplan_per_variable(dense, "D"), "tokens", True),
            ("L(D), pure power law", "D", kaplan_per_variable(dense, "D"), "tokens", False),
            ("L(C) frontier = a·C^b + c", "C", dense[lower_envelope(dense["flops"], dense["loss"])], "flops", True)):
        kf = PowerLawFit(variable=var, irreducible=irr).fit(sel[xcol], sel["loss"])
        kfits[name] = (kf, sel, xcol)
        krow.append({"law": name, "points": len(sel), "E (c)": kf.E_, "x_c": kf.x_c_, "alpha": kf.alpha_,
                     "a (coef)": kf.coef_, "b (exponent)": kf.exponent_, "status": kf.message_})
    results["kaplan"] = {k: v[0] for k, v in kfits.items()}
    doc.table(pd.DataFrame(krow))
    doc.p("L(N) uses the lowest loss per N (longest-trained run), L(D) the lowest loss per D, "
          "L(C) the lower envelope of (C, L).")
    fig, axs = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (name, xl) in zip(axs, (("L(N), with E", "N (parameters)"), ("L(D), with E", "D (tokens)"),
                                    ("L(C) frontier = a·C^b + c", "C (FLOPs)"))):
        kf, sel, xcol = kfits[name]
        ax.scatter(sel[xcol], sel["loss"], s=12)
        if kf.success_:
            xs = np.logspace(np.log10(sel[xcol].min()), np.log10(sel[xcol].max()) + 1, 100)
            ax.plot(xs, kf.predict(xs), "r-", label=f"E={kf.E_:.3g}, α={kf.alpha_:.3g}")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(name)
    doc.fig("kaplan", fig, "Kaplan single-variable fits")

    # ---------------------------------------------------------------- Approach 2
    doc.h("Chinchilla Approach 2: IsoFLOP profiles")
    iso = isoflop_fit(dense)
    results["approach2"] = iso
    doc.p(iso.message_)
    if len(iso.parabolas_):
        shown = iso.parabolas_[iso.parabolas_["n_runs"] >= iso.min_runs]
        skipped = len(iso.parabolas_) - len(shown)
        if skipped:
            doc.p(f"{skipped} budget group(s) with fewer than {iso.min_runs} runs are not IsoFLOP profiles and are skipped.")
        doc.table(shown[["budget", "n_runs", "n_opt", "d_opt", "loss_opt", "in_range", "note"]])
        fig, ax = plt.subplots(figsize=(7, 4.5))
        from .isoflop import group_budgets
        bud = dense["budget"].astype(float) if "budget" in dense else group_budgets(dense["flops"])
        good = iso.parabolas_[np.isfinite(iso.parabolas_["c2"])]
        cols = _cmap(good["budget"]) if len(good) else []
        for (_, r), col in zip(good.iterrows(), cols):
            sub = dense[np.isclose(bud, r["budget"])]
            ax.scatter(sub["n_params"], sub["loss"], color=col, s=14, label=f"C={r['budget']:.2g}")
            x = np.linspace(np.log(sub["n_params"].min()) - 0.3, np.log(sub["n_params"].max()) + 0.3, 100)
            u = x - r["log_n_center"]
            ax.plot(np.exp(x), r["c0"] + r["c1"] * u + r["c2"] * u * u, color=col, lw=1)
            if np.isfinite(r["n_opt"]):
                ax.plot(r["n_opt"], r["loss_opt"], "kx")
        ax.set_xscale("log")
        ax.set_xlabel("N (parameters)")
        ax.set_ylabel("final loss (nats/token)")
        ax.set_title("IsoFLOP curves with fitted parabolas in log N (x: minima)")
        if 0 < len(good) <= 12:
            ax.legend(fontsize=7, ncol=2)
        doc.fig("isoflop", fig, "IsoFLOP profiles")

    # ---------------------------------------------------------------- Approach 1
    doc.h("Chinchilla Approach 1: lower envelope of training curves")
    env = envelope_fit(curves if curves is not None and len(curves) else dense)
    results["approach1"] = env
    doc.p(env.message_ + ("" if curves is not None and len(curves) else
                          " (no loss curves given: envelope over final points only)"))

    # ---------------------------------------------------------------- compute-optimal
    doc.h("Compute-optimal allocation")
    rows = []
    methods = [("Approach 3", fit if fit.success_ else None), ("Approach 2", iso if iso.success_ else None),
               ("Approach 1", env if env.success_ else None)]
    for name, m in methods:
        if m is None:
            rows.append({"method": name, "flops": np.nan, "N_opt": np.nan, "D_opt": np.nan,
                         "D/N": np.nan, "loss": np.nan, "95% CI N_opt": "not fitted"})
            continue
        co = m.compute_optimal(budgets)
        for r in co.itertuples():
            ci = ""
            if name == "Approach 3" and boot is not None:
                lo, hi = boot.ci.get(f"N_opt@{r.flops:.3g}", (np.nan, np.nan))
                ci = f"[{lo:.3g}, {hi:.3g}]"
            rows.append({"method": name, "flops": r.flops, "N_opt": r.n_params, "D_opt": r.tokens,
                         "D/N": r.tokens_per_param, "loss": r.loss, "95% CI N_opt": ci})
    results["compute_optimal"] = pd.DataFrame(rows)
    doc.table(results["compute_optimal"])
    exps = pd.DataFrame([{"method": n, "a (N_opt ~ C^a)": (m.exponents_["a"] if n == "Approach 3" else m.a_) if m else np.nan,
                          "b (D_opt ~ C^b)": (m.exponents_["b"] if n == "Approach 3" else m.b_) if m else np.nan}
                         for n, m in methods])
    doc.table(exps)
    if fit.success_:
        Cs = np.logspace(np.log10(dense["flops"].min()), np.log10(max(budgets)), 60)
        fig, axs = plt.subplots(1, 2, figsize=(12, 4.2))
        co = fit.compute_optimal(Cs)
        for ax, col, lab in ((axs[0], "n_params", "N_opt (parameters)"), (axs[1], "tokens", "D_opt (tokens)")):
            ax.plot(Cs, co[col], "r-", label="Approach 3")
            if boot is not None:
                from .chinchilla import compute_optimal as _co
                good = boot.samples.dropna()
                curves_b = np.array([_co(r, Cs)[col].to_numpy() for r in
                                     good[["E", "A", "B", "alpha", "beta"]].to_dict("records")])
                ax.fill_between(Cs, np.percentile(curves_b, 2.5, axis=0), np.percentile(curves_b, 97.5, axis=0),
                                color="r", alpha=0.2, label="95% bootstrap band")
            for name, m in methods[1:]:
                if m is not None:
                    ax.plot(Cs, m.compute_optimal(Cs)[col], "--", label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("compute C (FLOPs)")
            ax.set_ylabel(lab)
            ax.legend(fontsize=8)
            ax2 = ax.secondary_xaxis("top", functions=(lambda c: c / PFDAY, lambda p: p * PFDAY))
            ax2.set_xlabel("PF-days")
        doc.fig("compute_optimal", fig, "Compute-optimal N and D vs C")

    # ---------------------------------------------------------------- validation
    doc.h("Validation of the fit")
    if fit.success_:
        thr = float(np.quantile(dense["flops"], 0.6))
        ex = extrapolation_test(dense["n_params"], dense["tokens"], dense["loss"], dense["flops"], threshold=thr,
                                fitter=ChinchillaFit(grid=grid))
        results["extrapolation"] = ex
        if ex.success:
            doc.p(f"Extrapolation: fitted on {ex.n_fit} runs with C ≤ {thr:.3g}, predicted {ex.n_test} above: "
                  f"mean relative error {ex.mean_rel_error:.2%}, max {ex.max_rel_error:.2%}.")
        else:
            doc.p("Extrapolation test not possible: " + ex.message)
        dec = residuals_by_decile(dense["n_params"], dense["tokens"], dense["loss"], fit.params_, dense["flops"])
        results["residuals"] = dec
        doc.table(dec.reset_index())
        fig, axs = plt.subplots(1, 2, figsize=(12, 4.2))
        r = np.log(fit.predict(dense["n_params"], dense["tokens"])) - np.log(dense["loss"])
        axs[0].scatter(dense["flops"], r, s=10)
        axs[0].axhline(0, color="k", lw=0.8)
        axs[0].set_xscale("log")
        axs[0].set_xlabel("compute C (FLOPs)")
        axs[0].set_ylabel("log L̂ − log L (residual)")
        axs[0].set_title("Residuals of Approach 3")
        if ex.success:
            axs[1].scatter(ex.table["loss"], ex.table["predicted"], s=12)
            lim = [ex.table[["loss", "predicted"]].min().min(), ex.table[["loss", "predicted"]].max().max()]
            axs[1].plot(lim, lim, "k-", lw=0.8)
            axs[1].set_title(f"Extrapolation to C > {thr:.2g} (fit below)")
        axs[1].set_xlabel("observed loss (nats/token)")
        axs[1].set_ylabel("predicted loss (nats/token)")
        doc.fig("validation", fig, "Residuals and extrapolation")

    # ---------------------------------------------------------------- MoE
    doc.h("Mixture of experts")
    if not has_moe:
        doc.p("No MoE runs in this study.")
    else:
        moe = frame[~dense_mask]
        per = fit_moe_per_config(moe)
        results["moe_per_config"] = per
        rows = [{"experts": k[0], "top_k": k[1] if len(k) > 1 else np.nan,
                 "granularity": k[2] if len(k) > 2 else np.nan, "E": f.E_, "A": f.A_, "B": f.B_,
                 "alpha": f.alpha_, "beta": f.beta_, "status": f.message_ if not f.success_ else "ok"}
                for k, f in per.items()]
        doc.p("Dense-style law in active parameters, per expert configuration:")
        doc.table(pd.DataFrame(rows))
        clark = fit_clark(frame)
        results["clark"] = clark
        doc.p("Clark et al. (log L = a log N + b log Ê + c log N log Ê + d): "
              + (", ".join(f"{k}={v:.4g}" for k, v in clark.coef_.items()) if clark.success_ else clark.message_))
        kraj = fit_krajewski(moe) if "granularity" in moe else None
        results["krajewski"] = kraj
        if kraj is not None:
            doc.p("Krajewski et al. (L = c + (a + g/G^γ)·N^−α + b·D^−β): "
                  + (", ".join(f"{k}={v:.4g}" for k, v in kraj.params_.items()) if kraj.success_ else kraj.message_))
        eff = moe_effective_table(frame, fit, budgets=budgets, per_config=per)
        results["moe_effective"] = eff
        if len(eff):
            doc.p("Effective dense parameter count (dense N reaching the same loss at the same D):")
            cols = [c for c in ("source", "experts", "top_k", "granularity", "n_params_active", "flops",
                                "tokens", "loss", "n_eff", "n_eff_over_active") if c in eff]
            doc.table(eff[eff["source"] != "run"][cols] if (eff["source"] != "run").any() else eff[cols])
            fig, ax = plt.subplots(figsize=(7, 4.5))
            runs = eff[eff["source"] == "run"]
            for e_, col in zip(sorted(runs["experts"].unique()), _cmap(sorted(runs["experts"].unique()))):
                sub = runs[runs["experts"] == e_]
                ax.scatter(sub["n_params_active"], sub["n_eff_over_active"], color=col, s=14, label=f"{e_:g} experts")
            ax.axhline(1, color="k", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("active parameters")
            ax.set_ylabel("effective dense N / active N")
            ax.set_title("MoE vs dense: effective parameter multiplier")
            ax.legend(fontsize=8)
            doc.fig("moe", fig, "MoE comparison")
        else:
            doc.p("Effective parameter counts need a dense Approach 3 fit, which is unavailable.")

    # ---------------------------------------------------------------- write
    css = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
           "table{border-collapse:collapse;margin:0.5em 0;font-size:0.85em}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
           "img{max-width:100%}figcaption{font-size:0.85em;color:#555}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title or 'scalelab report')}"
            f"</title><style>{css}</style></head><body>" + "\n".join(doc.html) + "</body></html>")
    hp = out / "report.html"
    hp.write_text(page, encoding="utf-8")
    mp = out / "summary.md"
    mp.write_text("\n".join(doc.md), encoding="utf-8")
    return ReportPaths(hp, mp, doc.figs, results)


def log_report_to_mlflow(out_dir, experiment: str, tracking_uri: str | None = None,
                         artifact_path: str = "report") -> str:
    """Log the report files on the study's parent run (tag scalelab.role=parent). Returns its id."""
    from mlflow.tracking import MlflowClient

    from .data import InputError, _experiment_id, search_all_runs
    client = MlflowClient(tracking_uri=tracking_uri)
    eid = _experiment_id(client, experiment)
    parents = search_all_runs(client, eid, "tags.`scalelab.role` = 'parent'")
    if not parents:
        raise InputError(f"experiment {experiment!r} has no parent run (tag scalelab.role=parent)")
    rid = parents[0].info.run_id
    client.log_artifacts(rid, str(out_dir), artifact_path=artifact_path)
    return rid
