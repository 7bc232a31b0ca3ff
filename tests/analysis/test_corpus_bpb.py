"""Corpus studies in the analysis: `fit --metric val_bpb`, the report in bits per byte, and the
compressor's reference line (analysis/compressor.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis import load_mlflow
from analysis.cli import main
from analysis.compressor import compressor_notes, in_bits_per_byte

BPT = 3.2  # bytes per token of the validation split
XZ = 1.61  # bits per byte of xz -9e on it
TO_BPB = 1 / BPT / math.log(2)


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("store"))


def _store(tmp_path):
    """16 finished corpus points: val_loss (nats/token) and val_bpb = val_loss / BPT / ln 2."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    eid = c.create_experiment("corp", artifact_location=str(tmp_path / "artifacts"))
    parent = c.create_run(eid, tags={"scalelab.role": "parent"})
    for i, (N, D) in enumerate((n, d) for n in np.logspace(6, 8, 4) for d in np.logspace(8, 10, 4)):
        r = c.create_run(
            eid,
            tags={
                "mlflow.parentRunId": parent.info.run_id,
                "scalelab.role": "point",
                "scalelab.outcome": "finished",
            },
        )
        loss = 1.9 + 300 / N**0.35 + 1500 / D**0.35
        params = {"run_key": f"k{i}", "n_params": int(N), "n_params_active": int(N), "tokens": int(D)}
        params.update(flops=6 * N * D, data_source="corpus", compressor_bpb=XZ, bytes_per_token=BPT, seed=0)
        params.update(experts=1, top_k=1, unique_tokens=int(1e11))
        c.log_batch(
            r.info.run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
            metrics=[Metric("val_loss", loss, 0, int(D)), Metric("val_bpb", loss * TO_BPB, 0, int(D))],
        )
        c.set_terminated(r.info.run_id, "FINISHED")
    return uri


def test_bits_per_byte_conversion_by_hand(uri):
    pts = load_mlflow("corp", uri)
    assert pts.loss_unit == "nats/token"
    # 2.0 nats/token at 3.2 bytes/token = 2.0 / 3.2 / ln 2 = 0.9016844 bits/byte
    assert float(in_bits_per_byte(pts, 2.0)) == pytest.approx(0.9016844005556021, rel=1e-12)
    bpb = load_mlflow("corp", uri, loss_metric="val_bpb")
    assert bpb.loss_unit == "bits/byte"
    both = pts.frame.merge(bpb.frame, on="run_id")
    np.testing.assert_allclose(both["loss_y"], both["loss_x"] * TO_BPB, rtol=1e-12)
    assert "xz -9e on the same validation text = 1.6100 bits/byte" in compressor_notes(bpb)[0]


def test_fit_metric_val_bpb(uri, capsys):
    code = main(["fit", "--experiment", "corp", "--tracking-uri", uri, "--metric", "val_bpb", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    res = json.loads(out.out)
    assert res["metric"] == "val_bpb" and res["loss_unit"] == "bits/byte"
    assert res["params"]["E"] == pytest.approx(1.9 * TO_BPB, rel=2e-3)  # E in bits per byte
    assert abs(res["params"]["alpha"] - 0.35) < 2e-3
    assert any("xz -9e" in n for n in res["notes"])
    code = main(["fit", "--experiment", "corp", "--tracking-uri", uri, "--metric", "nope"])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_report_in_bits_per_byte_with_the_compressor_line(uri, tmp_path, capsys):
    from analysis.cli import run_report

    code = run_report(
        "corp", uri, tmp_path / "rep", log_to_mlflow=False, n_bootstrap=0, grid="coarse", metric="val_bpb"
    )
    assert code == 0, capsys.readouterr().err
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "Bits per byte against a compressor" in md and "xz -9e" in md
    assert "loss (bits/byte)" in md and "loss (nats/token)" not in md
    assert (tmp_path / "rep" / "compressor.png").exists()
