"""Settings: fits are done per architecture / MoE setting, never across them.

A point's setting is its MoE setting (params experts, top_k, granularity, shared_experts; dense
when experts <= 1) together with its architecture (params arch, objective; a point without them
belongs to the one default architecture). Pooling settings biases every law: on the quickstart
store, fitting dense and MoE points together moved A by -57% and tokens/param at 1e12 FLOPs from
20.9 to 13.3. So `fit` and the report select one setting (`select_setting`) or split the points
into groups (`split_by`), and say what they left out.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .data import InputError, Points

MOE_COLS = ("experts", "top_k", "granularity", "shared_experts")
ARCH_COLS = ("arch", "objective")
DENSE = "dense"


def _present(frame: pd.DataFrame, cols) -> list[str]:
    return [c for c in cols if c in frame.columns and frame[c].notna().any()]


def is_dense(frame: pd.DataFrame) -> np.ndarray:
    """Dense points: experts missing, 0 or 1."""
    if "experts" not in frame.columns:
        return np.ones(len(frame), bool)
    return pd.to_numeric(frame["experts"], errors="coerce").fillna(0).to_numpy(float) <= 1


def _value(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def moe_labels(frame: pd.DataFrame) -> pd.Series:
    """`dense`, or `experts=8,top_k=2,...` from the MoE params the frame carries."""
    cols = _present(frame, MOE_COLS)
    dense = is_dense(frame)
    labels = [
        DENSE if d else ",".join(f"{c}={_value(r[c])}" for c in cols if pd.notna(r[c]))
        for d, (_, r) in zip(dense, frame.iterrows())
    ]
    return pd.Series(labels, index=frame.index, dtype=object)


def arch_labels(frame: pd.DataFrame) -> pd.Series:
    """The `arch` param (`default` when absent), with `objective=...` added when the points
    carry more than one objective (an MLM loss is not a CLM loss: never pooled)."""
    arch = (
        frame["arch"].fillna("default").astype(str)
        if "arch" in frame.columns
        else pd.Series("default", index=frame.index)
    )
    if "objective" in frame.columns and frame["objective"].nunique(dropna=True) > 1:
        arch = arch + ",objective=" + frame["objective"].fillna("default").astype(str)
    return arch


def setting_labels(frame: pd.DataFrame) -> pd.Series:
    """One label per point naming its full setting (MoE setting and architecture)."""
    moe = moe_labels(frame)
    arch = arch_labels(frame)
    if arch.nunique() <= 1 and (arch == "default").all():
        return moe
    return "arch=" + arch + ";" + moe


def _subset(points: Points, mask, note: str, excluded: dict[str, int]) -> Points:
    ex = dict(points.excluded)
    for reason, n in excluded.items():
        if n:
            ex[reason] = ex.get(reason, 0) + int(n)
    return dataclasses.replace(
        points,
        frame=points.frame[np.asarray(mask)].reset_index(drop=True),
        excluded=ex,
        notes=list(points.notes) + [note],
    )


def _exclusions(frame: pd.DataFrame, keep: np.ndarray) -> dict[str, int]:
    """Counts of the points left out, by why: another MoE setting or another architecture."""
    moe = moe_labels(frame)
    kept_moe = set(moe[keep])
    other_moe = ~keep & ~moe.isin(kept_moe).to_numpy()
    other_arch = ~keep & ~other_moe
    return {
        "other MoE setting (use --experts K or --group-by experts)": int(other_moe.sum()),
        "other architecture (use --group-by arch)": int(other_arch.sum()),
    }


def select_setting(points: Points, experts: int | None = None) -> Points:
    """The points of one setting: dense by default, the MoE setting with `experts` experts
    when given. Where several settings qualify (architectures, top_k), the one with the most
    points is kept and the notes say so. The rest are counted in `excluded` with the reason."""
    frame = points.frame
    labels = setting_labels(frame)
    if experts is None:
        cand = is_dense(frame)
        if not cand.any():
            cand = np.ones(len(frame), bool)
        what = "dense points" if is_dense(frame).any() else "points (no dense runs)"
    else:
        ex = (
            pd.to_numeric(frame["experts"], errors="coerce").to_numpy(float)
            if "experts" in frame.columns
            else np.full(len(frame), np.nan)
        )
        cand = ex == float(experts)
        if not cand.any():
            have = sorted({_value(v) for v in ex[np.isfinite(ex)]}) or ["none logged"]
            raise InputError(
                f"--experts {experts}: no points with {experts} experts "
                f"(experts in the data: {', '.join(have)}); pick one of those"
            )
        what = f"points with {experts} experts"
    counts = labels[cand].value_counts()
    chosen = counts.index[0]
    keep = (labels == chosen).to_numpy()
    if keep.all() and experts is None:
        return points  # one setting: nothing to select or say
    note = f"fitted the {int(keep.sum())} {what} of setting {chosen!r}"
    if len(counts) > 1:
        note += (
            f" (the most populous of {len(counts)} settings: "
            + ", ".join(f"{k!r}: {v}" for k, v in counts.items())
            + ")"
        )
    n_out = int((~keep).sum())
    if n_out:
        note += f"; {n_out} point(s) of other settings excluded: laws are never pooled across settings"
    return _subset(points, keep, note, _exclusions(frame, keep))


def group_labels(frame: pd.DataFrame, column: str) -> pd.Series:
    """Labels for `--group-by column`: `experts` groups by MoE setting, `arch` by architecture,
    any other column by its value; every label also names any other setting that varies within
    it, so no group pools two settings."""
    if column == "experts":
        primary = moe_labels(frame)
    elif column == "arch":
        primary = arch_labels(frame)
    elif column in frame.columns:
        primary = frame[column].map(lambda v: f"{column}={_value(v)}")
    else:
        raise InputError(
            f"--group-by {column}: no such column; columns are: " + ", ".join(map(str, frame.columns))
        )
    full = setting_labels(frame)
    if (full.groupby(primary).nunique() <= 1).all():
        return primary
    return primary.astype(str) + " [" + full + "]"


def split_by(points: Points, column: str) -> dict[str, Points]:
    """{label: Points} for `--group-by column`, in label order."""
    labels = group_labels(points.frame, column)
    note = []
    objectives = points.frame["objective"].dropna().unique() if "objective" in points.frame else []
    if len(objectives) > 1:  # analysis/families.py compares them by exponents instead
        note = [
            f"objectives {', '.join(sorted(map(str, objectives)))}: losses under different "
            "objectives are not comparable as numbers; compare exponents and allocations"
        ]
    return {
        str(lab): dataclasses.replace(
            points,
            frame=points.frame[(labels == lab).to_numpy()].reset_index(drop=True),
            notes=list(points.notes) + [f"group {lab!r} of --group-by {column}", *note],
        )
        for lab in sorted(labels.unique(), key=str)
    }


def in_active_params(points: Points) -> Points:
    """MoE points are fitted in active parameters (n_params_active) within their setting;
    the total count stays in `n_params_total`."""
    frame = points.frame
    if is_dense(frame).all() or "n_params_active" not in frame.columns:
        return points
    frame = frame.assign(n_params_total=frame["n_params"], n_params=frame["n_params_active"])
    return dataclasses.replace(
        points,
        frame=frame,
        notes=list(points.notes) + ["MoE setting: N is the active parameter count (n_params_active)"],
    )
