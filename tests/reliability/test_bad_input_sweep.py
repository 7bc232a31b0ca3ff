"""Fault 7: malformed study files and CSVs against an EXISTING store and ledger: exit 2, a message
naming the key, and the store, ledger and checkpoints byte-for-byte unchanged."""

from __future__ import annotations

import pytest

from orchestrator.cli import main
from tests.orchestrator.test_bad_input import CASES as STUDY_CASES
from tests.orchestrator.test_bad_input import study_text
from tests.reliability.helpers import tree_hashes

GOOD_NAME = "bad-input"  # the study the store already holds (test_bad_input's GOOD)

MORE_STUDY_CASES = [
    ("name collides with a different study", study_text(train="{batch_size: 8, lr: 2.0e-2}"), "study"),
    (
        "path traversal to a non-data dir",
        study_text(data="{source: tokens, vocab_size: 16, seq_len: 16, paths: [../../../../../../../etc]}"),
        "data.paths[0]",
    ),
    (
        "path traversal to a missing file",
        study_text(data="{source: text, paths: [../../../../../../no/such/../../etc/nothing.txt]}"),
        "data.paths[0]",
    ),
    ("NaN string lr", study_text(train="{batch_size: 8, lr: 'NaN'}"), "train.lr"),
    ("nan float lr", study_text(train="{batch_size: 8, lr: .nan}"), "train.lr"),
    ("inf batch", study_text(train="{batch_size: .inf, lr: 1.0e-2}"), "train.batch_size"),
    ("huge size", study_text(grid="{sizes: [1.0e300], tokens: [4096]}"), "grid.sizes[0]"),
    ("zero tokens", study_text(grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [0]}"), "grid.tokens[0]"),
    ("string in sizes", study_text(grid="{sizes: [big], tokens: [4096]}"), "grid.sizes[0]"),
    ("bool seq_len", study_text(data="{source: markov, vocab_size: 16, seq_len: true}"), "data.seq_len"),
    ("unicode key", study_text() + "donnée: 1\n", "donnée"),
    ("path traversal in study name", study_text(study="../../escape"), "study"),
]
CSV_CASES = [
    ("csv missing loss column", "n,d\n1e6,2e7\n2e6,4e7\n", "loss"),
    ("csv NaN strings", "n,d,loss\n1e6,2e7,NaN\n2e6,4e7,3.1\n", "loss"),
    ("csv negative N", "n,d,loss\n-1e6,2e7,3.2\n2e6,4e7,3.1\n", "n"),
    ("csv zero tokens", "n,d,loss\n1e6,0,3.2\n2e6,4e7,3.1\n", "d"),
    ("csv huge overflow", "n,d,loss\n1e999,2e7,3.2\n2e6,4e7,3.1\n", "n"),
    ("csv text in numbers", "n,d,loss\nabc,2e7,3.2\n2e6,4e7,3.1\n", "n"),
    ("csv empty", "", "csv"),
    ("csv unicode headers", "paramètres,données,perte\n1e6,2e7,3.2\n", "column"),
]


@pytest.fixture(scope="module")
def existing_store(tmp_path_factory, ray_session):
    """A store holding one finished study (GOOD of test_bad_input), closed, then hashed."""
    tmp = tmp_path_factory.mktemp("existing")
    path = tmp / "good.yaml"
    path.write_text(study_text())
    home = tmp / "store"
    assert main(["run", str(path), "--home", str(home), "--no-progress"]) == 0
    import gc

    gc.collect()
    hashes = tree_hashes(home)
    assert {"mlflow.db", "ledger.db"} <= set(hashes) and any(k.endswith("ckpt.pt") for k in hashes)
    return home, hashes


ALL = [(d, "study", t, k) for d, t, k in STUDY_CASES + MORE_STUDY_CASES] + [
    (d, "csv", t, k) for d, t, k in CSV_CASES
]


def test_the_sweep_is_large_enough():
    assert len(ALL) >= 25 and len(CSV_CASES) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("desc,kind,text,key", ALL, ids=[a[0] for a in ALL])
def test_bad_input_leaves_an_existing_store_byte_identical(
    desc, kind, text, key, existing_store, tmp_path, capsys
):
    home, hashes = existing_store
    if kind == "study":
        path = tmp_path / "study.yaml"
        path.write_text(text, encoding="utf-8")
        argv = ["run", str(path), "--home", str(home), "--no-progress"]
    else:
        path = tmp_path / "points.csv"
        path.write_text(text, encoding="utf-8")
        argv = ["fit", "--csv", str(path), "--home", str(home)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and key in err, err
    assert tree_hashes(home) == hashes, "bad input changed the store, ledger or checkpoints"
