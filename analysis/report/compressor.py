"""The report section of a corpus study: its runs and fitted E against a general-purpose
compressor (xz -9e) on the same validation text, in bits per byte (analysis/compressor.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..compressor import compressor_bpb, in_bits_per_byte
from .doc import esc, md_table, plt, section


def compressor_section(ctx) -> dict | None:
    """Report section: the compressor's line beside the runs and the fitted E, in bits/byte."""
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
    fit = ctx.approach3  # the answer's chosen form
    ok = fit is not None and fit.success_ and fit.converged_
    e = in_bits_per_byte(points, fit.params_["E"]) if ok else None
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
