"""The law table: what `scalelab fit --law NAME` needs, how it fits and how it bootstraps.

Each law maps to the columns it needs (N, D, C), an estimator function (Points, FitOptions)
-> the `fit --json` contract dict, and its bootstrap strategy, said in `--help` and in the
JSON. The CLI (analysis/cli.py) parses, loads and prints; the report reads the same
estimators. Adding a law is one entry here.

    chinchilla   the answer (analysis/answer.py): forms chosen by cross-validation over
                 compute (`--form auto`, the default) or one form; intervals from a bootstrap
                 over runs with the choice repeated in each resample
    kaplan-n/-d  L = E + (x_c/x)^alpha on the best run per N (per D)
    compute      the same law on the compute frontier
    constrained  Muennighoff's data-constrained law: R_D*, R_N* on all runs, the base law
                 fitted on single-epoch runs or given (--base-law / --base-from)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .answer import ANSWER_RESAMPLES, compute_answer, default_budgets
from .data import InputError, Points, find_column
from .result import optimal_rows


@dataclass(frozen=True)
class FitOptions:
    """What `scalelab fit` was asked for (flags, validated by the CLI)."""

    bootstrap: int | None = None  # None: ANSWER_RESAMPLES for --form auto, else 0
    budgets: list[float] | None = None
    seed: int = 0
    form: str = "auto"
    fixed_e: float | None = None
    holdout_flops: float | None = None
    unique_col: str | None = None
    epochs_col: str | None = None
    base_law: dict[str, float] | None = None
    resample: str = "runs"


@dataclass(frozen=True)
class Law:
    name: str
    needs: tuple[str, ...]  # "n", "d", "c": the columns `load_csv` must find
    fit: Callable[[Points, FitOptions], dict[str, Any]]
    bootstrap: str  # what a resample draws
    summary: str = field(default="")


def _head(points: Points) -> dict[str, Any]:
    return {"source": points.source, "excluded": dict(points.excluded), "notes": list(points.notes)}


# ----------------------------------------------------------------------------- chinchilla
def fit_chinchilla(points: Points, opts: FitOptions) -> dict[str, Any]:
    """Approach 3 as the answer: `--form auto` chooses by cross-validation over compute,
    another form fits that form alone; `--holdout-flops C` fits below C and predicts above."""
    from .laws.forms import FORMS

    form = opts.form or "auto"
    if form not in ("auto", *FORMS):
        raise InputError(f"--form {form}: choose auto or one of {', '.join(FORMS)}")
    if form == "fixed-e" and opts.fixed_e is None and points.true_entropy is None:
        raise InputError("--form fixed-e needs --fixed-e VALUE (the irreducible loss, nats/token)")
    if opts.fixed_e is not None and not (math.isfinite(opts.fixed_e) and opts.fixed_e > 0):
        raise InputError(f"--fixed-e {opts.fixed_e}: must be a positive number of nats/token")
    # intervals by default where they are the point: the answer (auto) and held-out predictions
    wanted = form == "auto" or opts.holdout_flops is not None
    n_boot = opts.bootstrap if opts.bootstrap is not None else (ANSWER_RESAMPLES if wanted else 0)
    train, test = points, None
    if opts.holdout_flops is not None:
        train, test = _split_holdout(points, opts.holdout_flops)
    ans = compute_answer(
        train,
        budgets=opts.budgets or default_budgets(train.C),
        fixed_E=opts.fixed_e,
        forms=None if form == "auto" else (form,),
        n_bootstrap=n_boot,
        seed=opts.seed,
        resample=opts.resample,
    )
    out = {"law": "chinchilla", **_head(train), **ans.to_result().to_dict()}
    if test is not None and opts.holdout_flops is not None:
        out["holdout"] = holdout_block(ans, test, opts.holdout_flops)
    return out


def _split_holdout(points: Points, thr: float) -> tuple[Points, Points]:
    if not (math.isfinite(thr) and thr > 0):
        raise InputError(f"--holdout-flops {thr}: must be a positive FLOP count, e.g. 1e20")
    hi = points.C > thr
    if not hi.any():
        raise InputError(
            f"--holdout-flops {thr:g}: no run has more compute (largest: {float(np.max(points.C)):.3g}); "
            "choose a smaller C"
        )
    if hi.all():
        raise InputError(f"--holdout-flops {thr:g}: every run has more compute; choose a larger C")
    train = points.subset(~hi)
    note = f"fitted on the {int((~hi).sum())} runs with C <= {thr:.3g}; {int(hi.sum())} held out"
    return dataclasses.replace(train, notes=train.notes + [note]), points.subset(hi)


NAME_COLUMNS = ("name", "run_name", "model", "run", "label", "model_name")


def holdout_block(ans, test: Points, thr: float) -> dict[str, Any]:
    """The `holdout` block: one labelled object per held-out run, with its prediction and 95%
    prediction interval, and the coverage of those intervals."""
    f = test.frame
    pred = ans.predict(test.N, test.D)
    name_col = next((c for c in NAME_COLUMNS if c in f.columns), None)
    pts = []
    for i in range(len(f)):
        p, lo, hi = (float(pred[k].iloc[i]) for k in ("predicted", "lo", "hi"))
        L = float(test.loss[i])
        row: dict[str, Any] = {"name": None if name_col is None else str(f[name_col].iloc[i])}
        row.update(n_params=float(test.N[i]), tokens=float(test.D[i]), flops=float(test.C[i]), loss=L)
        row.update(predicted=p, rel_error=(p - L) / L, ci95=[lo, hi])
        row["inside"] = bool(lo <= L <= hi) if math.isfinite(lo) else None
        pts.append(row)
    err = np.array([r["rel_error"] for r in pts], float)
    inside = [r["inside"] for r in pts if r["inside"] is not None]
    ok = np.isfinite(err).all() and ans.ok
    return {
        "flops": float(thr),
        "n_train": len(ans.points),
        "n_test": len(pts),
        "errors": [float(e) for e in err] if ok else [],
        "mean_abs_rel_error": float(np.mean(np.abs(err))) if ok else math.nan,
        "max_abs_rel_error": float(np.max(np.abs(err))) if ok else math.nan,
        "points": pts,
        "coverage": float(np.mean(inside)) if inside else None,
    }


# ----------------------------------------------------------------------------- one variable
def fit_one_variable(points: Points, opts: FitOptions, law: str) -> dict[str, Any]:
    """kaplan-n, kaplan-d, compute: L = E + (x_c/x)^alpha on the law's own subset of points."""
    from .bootstrap import bootstrap_fit
    from .laws.kaplan import PowerLawFit, frontier_points, kaplan_per_variable

    frame = points.frame
    var = {"kaplan-n": "N", "kaplan-d": "D", "compute": "C"}[law]
    xcol = {"N": "n_params", "D": "tokens", "C": "flops"}[var]
    sel = frame[np.isfinite(frame[xcol].to_numpy(float))]
    sel = frontier_points(sel) if law == "compute" else kaplan_per_variable(sel, var)

    def fitf(f):
        return PowerLawFit(variable=var).fit(f[xcol], f["loss"]).result_

    res = fitf(sel)
    kind = "frontier" if law == "compute" else "best-per-" + var
    res = res.with_(message=res.message + f" (fitted on {len(sel)} {kind} points of {len(frame)})")
    if law == "compute" and res.success:
        C = np.asarray(opts.budgets or default_budgets(frame["flops"]), float)
        fit = PowerLawFit(variable=var).fit(sel[xcol], sel["loss"])
        nan = np.full(C.size, np.nan)
        table = pd.DataFrame(
            {"flops": C, "n_params": nan, "tokens": nan, "tokens_per_param": nan, "loss": fit.predict(C)}
        )
        res = res.with_(compute_optimal=optimal_rows(table))
    if opts.bootstrap and res.success:

        def stats(f):
            r = fitf(f)
            return {**r.params, "exponent": r.exponents["a"]} if r.success else {}

        b = bootstrap_fit(stats, sel.reset_index(drop=True), n_resamples=opts.bootstrap, seed=opts.seed)
        boot = {"n_resamples": b.n_resamples, "n_failed": b.n_failed, "seed": opts.seed}
        res = res.with_(ci95=dict(b.ci), extra={**res.extra, "bootstrap": boot})
    return {"law": law, **_head(points), **res.to_dict()}


# ----------------------------------------------------------------------------- constrained
BASE_KEYS = ("E", "A", "B", "alpha", "beta")


def parse_base_law(text: str, flag: str = "--base-law") -> dict[str, float]:
    """'E=1.87,A=521,B=1488,alpha=0.353,beta=0.353' -> dict; every key, each positive."""
    out: dict[str, float] = {}
    for part in str(text).split(","):
        if not part.strip():
            continue
        k, sep, v = part.partition("=")
        try:
            out[k.strip()] = float(v) if sep else math.nan
        except ValueError:
            raise InputError(f"{flag} {text!r}: {part.strip()!r} is not NAME=NUMBER") from None
    return check_base_law(out, flag)


def check_base_law(p: dict, flag: str) -> dict[str, float]:
    missing = [k for k in BASE_KEYS if k not in p]
    extra = [k for k in p if k not in BASE_KEYS]
    if missing or extra:
        raise InputError(
            f"{flag}: needs exactly {', '.join(BASE_KEYS)} (e.g. E=1.87,A=521,B=1488,alpha=0.353,beta=0.353)"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else "")
        )
    bad = [k for k in BASE_KEYS if not (isinstance(p[k], (int, float)) and math.isfinite(p[k]) and p[k] > 0)]
    if bad:
        raise InputError(f"{flag}: {', '.join(bad)} must be positive numbers")
    return {k: float(p[k]) for k in BASE_KEYS}


def base_law_from_file(path: str) -> dict[str, float]:
    """The base law from a `scalelab fit --json` output (its `params`)."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--base-from {path}: cannot read a `scalelab fit --json` output ({exc})") from None
    params = data.get("params", data) if isinstance(data, dict) else None
    if not isinstance(params, dict):
        raise InputError(f"--base-from {path}: no `params` object in it")
    return check_base_law({k: v for k, v in params.items() if k in BASE_KEYS}, "--base-from")


def fit_constrained(points: Points, opts: FitOptions) -> dict[str, Any]:
    """Muennighoff et al.'s data-constrained law: R_D*, R_N* on all runs (laws/constrained.py)."""
    from .laws.constrained import DataConstrainedFit

    frame = points.frame
    cols = list(frame.columns)
    uc = find_column(cols, opts.unique_col, "--unique-col", ("unique_tokens", "unique_data", "u_d"))
    ec = (
        None if uc is not None else find_column(cols, opts.epochs_col, "--epochs-col", ("epochs", "n_epochs"))
    )
    if uc is None and ec is None:
        raise InputError(
            "--law constrained needs the unique tokens per run: pass --unique-col NAME "
            "(U_D) or --epochs-col NAME (U_D = D/epochs)"
        )
    src = uc if uc is not None else ec
    vals = pd.to_numeric(frame[src], errors="coerce").to_numpy(float)
    if not np.all(np.isfinite(vals) & (vals > 0)):
        raise InputError(f"column {src!r} has missing or non-positive values; fix them or pass --dropna")
    U = vals if uc is not None else frame["tokens"].to_numpy(float) / vals
    df = pd.DataFrame({"n_params": points.N, "tokens": points.D, "unique_tokens": U, "loss": points.loss})
    fit = DataConstrainedFit(base_params=opts.base_law, n_bootstrap=opts.bootstrap or 0, seed=opts.seed).fit(
        df
    )
    head = _head(points)
    head["notes"].append(f"unique tokens from column {src!r}" + (" (U_D = D/epochs)" if uc is None else ""))
    head["notes"].append(
        "base law given ("
        + ", ".join(f"{k}={v:.4g}" for k, v in opts.base_law.items())
        + "): R* fitted alone"
        if opts.base_law
        else "base law fitted on the single-epoch runs, then refined with R* on all runs"
    )
    out = {
        "law": "constrained",
        **head,
        **fit.result_.to_dict(),
        "compute_optimal": [],
        "exponents": {"a": None, "b": None},
    }
    if opts.bootstrap:
        out["bootstrap"] = {"n_resamples": opts.bootstrap, "seed": opts.seed}
    return out


LAWS: dict[str, Law] = {
    "chinchilla": Law(
        "chinchilla",
        ("n", "d"),
        fit_chinchilla,
        "runs (or whole model sizes); the form choice repeated in each",
        "L = E + A/N^alpha + B/D^beta, form chosen by cross-validation over compute",
    ),
    "kaplan-n": Law(
        "kaplan-n", ("n",), lambda p, o: fit_one_variable(p, o, "kaplan-n"), "the best run per N"
    ),
    "kaplan-d": Law(
        "kaplan-d", ("d",), lambda p, o: fit_one_variable(p, o, "kaplan-d"), "the best run per D"
    ),
    "compute": Law("compute", ("c",), lambda p, o: fit_one_variable(p, o, "compute"), "the frontier points"),
    "constrained": Law("constrained", ("n", "d"), fit_constrained, "runs; R* refitted on each resample"),
}


def fit_law(points: Points, law: str, opts: FitOptions) -> dict[str, Any]:
    """Fit one law to Points (one setting) and return the `fit --json` contract dict."""
    if law != "chinchilla" and (opts.form not in (None, "auto") or opts.holdout_flops is not None):
        raise InputError(f"--form and --holdout-flops apply to --law chinchilla, not --law {law}")
    if law != "constrained" and opts.base_law is not None:
        raise InputError(f"--base-law / --base-from apply to --law constrained, not --law {law}")
    return LAWS[law].fit(points, opts)
