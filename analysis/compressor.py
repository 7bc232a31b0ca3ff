"""A general-purpose compressor as the reference line of a corpus study, in bits per byte.

Runs on an ingested corpus (data source `corpus`) carry the param `compressor_bpb`: xz at its
strongest level (-9e) on the same validation text the models are scored on, in bits per byte
(`scalelab data ingest` measures it). Losses in bits per byte (val_bpb) compare with it directly;
losses in nats/token convert with the run's `bytes_per_token` (of the validation split):
bits/byte = nats/token / bytes_per_token / ln 2.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .data import Points


def _column(frame: pd.DataFrame, name: str) -> float | None:
    if name not in frame:
        return None
    v = pd.to_numeric(frame[name], errors="coerce").dropna().unique()
    return float(v[0]) if v.size == 1 and np.isfinite(v[0]) and v[0] > 0 else None


def compressor_bpb(points: Points) -> float | None:
    """xz -9e on the study's validation text, bits per byte (None: not a corpus study)."""
    return _column(points.frame, "compressor_bpb")


def in_bits_per_byte(points: Points, loss) -> np.ndarray | None:
    """`loss` (in the points' unit) as bits per byte; None when it cannot be converted."""
    loss = np.asarray(loss, float)
    if points.loss_unit == "bits/byte":
        return loss
    bpt = _column(points.frame, "bytes_per_token")
    return loss / bpt / math.log(2) if bpt else None


def compressor_notes(points: Points) -> list[str]:
    """One line for `scalelab fit`: the compressor's figure beside the fitted unit."""
    xz = compressor_bpb(points)
    if xz is None:
        return []
    best = in_bits_per_byte(points, points.loss.min())
    return [
        f"reference: xz -9e on the same validation text = {xz:.4f} bits/byte; best run "
        + (f"{float(best):.4f} bits/byte" if best is not None else "n/a")
        + f" (losses fitted here in {points.loss_unit})"
    ]


def compressor_section(ctx) -> dict | None:
    """Report section: the compressor's line beside the runs and the fitted E, in bits/byte."""
    from .report_doc import esc, md_table, plt, section

    points = ctx.points
    xz = compressor_bpb(points)
    bpb = in_bits_per_byte(points, points.loss)
    if xz is None or bpb is None:
        return None
    frame = points.frame.assign(bits_per_byte=bpb)
    best = frame.loc[frame["bits_per_byte"].idxmin()]
    rows = pd.DataFrame(
        {
            "what": ["xz -9e (general-purpose compressor)", "best run", "fitted E (Approach 3, N, D -> inf)"],
            "bits/byte": [xz, best["bits_per_byte"], np.nan],
            "vs xz": ["1", f"{best['bits_per_byte'] / xz:.3f}", "—"],
        }
    )
    fit = ctx.approach3
    e = in_bits_per_byte(points, fit.params_["E"]) if fit.success_ and fit.converged_ else None
    if e is not None and float(e) > 1e-3 * float(np.min(bpb)):  # else E sits at its lower bound
        rows.loc[2, "bits/byte"] = float(e)
        rows.loc[2, "vs xz"] = f"{float(e) / xz:.3f}"
    else:
        rows.loc[2, "vs xz"] = "not identified by these runs (fit not converged or E at its bound)"
    fig, ax = plt.subplots(figsize=(6, 4))
    for n, g in frame.groupby("n_params"):
        ax.plot(g["flops"], g["bits_per_byte"], "o-", label=f"N={n:.3g}")
    ax.axhline(xz, color="k", ls="--", label=f"xz -9e: {xz:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("held-out loss (bits/byte)")
    ax.set_title("Runs against a general-purpose compressor")
    ax.legend(fontsize=7)
    fig.tight_layout()
    text = esc(
        f"Bits per byte do not depend on the tokenizer, so they compare with a compressor: xz at "
        f"its strongest level on the same validation text gives {xz:.4f} bits/byte. The best run "
        f"(N={best['n_params']:.3g}, D={best['tokens']:.3g}) reaches {best['bits_per_byte']:.4f}."
    )
    return section("Bits per byte against a compressor", [text, md_table(rows)], {"compressor.png": fig})
