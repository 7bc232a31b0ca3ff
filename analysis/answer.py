"""The answer: one compute-optimal prediction per setting, computed once and read by everything.

`compute_answer(points, budgets=...)` fits every Approach 3 form, chooses one by
cross-validation over compute (analysis/selection.py), and bootstraps the runs with the
choice repeated in every resample, so each interval holds the form's uncertainty as well as
the data's. The report (every section, headline.json, the parent run's metrics), `scalelab fit
--json`, `scalelab suggest` and `scalelab verify` all read the same `Answer`, so they agree
on the form and on every interval they share.

Intervals: for parameters and N_opt, D_opt, D/N the 2.5 and 97.5 percentiles over resamples;
for a loss (at a budget's optimum, or at any run's N and D: `predict`) a prediction interval,
each resample's prediction times one residual of the full fit drawn at random, since a run at
that point lands off the law by the noise too. Approaches 2 (IsoFLOP profiles) and 1 (the
frontier of each run's final point; intermediate points of a cosine run are biased upward)
are cross-checks, computed where the data supports them and otherwise "not applicable here".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import percentile_ci, resample_weights
from .data import Points
from .groups import in_active_params, select_setting, setting_labels
from .laws.chinchilla import theta_to_params
from .laws.isoflop import EnvelopeFit, IsoFLOPFit
from .result import FitResult
from .selection import Selection, predict_theta, resample_choices, select
from .verdict import Verdict, budget_key, judge

ANSWER_RESAMPLES = 200  # the report's, fit's, suggest's and verify's default: they must agree
RESAMPLE_UNITS = ("runs", "sizes")
PARAMS = ("E", "A", "B", "alpha", "beta")
VERIFY_ORIGIN = "verify"


def default_budgets(C) -> list[float]:
    """1x, 10x and 100x the largest compute in the data, rounded to one significant figure."""
    cmax = float(np.nanmax(np.asarray(C, float)))
    return [float(f"{cmax * k:.0e}") for k in (1, 10, 100)]


# ----------------------------------------------------------------------------- the points
def prepare_points(points: Points, experts: int | None = None) -> Points:
    """The points an answer is fitted on: one setting (dense by default; see analysis.groups),
    MoE in active parameters, without `scalelab verify` runs (they test the answer), with
    identical rows collapsed and replicates noted."""
    pts = in_active_params(select_setting(points, experts=experts))
    f = pts.frame
    if "origin" in f.columns and (f["origin"] == VERIFY_ORIGIN).any():
        keep = (f["origin"] != VERIFY_ORIGIN).to_numpy()
        ex = dict(pts.excluded)
        ex["verify run (tests the answer, not fitted)"] = int((~keep).sum())
        pts = dataclasses.replace(
            pts,
            frame=f[keep].reset_index(drop=True),
            excluded=ex,
            notes=pts.notes + [f"{int((~keep).sum())} `scalelab verify` run(s) left out of the fit"],
        )
    return pts.collapse_duplicates()


# ----------------------------------------------------------------------------- the answer
@dataclass
class Answer:
    """Everything the product says about one setting's compute-optimal allocation."""

    setting: str
    points: Points
    budgets: list[float]
    selection: Selection
    fit: FitResult  # the chosen form on every run, with its bootstrap intervals
    rows: pd.DataFrame  # one row per budget (see `_rows`)
    verdicts: list[Verdict]
    approaches: dict[str, dict[str, Any]]
    thetas: np.ndarray  # (K, 5) the chosen form's theta in each resample (NaN: unusable)
    chosen: np.ndarray  # (K,) the form chosen in each resample
    noise: np.ndarray  # (K,) the residual (log loss) drawn for each resample
    n_resamples: int = 0
    resample: str = "runs"
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    residual_sd: float = math.nan  # sd of the chosen fit's log-loss residuals (dof-corrected)
    residual_sd_large: float = math.nan  # the same over the runs in the upper half of compute

    @property
    def form(self) -> str | None:
        return self.selection.chosen

    @property
    def law_fit(self):
        """The chosen form's FormFit on every point (None when no form is usable)."""
        return self.selection.fits.get(self.form) if self.form else None

    @property
    def form_scores(self) -> dict[str, float | str]:
        return dict(self.selection.scores)

    @property
    def cv_error(self) -> float | None:
        s = self.selection.scores.get(self.form) if self.form else None
        return None if s is None or isinstance(s, str) else float(s)

    @property
    def ok(self) -> bool:
        return self.form is not None and self.fit.success

    @property
    def cmax(self) -> float:
        return float(self.points.frame["flops"].max())

    def _good(self) -> np.ndarray:
        T = self.thetas
        return np.all(np.isfinite(T), axis=1) & (T[:, 3] > 0) & (T[:, 4] > 0) if len(T) else np.zeros(0, bool)

    def predict(self, N, D, level: float = 0.95) -> pd.DataFrame:
        """Predicted loss at runs (N, D) with prediction intervals: columns predicted, lo, hi."""
        N, D = np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(D, float))
        fit = self.law_fit
        pred = predict_theta(np.asarray([fit.theta_]), N, D)[0] if self.ok and fit is not None else N * np.nan
        lo = hi = np.full(N.size, np.nan)
        good = self._good()
        if good.sum() >= 10:
            draws = predict_theta(self.thetas[good], N, D) * np.exp(self.noise[good])[:, None]
            q = 100 * (1 - level) / 2
            lo, hi = np.percentile(draws, q, axis=0), np.percentile(draws, 100 - q, axis=0)
        return pd.DataFrame({"n_params": N, "tokens": D, "predicted": pred, "lo": lo, "hi": hi})

    def line_optimum(self, N, D) -> dict[str, Any]:
        """The predicted minimum along a line of runs (N_i, D_i), e.g. an IsoFLOP line in the
        study's own FLOPs convention: {n_params, tokens, loss, ci95 (loss), n_params_ci95}."""
        N, D = np.asarray(N, float), np.asarray(D, float)
        best = self.predict(N, D)
        i = int(np.nanargmin(best["predicted"].to_numpy()))
        out: dict[str, Any] = {"n_params": float(N[i]), "tokens": float(D[i])}
        out["loss"] = float(best["predicted"].iloc[i])
        out["ci95"] = [float(best["lo"].iloc[i]), float(best["hi"].iloc[i])]
        good = self._good()
        n_ci = [math.nan, math.nan]
        if good.sum() >= 10:
            argmins = np.argmin(predict_theta(self.thetas[good], N, D), axis=1)
            n_ci = [float(v) for v in np.percentile(N[argmins], [2.5, 97.5])]
        out["n_params_ci95"] = n_ci
        return out

    def row(self, C: float) -> dict[str, Any]:
        """The row of budget C (computed on demand when C is not one of `budgets`)."""
        hit = self.rows[np.isclose(self.rows["flops"], C)] if len(self.rows) else self.rows
        if len(hit):
            return hit.iloc[0].to_dict()
        return _rows(self, [float(C)]).iloc[0].to_dict()

    def to_result(self) -> FitResult:
        """The `scalelab fit --json` contract for this answer (the chosen form's FitResult with
        the bootstrap's intervals, compute_optimal rows, and form, form_scores, selection)."""
        rows = [
            {
                k: (None if not _finite(r[k]) else float(r[k]))
                for k in ("flops", "n_params", "tokens", "tokens_per_param", "loss")
            }
            for r in self.rows.to_dict("records")
        ]
        extra = {
            **self.fit.extra,
            "form": self.form,
            "form_scores": self.form_scores,
            "selection": selection_summary(self),
        }
        if self.n_resamples:
            freq = pd.Series(self.chosen).value_counts().to_dict()
            extra["bootstrap"] = {
                "n_resamples": self.n_resamples,
                "n_failed": int((~self._good()).sum()),
                "seed": self.seed,
                "resample": self.resample,
                "forms_chosen": {str(k): int(v) for k, v in freq.items()},
            }
        extra["approaches"] = {
            k: {kk: vv for kk, vv in v.items() if kk != "estimator"} for k, v in self.approaches.items()
        }
        return self.fit.with_(compute_optimal=rows if self.ok else [], extra=extra)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))


def selection_summary(ans: Answer) -> dict[str, Any]:
    sel = ans.selection
    return {
        "reason": sel.reason,
        "thresholds": [float(t) for t in sel.folds.thresholds],
        "fold_errors": {f: [float(e) for e in v] for f, v in sel.fold_errors.items()},
        "candidates": list(sel.candidates),
    }


# ----------------------------------------------------------------------------- computing it
def compute_answer(
    points: Points,
    *,
    budgets=None,
    fixed_E: float | None = None,
    forms=None,
    n_bootstrap: int = ANSWER_RESAMPLES,
    seed: int = 0,
    resample: str = "runs",
    grid: str = "full",
    study: str = "STUDY.yaml",
) -> Answer:
    """The answer for `points` (one setting, e.g. from `prepare_points`). forms: the candidate
    forms (default: free, tied, gadre, and fixed-e when E is known: `fixed_E`, else the
    points' known entropy rate); resample: "runs" or "sizes" (whole model sizes)."""
    if resample not in RESAMPLE_UNITS:
        raise ValueError(f"resample must be one of {RESAMPLE_UNITS}, got {resample!r}")
    # a canonical order: the same points give the same resamples however they were loaded
    keys = [c for c in ("flops", "n_params", "tokens", "loss", "run_id") if c in points.frame.columns]
    points = dataclasses.replace(
        points, frame=points.frame.sort_values(keys, kind="mergesort").reset_index(drop=True)
    )
    f = points.frame
    N, D, L, C = points.N, points.D, points.loss, points.C
    budgets = [float(b) for b in (budgets or default_budgets(C))]
    E = fixed_E if fixed_E is not None else points.true_entropy
    sel = select(N, D, L, C, forms=forms, fixed_E=E, grid=grid)
    K = n_bootstrap if sel.chosen is not None and sel.fits[sel.chosen].success_ else 0
    T, chosen, noise = np.zeros((0, 5)), np.array([], dtype=object), np.zeros(0)
    resid = _residuals(sel, N, D, L) if sel.chosen and sel.fits[sel.chosen].success_ else np.zeros(0)
    if K:
        rng = np.random.default_rng(seed)
        groups = f["n_params"].to_numpy() if resample == "sizes" else None
        W = resample_weights(len(f), K, rng, groups)
        chosen, T, _ = resample_choices(sel, N, D, L, W)
        noise = rng.choice(resid, size=K)
    label = str(setting_labels(f).iloc[0]) if len(f) else "none"
    ans = Answer(
        label,
        points,
        budgets,
        sel,
        _fit_result(sel),
        pd.DataFrame(),
        [],
        {},
        T,
        chosen,
        noise,
        K,
        resample,
        seed,
        list(points.notes),
    )
    ans.residual_sd = float(np.sqrt(np.mean(resid**2))) if resid.size else math.nan
    big = C >= np.median(C)  # the noise where the budgets are: runs in the upper half of compute
    ans.residual_sd_large = (
        float(np.sqrt(np.mean(resid[big] ** 2))) if resid.size and big.sum() >= 3 else ans.residual_sd
    )
    ans.approaches = crosschecks(f, budgets)
    ans.rows = _rows(ans, budgets)
    ans.verdicts = [_verdict(ans, r, study) for r in ans.rows.to_dict("records")]
    if len(ans.rows):
        ans.rows["verdict"] = [v.level for v in ans.verdicts]
    if ans.ok and K:
        ans.fit = ans.fit.with_(ci95=_intervals(ans))
    return ans


def _residuals(sel: Selection, N, D, L) -> np.ndarray:
    """The chosen fit's log-loss residuals, scaled by sqrt(P / (P - p)) for the parameters
    fitted, so a drawn residual has the noise's variance."""
    if sel.chosen is None:
        return np.zeros(0)
    th = sel.fits[sel.chosen].theta_
    r = np.log(L) - np.log(predict_theta(np.asarray([th]), N, D)[0])
    p = 5 if sel.chosen == "free" else 4
    return r * math.sqrt(len(r) / max(len(r) - p, 1))


def _fit_result(sel: Selection) -> FitResult:
    if sel.chosen is None:  # the free form's reason first (the law people know), then the others
        lead = "free" if "free" in sel.fits else sel.candidates[0]
        res = sel.fits[lead].result_
        others = "; ".join(f"{f}: {sel.fits[f].message_}" for f in sel.candidates if f != lead)
        msg = res.message + (f" (no other form could be fitted either: {others})" if others else "")
        return res.with_(message=msg, success=False, extra={**res.extra, "form": None})
    return sel.fits[sel.chosen].result_


def optimum(T: np.ndarray, C) -> dict[str, np.ndarray]:
    """Hoffmann's allocation (C = 6 N D) for thetas T (K, 5) at budgets C (B,): (K, B) arrays
    n_params, tokens, tokens_per_param, loss (the law's, without noise)."""
    T = np.atleast_2d(T)
    C = np.atleast_1d(np.asarray(C, float))
    e, a, b, al, be = (T[:, i : i + 1] for i in range(5))
    with np.errstate(all="ignore"):
        logG = (np.log(al) + a - np.log(be) - b) / (al + be)
        lc = np.log(C / 6.0)[None, :]
        n = np.exp(logG + be / (al + be) * lc)
        d = np.exp(-logG + al / (al + be) * lc)
        loss = np.exp(e) + np.exp(a) / n**al + np.exp(b) / d**be
        per = d / n
    return {"n_params": n, "tokens": d, "tokens_per_param": per, "loss": loss}


def _rows(ans: Answer, budgets) -> pd.DataFrame:
    """Per budget: flops, decades_beyond, n_params, tokens, tokens_per_param, loss, each with
    _lo/_hi (95%), width (N_opt hi/lo), cv_error, verdict, approach, form."""
    fit = ans.law_fit
    if not ans.ok or fit is None:
        return pd.DataFrame()
    C = np.asarray(budgets, float)
    point = optimum(fit.theta_[None, :], C)
    good = ans._good()
    draws = optimum(ans.thetas[good], C) if good.sum() >= 10 else None
    out = pd.DataFrame({"flops": C, "decades_beyond": np.log10(C / ans.cmax)})
    for k in ("n_params", "tokens", "tokens_per_param", "loss"):
        out[k] = point[k][0]
        lo = hi = np.full(C.size, np.nan)
        if draws is not None:
            v = draws[k] * (np.exp(ans.noise[good])[:, None] if k == "loss" else 1.0)
            lo, hi = np.percentile(v, 2.5, axis=0), np.percentile(v, 97.5, axis=0)
        out[f"{k}_lo"], out[f"{k}_hi"] = lo, hi
    out["width"] = out["n_params_hi"] / out["n_params_lo"]
    out["cv_error"] = ans.cv_error if ans.cv_error is not None else np.nan
    out["approach"] = "Approach 3"
    out["form"] = ans.form
    return out


def size_resolution(N) -> float:
    """The median ratio between neighbouring model sizes: an approach that reads N_opt off the
    runs (the envelope, IsoFLOP vertices from a few sizes) cannot resolve it more finely."""
    sizes = np.unique(np.round(np.asarray(N, float)))
    return float(np.median(sizes[1:] / sizes[:-1])) if sizes.size > 1 else 1.0


def _verdict(ans: Answer, r: dict, study: str) -> Verdict:
    disagree = []
    res = size_resolution(ans.points.N)
    for name, a in ans.approaches.items():
        n = a.get("n_params", {}).get(budget_key(r["flops"])) if a["applicable"] else None
        if (
            n is not None
            and _finite(r["n_params_lo"])
            and not (r["n_params_lo"] / res <= n <= r["n_params_hi"] * res)
        ):
            disagree.append(name)
    width = r["width"] if _finite(r["width"]) else None
    return judge(r["flops"], ans.cv_error, width, r["decades_beyond"], disagree, study=study)


def _intervals(ans: Answer) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of the parameters, a, b, G and per budget N_opt, D_opt, D/N, loss."""
    good = ans._good()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        s = pd.DataFrame([theta_to_params(t) for t in ans.thetas[good]])
        al, be = s["alpha"], s["beta"]
        s["a"], s["b"] = be / (al + be), al / (al + be)
        s["G"] = (al * s["A"] / (be * s["B"])) ** (1.0 / (al + be))
        ci = percentile_ci(s)
    for r in ans.rows.to_dict("records"):
        key = f"{r['flops']:.3g}"
        for name, col in (
            ("N_opt", "n_params"),
            ("D_opt", "tokens"),
            ("D/N", "tokens_per_param"),
            ("loss", "loss"),
        ):
            ci[f"{name}@{key}"] = (float(r[f"{col}_lo"]), float(r[f"{col}_hi"]))
    return ci


# ----------------------------------------------------------------------------- cross-checks
def final_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One point per run (its final loss): what Approach 1 may use from cosine runs."""
    return frame[[c for c in ("run_id", "n_params", "tokens", "flops", "loss") if c in frame.columns]]


def crosschecks(frame: pd.DataFrame, budgets) -> dict[str, dict[str, Any]]:
    """Approaches 2 and 1 where the data supports them: {name: {applicable, reason, a, b,
    n_params: {budget key: N_opt}, estimator}}; not applicable ones say why and never vote."""
    out: dict[str, dict[str, Any]] = {}
    for name, est, data in (
        ("Approach 2", IsoFLOPFit(), frame),
        ("Approach 1", EnvelopeFit(), final_points(frame)),
    ):
        est.fit(data)
        row: dict[str, Any] = {"applicable": bool(est.success_), "estimator": est}
        if est.success_:
            co = est.compute_optimal(list(budgets))
            row.update(
                reason=est.message_,
                a=float(est.a_),
                b=float(est.b_),
                n_params={budget_key(c): float(n) for c, n in zip(co["flops"], co["n_params"])},
            )
        else:
            row.update(
                reason="not applicable here: " + est.message_.removeprefix("unidentifiable: "), n_params={}
            )
        out[name] = row
    return out


# ----------------------------------------------------------------------------- headline
def headline(ans: Answer) -> dict:
    """{"metrics", "params"} for the study's parent MLflow run (keys documented in README):
    fit.<E|A|B|alpha|beta|a|b>[.ci95_lo|.ci95_hi], fit.cv_error, opt.<budget>.<n_params|tokens|
    tokens_per_param|loss|decades_beyond>[.ci95_lo|.ci95_hi]; params fit.approach, fit.form,
    fit.setting, fit.n_points, fit.budgets, fit.verdict and the same numbers as text."""
    metrics: dict[str, float] = {}
    if ans.ok:
        res = ans.fit
        for k, v in {**res.params, **res.exponents}.items():
            metrics[f"fit.{k}"] = float(v) if v is not None else math.nan
            if k in res.ci95:
                metrics[f"fit.{k}.ci95_lo"], metrics[f"fit.{k}.ci95_hi"] = map(float, res.ci95[k])
        if ans.cv_error is not None:
            metrics["fit.cv_error"] = ans.cv_error
    for r in ans.rows.to_dict("records"):
        pre = f"opt.{budget_key(r['flops'])}"
        metrics[f"{pre}.decades_beyond"] = float(r["decades_beyond"])
        for k in ("n_params", "tokens", "tokens_per_param", "loss"):
            metrics[f"{pre}.{k}"] = float(r[k])
            metrics[f"{pre}.{k}.ci95_lo"], metrics[f"{pre}.{k}.ci95_hi"] = r[f"{k}_lo"], r[f"{k}_hi"]
    metrics = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    params = {
        "fit.approach": "Approach 3" if ans.ok else "none identified",
        "fit.form": ans.form or "none",
        "fit.setting": ans.setting,
        "fit.n_points": str(len(ans.points)),
        "fit.budgets": ",".join(budget_key(C) for C in ans.budgets),
        "fit.verdict": ",".join(v.level for v in ans.verdicts) if ans.verdicts else "none",
    }
    params.update(
        {
            k: f"{v:.4g}"
            for k, v in metrics.items()
            if not k.endswith(("ci95_lo", "ci95_hi", "decades_beyond"))
        }
    )
    return {"metrics": metrics, "params": params}
