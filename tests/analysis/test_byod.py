"""Bringing one's own CSV: case-insensitive flags, export names of W&B / MLflow / TensorBoard,
delimiter detection, --dropna, run-state filtering, kaplan-d warning, failed-fit message."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import InputError, load_csv
from analysis.cli import main

N = np.repeat(np.logspace(7, 9, 4), 4)
D = np.tile(np.logspace(9, 11, 4), 4)
L = 1.8 + 400 / N**0.34 + 2000 / D**0.36


def _write(tmp_path, df, name="runs.csv", **kw):
    p = tmp_path / name
    df.to_csv(p, index=False, **kw)
    return p


def _fit_json(argv, capsys):
    code = main(["fit", *argv, "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def test_column_flags_are_case_insensitive(tmp_path, capsys):
    p = _write(tmp_path, pd.DataFrame({"Size": N, "Toks": D, "Val": L}))
    code, res, err = _fit_json(
        ["--csv", str(p), "--n-col", "size", "--d-col", "TOKS", "--loss-col", "val"], capsys
    )
    assert code == 0, err
    assert res["n_points"] == 16 and abs(res["params"]["alpha"] - 0.34) < 1e-3


def test_wandb_export_names_and_state_filter(tmp_path, capsys):
    state = ["finished"] * 13 + ["crashed", "crashed", "running"]
    df = pd.DataFrame(
        {
            "Name": [f"r{i}" for i in range(16)],
            "State": state,
            "n_params": N,
            "train_flops": 6 * N * D,
            "loss": L + 0.5,
            "val/loss": L,
        }
    )
    p = _write(tmp_path, df)
    code, res, err = _fit_json(["--csv", str(p)], capsys)
    assert code == 0, err
    assert res["excluded"] == {"crashed": 2, "running": 1}
    notes = " ".join(res["notes"])
    assert "columns taken: N <- 'n_params', C <- 'train_flops', loss <- 'val/loss'" in notes
    assert "excluded 3 run(s) whose 'State' is not finished" in notes
    assert abs(res["params"]["E"] - 1.8) < 1e-3  # fitted the validation loss, not "loss"


def test_mlflow_and_tensorboard_export_names(tmp_path):
    df = pd.DataFrame(
        {
            "Run ID": range(16),
            "Status": ["FINISHED"] * 15 + ["FAILED"],
            "params.n_params": N,
            "params.tokens": D,
            "metrics.eval_loss": L,
        }
    )
    pts = load_csv(_write(tmp_path, df))
    assert len(pts) == 15 and pts.excluded == {"failed": 1}
    tb = pd.DataFrame({"num_params": N, "tokens_seen": D, "eval/loss": L})
    pts = load_csv(_write(tmp_path, tb, "tb.csv"))
    np.testing.assert_allclose(pts.loss, L)
    assert "loss <- 'eval/loss'" in pts.notes[0]


@pytest.mark.parametrize("sep,word", [(";", "';'"), ("\t", "tab")])
def test_delimiter_detected(tmp_path, sep, word):
    p = _write(tmp_path, pd.DataFrame({"N": N, "D": D, "loss": L}), sep=sep)
    pts = load_csv(p)
    np.testing.assert_allclose(pts.N, N)
    assert f"delimiter {word} detected" in pts.notes


def test_dropna_drops_and_counts(tmp_path, capsys):
    df = pd.DataFrame({"N": N, "D": D, "loss": L})
    df.loc[[2, 5], "loss"] = np.nan
    df["D"] = df["D"].astype(object)
    df.loc[7, "D"] = "n/a"
    p = _write(tmp_path, df)
    with pytest.raises(InputError, match="--dropna"):
        load_csv(p)
    code, res, err = _fit_json(["--csv", str(p), "--dropna"], capsys)
    assert code == 0, err
    assert res["n_points"] == 13
    assert res["excluded"] == {"missing or invalid value (--dropna)": 3}


def test_kaplan_d_warns_when_spanning_many_sizes(tmp_path, capsys):
    p = _write(tmp_path, pd.DataFrame({"N": N, "D": D, "loss": L}))
    code, res, err = _fit_json(["--csv", str(p), "--law", "kaplan-d"], capsys)
    assert "kaplan-d: the runs span 4 model sizes" in err
    one = _write(tmp_path, pd.DataFrame({"N": N[-4:], "D": D[-4:], "loss": L[-4:]}), "one.csv")
    code, res, err = _fit_json(["--csv", str(one), "--law", "kaplan-d"], capsys)
    assert "model sizes" not in err


def test_failed_fit_prints_reason_first(tmp_path, capsys):
    p = _write(tmp_path, pd.DataFrame({"N": N[:4], "D": D[:4], "loss": L[:4]}))
    code = main(["fit", "--csv", str(p)])
    out = capsys.readouterr().out
    assert code == 2
    assert out.splitlines()[0].startswith("fit failed: unidentifiable")
    assert "nan" not in out


def test_mlflow_sql_read_matches_search_runs(tmp_path):
    """The direct SQL read of a SQLite store returns what search_runs returns (deleted runs
    skipped, latest metric values)."""
    from mlflow.tracking import MlflowClient

    from analysis.data import _experiment_id, _sql_point_runs, search_all_runs
    from tests.analysis.test_data_cli import _make_store

    uri, _ = _make_store(tmp_path)
    c = MlflowClient(tracking_uri=uri)
    eid = _experiment_id(c, "study1")
    gone = c.create_run(eid, tags={"scalelab.role": "point"})
    c.delete_run(gone.info.run_id)
    api = {
        r.info.run_id: (r.info.status, r.data.params, r.data.tags, r.data.metrics)
        for r in search_all_runs(c, eid, "tags.`scalelab.role` = 'point'")
    }
    sql = {rid: (st, p, t, m) for rid, st, p, t, m in _sql_point_runs(uri, eid)}
    assert len(sql) == 17 and gone.info.run_id not in sql
    assert sql == api
