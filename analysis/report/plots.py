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

from ..laws.kaplan import frontier_points  # noqa: E402

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


def fitted_vs_observed(groups: dict, extra: dict | None = None):
    """Observed vs predicted loss of every point, each setting by its own law.
    groups: {label: (frame, fitted law with .predict)}; extra: {label: (frame, predicted)} for
    points predicted but not fitted (verify runs)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    lo, hi = np.inf, 0.0
    series = [(lab, f, fit.predict(f["n_params"], f["tokens"])) for lab, (f, fit) in groups.items()]
    series += [(lab, f, pred) for lab, (f, pred) in (extra or {}).items()]
    for label, frame, pred in series:
        ax.scatter(frame["loss"], pred, s=12, label=f"{label} ({len(frame)})")
        lo = min(lo, frame["loss"].min(), np.min(pred))
        hi = max(hi, frame["loss"].max(), np.max(pred))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    _loglog(
        ax,
        "observed loss (nats/token)",
        "fitted loss (nats/token)",
        "Fitted vs observed (each setting's own law)",
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


def training_curves(curves, frontier):
    """Every training curve of the setting (loss vs FLOPs, thin), each run's final point, and
    the frontier of the final points (Approach 1's envelope)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted(curves["n_params"].unique())
    colors = dict(zip(sizes, cmap(sizes)))
    for _, g in curves.groupby("run_id"):
        g = g.sort_values("flops")
        col = colors[g["n_params"].iloc[0]]
        ax.plot(g["flops"], g["loss"], color=col, lw=0.7, alpha=0.6)
        ax.scatter(g["flops"].iloc[-1:], g["loss"].iloc[-1:], color=col, s=14)
    if frontier is not None and len(frontier):
        env = frontier.sort_values("flops")
        ax.plot(env["flops"], env["loss"], "k-", lw=1.5, label="frontier of final points (Approach 1)")
        ax.legend(fontsize=8)
    _loglog(
        ax, "compute C (FLOPs)", "loss (nats/token)", "Training curves (drawn, not fitted), coloured by N"
    )
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
    from ..laws.isoflop import point_budgets

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


def compute_optimal_panels(frame, budgets, fit, thetas, others: list):
    """N_opt(C) and D_opt(C): the answer's law with its bootstrap band (thetas: (K, 5) of the
    resamples), other approaches dashed."""
    from ..answer import optimum

    Cs = np.logspace(np.log10(frame["flops"].min()), np.log10(max(budgets)), 60)
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.2))
    co = fit.compute_optimal(Cs)
    band = optimum(thetas, Cs) if thetas is not None and len(thetas) >= 10 else None
    for ax, col, lab in ((axs[0], "n_params", "N_opt (parameters)"), (axs[1], "tokens", "D_opt (tokens)")):
        ax.plot(Cs, co[col], "r-", label="Approach 3 (the answer)")
        if band is not None:
            v = band[col]
            lo, hi = np.nanpercentile(v, 2.5, axis=0), np.nanpercentile(v, 97.5, axis=0)
            ax.fill_between(Cs, lo, hi, color="r", alpha=0.2, label="95% bootstrap band")
        for name, m in others:
            ax.plot(Cs, m.compute_optimal(Cs)[col], "--", label=name)
        _loglog(ax, "compute C (FLOPs)", lab, "")
        ax.legend(fontsize=8)
        ax2 = ax.secondary_xaxis("top", functions=(lambda c: c / PFDAY, lambda p: p * PFDAY))
        ax2.set_xlabel("PF-days")
    return fig


def validation_panels(frame, fit, held: pd.DataFrame | None, thr: float | None):
    """Residuals of the answer's law, and predicted vs observed on the runs a CV fold held out."""
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.2))
    r = np.log(fit.predict(frame["n_params"], frame["tokens"])) - np.log(frame["loss"])
    axs[0].scatter(frame["flops"], r, s=10)
    axs[0].axhline(0, color="k", lw=0.8)
    axs[0].set_xscale("log")
    axs[0].set_xlabel("compute C (FLOPs)")
    axs[0].set_ylabel("log L̂ − log L (residual)")
    axs[0].set_title("Residuals of the answer's law")
    if held is not None and len(held):
        axs[1].scatter(held["loss"], held["predicted"], s=12)
        lim = [held[["loss", "predicted"]].min().min(), held[["loss", "predicted"]].max().max()]
        axs[1].plot(lim, lim, "k-", lw=0.8)
        axs[1].set_title(f"Held out: C > {thr:.2g}, fitted below")
    axs[1].set_xlabel(_unit("observed loss (nats/token)"))
    axs[1].set_ylabel(_unit("predicted loss (nats/token)"))
    return fig


def tested_prediction(test: dict):
    """A verify budget: the predicted loss along the IsoFLOP line (band: 95%), the observed runs,
    the observed minimum's interval and the predicted N_opt's."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    obs = pd.DataFrame(test["observed"])
    N = obs["n_params"].to_numpy(float)
    ax.errorbar(
        N,
        obs["predicted"],
        yerr=[obs["predicted"] - [c[0] for c in obs["ci95"]], [c[1] for c in obs["ci95"]] - obs["predicted"]],
        fmt="o",
        color="C0",
        label="predicted (95% interval)",
    )
    ax.scatter(N, obs["loss"], color="C3", zorder=3, label="observed")
    p, m = test["predicted"], test["isoflop_min"]
    lo, hi = p["n_params_ci95"]
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        ax.axvspan(lo, hi, color="C0", alpha=0.12, label="predicted N_opt (95%)")
    if m.get("n_params"):
        ax.axvline(m["n_params"], color="C3", ls="--", lw=1, label="observed IsoFLOP minimum")
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel(_unit(LOSS))
    ax.set_title(f"Tested prediction at C = {test['budget']:.3g} FLOPs")
    ax.legend(fontsize=7)
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
