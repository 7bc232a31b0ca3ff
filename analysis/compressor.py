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
