"""The report's figures: each function takes fitted results and returns a matplotlib Figure.

Callers draw a figure only when its law is identified (no empty axes); log-axis ticks are
formatted as numbers when the figure is written (report_doc.number_ticks).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .kaplan import frontier_points  # noqa: E402

PFDAY = 8.64e19
LOSS = "final loss (nats/token)"
UNIT = ["nats/token"]  # the loss unit of the report being drawn (write_report sets it: bits/byte)


def _unit(label: str) -> str:
    return label.replace("nats/token", UNIT[0])


def cmap(values):
    v = np.log(np.asarray(values, float))
    lo, hi = v.min(), v.max()
    return plt.cm.viridis((v - lo) / (hi - lo if hi > lo else 1.0))


def _loglog(ax, xlabel, ylabel, title):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_unit(xlabel))
    ax.set_ylabel(_unit(ylabel))
    ax.set_title(title)


def loss_vs_compute(frame, fit):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sc = ax.scatter(frame["flops"], frame["loss"], c=np.log10(frame["n_params"]), cmap="viridis", s=14)
    fig.colorbar(sc, ax=ax, label="log10 N (parameters)")
    fr = frontier_points(frame)
    ax.plot(fr["flops"], fr["loss"], "k-", lw=0.8, label="frontier (lower envelope)")
    C = np.logspace(np.log10(frame["flops"].min()), np.log10(frame["flops"].max()) + 1, 100)
    ax.plot(C, fit.compute_optimal(C)["loss"], "r-", label="Approach 3 at compute-optimal N, D")
    _loglog(ax, "training compute C (FLOPs)", LOSS, "Loss vs compute")
    ax.legend(fontsize=8)
    return fig


def _bins(frame, by):
    """Groups of `by` for the L-vs-x plots; binned when every run has its own value."""
    groups = sorted(frame[by].unique())
    if len(groups) <= 12:
        return frame.assign(_g=frame[by]), {g: f"{by}={g:.3g}" for g in groups}, {g: g for g in groups}
    edges = np.quantile(np.log(frame[by]), np.linspace(0, 1, 7))
    lab = np.clip(np.searchsorted(edges, np.log(frame[by]), side="right") - 1, 0, 5)
    frame = frame.assign(_g=lab)
    reps = frame.groupby("_g")[by].apply(lambda v: float(np.exp(np.log(v).mean())))
    return frame, {g: f"{by}≈{reps[g]:.2g}" for g in reps.index}, reps.to_dict()


def loss_vs_x(frame, fit, by, x):
    """L vs x ('n_params' or 'tokens') for each value of `by`, with the fitted law."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    frame, label, value = _bins(frame, by)
    groups = list(label)
    xs = np.logspace(np.log10(frame[x].min()) - 0.2, np.log10(frame[x].max()) + 0.2, 100)
    for g, col in zip(groups, cmap([value[g] for g in groups])):
        sub = frame[frame["_g"] == g]
        ax.scatter(sub[x], sub["loss"], color=col, s=14, label=label[g])
        ax.plot(
            xs, fit.predict(xs, value[g]) if x == "n_params" else fit.predict(value[g], xs), color=col, lw=1
        )
    nd = "N" if x == "n_params" else "D"
    _loglog(
        ax,
        {"n_params": "N (parameters)", "tokens": "D (training tokens)"}[x],
        LOSS,
        f"L vs {nd} at fixed {'D' if by == 'tokens' else 'N'} (lines: Approach 3)",
    )
    ax.legend(fontsize=7, ncol=2)
    return fig


def fitted_vs_observed(groups: dict):
    """Observed vs predicted loss of every point, each setting by its own law.
    groups: {label: (frame, fitted ChinchillaFit)}."""
    fig, ax = plt.subplots(figsize=(6, 5))
    lo, hi = np.inf, 0.0
    for label, (frame, fit) in groups.items():
        pred = fit.predict(frame["n_params"], frame["tokens"])
        ax.scatter(frame["loss"], pred, s=12, label=f"{label} ({len(frame)})")
        lo = min(lo, frame["loss"].min(), np.min(pred))
        hi = max(hi, frame["loss"].max(), np.max(pred))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    _loglog(
        ax,
        "observed loss (nats/token)",
        "fitted loss (nats/token)",
        "Fitted vs observed, every point (its setting's Approach 3 law)",
    )
    ax.legend(fontsize=7)
    return fig


def landscape(frame, fit, budgets):
    """Fitted log L over (N, D), IsoFLOP lines N·D = C/6, the compute-optimal path, the runs."""
    Cs = sorted(set(budgets) | set(np.quantile(frame["flops"], [0.0, 0.5, 1.0])))
    opt = fit.compute_optimal(np.logspace(np.log10(min(Cs)), np.log10(max(Cs)), 50))
    n_lo = min(frame["n_params"].min(), opt["n_params"].min()) / 3
    n_hi = max(frame["n_params"].max(), opt["n_params"].max()) * 3
    d_lo = min(frame["tokens"].min(), opt["tokens"].min()) / 3
    d_hi = max(frame["tokens"].max(), opt["tokens"].max()) * 3
    N, D = np.meshgrid(
        np.logspace(np.log10(n_lo), np.log10(n_hi), 120), np.logspace(np.log10(d_lo), np.log10(d_hi), 120)
    )
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cs = ax.contourf(N, D, np.log10(fit.predict(N, D)), levels=25, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 fitted loss")
    n_line = np.logspace(np.log10(n_lo), np.log10(n_hi), 50)
    for C in Cs:
        ax.plot(n_line, C / (6 * n_line), "w--", lw=0.7)
        ax.annotate(f"C={C:.0e}".replace("e+", "e"), (n_line[5], C / (6 * n_line[5])), color="w", fontsize=7)
    ax.plot(opt["n_params"], opt["tokens"], "r-", lw=2, label="fitted optimum (Approach 3)")
    ax.scatter(frame["n_params"], frame["tokens"], s=10, c="k", label="runs")
    ax.set_xlim(n_lo, n_hi)
    ax.set_ylim(d_lo, d_hi)
    _loglog(ax, "N (parameters)", "D (training tokens)", "Loss landscape with IsoFLOP lines (C = 6ND)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def training_curves(curves, envelope):
    """Every training curve of the setting (loss vs FLOPs) and their lower envelope."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted(curves["n_params"].unique())
    colors = dict(zip(sizes, cmap(sizes)))
    for _, g in curves.groupby("run_id"):
        g = g.sort_values("flops")
        ax.plot(g["flops"], g["loss"], color=colors[g["n_params"].iloc[0]], lw=0.8, alpha=0.8)
    env = envelope.sort_values("flops")
    ax.plot(env["flops"], env["loss"], "k-", lw=2, label="lower envelope (Approach 1)")
    _loglog(ax, "compute C (FLOPs)", "loss (nats/token)", "Training curves, coloured by N")
    ax.legend(fontsize=8)
    return fig


def kaplan_panels(kfits: dict):
    fig, axs = plt.subplots(1, len(kfits), figsize=(4.4 * len(kfits), 4))
    for ax, (name, (kf, sel, xcol)) in zip(np.atleast_1d(axs), kfits.items()):
        ax.scatter(sel[xcol], sel["loss"], s=12)
        xs = np.logspace(np.log10(sel[xcol].min()), np.log10(sel[xcol].max()) + 1, 100)
        ax.plot(xs, kf.predict(xs), "r-", label=f"E={kf.E_:.3g}, α={kf.alpha_:.3g}")
        ax.legend(fontsize=8)
        _loglog(
            ax,
            {"n_params": "N (parameters)", "tokens": "D (tokens)", "flops": "C (FLOPs)"}[xcol],
            "loss (nats/token)",
            name,
        )
    return fig


def isoflop_profiles(frame, iso):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    from .isoflop import point_budgets

    bud = point_budgets(frame, budget_col=iso.budget_col, budget_rtol=iso.budget_rtol)
    good = iso.parabolas_[np.isfinite(iso.parabolas_["c2"])]
    for (_, r), col in zip(good.iterrows(), cmap(good["budget"])):
        sub = frame[np.isclose(bud, r["budget"])]
        ax.scatter(sub["n_params"], sub["loss"], color=col, s=14, label=f"C={r['budget']:.2g}")
        x = np.linspace(np.log(sub["n_params"].min()) - 0.3, np.log(sub["n_params"].max()) + 0.3, 100)
        u = x - r["log_n_center"]
        ax.plot(np.exp(x), r["c0"] + r["c1"] * u + r["c2"] * u * u, color=col, lw=1)
        if np.isfinite(r["n_opt"]):
            ax.plot(r["n_opt"], r["loss_opt"], "kx")
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel(_unit(LOSS))
    ax.set_title("IsoFLOP curves with fitted parabolas in log N (x: minima)")
    if len(good) <= 12:
        ax.legend(fontsize=7, ncol=2)
    return fig


def compute_optimal_panels(frame, budgets, fit, boot, others: list):
    """N_opt(C) and D_opt(C): Approach 3 with its bootstrap band, other approaches dashed."""
    from .chinchilla import compute_optimal

    Cs = np.logspace(np.log10(frame["flops"].min()), np.log10(max(budgets)), 60)
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.2))
    co = fit.compute_optimal(Cs)
    good = boot.samples.dropna() if boot is not None and len(boot.samples) else pd.DataFrame()
    for ax, col, lab in ((axs[0], "n_params", "N_opt (parameters)"), (axs[1], "tokens", "D_opt (tokens)")):
        ax.plot(Cs, co[col], "r-", label="Approach 3")
        if len(good):
            band = np.array(
                [
                    compute_optimal(r, Cs)[col].to_numpy()
                    for r in good[["E", "A", "B", "alpha", "beta"]].to_dict("records")
                ]
            )
            ax.fill_between(
                Cs,
                np.percentile(band, 2.5, axis=0),
                np.percentile(band, 97.5, axis=0),
                color="r",
                alpha=0.2,
                label="95% bootstrap band",
            )
        for name, m in others:
            ax.plot(Cs, m.compute_optimal(Cs)[col], "--", label=name)
        _loglog(ax, "compute C (FLOPs)", lab, "")
        ax.legend(fontsize=8)
        ax2 = ax.secondary_xaxis("top", functions=(lambda c: c / PFDAY, lambda p: p * PFDAY))
        ax2.set_xlabel("PF-days")
    return fig


def validation_panels(frame, fit, ex, thr):
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.2))
    r = np.log(fit.predict(frame["n_params"], frame["tokens"])) - np.log(frame["loss"])
    axs[0].scatter(frame["flops"], r, s=10)
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
    axs[1].set_xlabel(_unit("observed loss (nats/token)"))
    axs[1].set_ylabel(_unit("predicted loss (nats/token)"))
    return fig


def moe_multiplier(runs):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # n_eff is inf where a MoE run beats every dense model at its D (the dense law's floor there)
    finite = runs[np.isfinite(runs["n_eff_over_active"].astype(float))]
    experts = sorted(finite["experts"].unique())
    for e_, col in zip(experts, cmap(experts) if experts else []):
        sub = finite[finite["experts"] == e_]
        ax.scatter(sub["n_params_active"], sub["n_eff_over_active"], color=col, s=14, label=f"{e_:g} experts")
    ax.axhline(1, color="k", lw=0.8)
    if len(finite) < len(runs):
        note = f"{len(runs) - len(finite)} run(s) beat every dense model at their D (unbounded multiplier)"
        ax.text(0.02, 0.96, note, transform=ax.transAxes, va="top", fontsize=8)
    if len(finite):  # a log axis needs data on it
        ax.set_xscale("log")
    ax.set_xlabel("active parameters")
    ax.set_ylabel("effective dense N / active N")
    ax.set_title("MoE vs dense: effective parameter multiplier")
    if experts:
        ax.legend(fontsize=8)
    return fig
