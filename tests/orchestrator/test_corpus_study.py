"""A study on an ingested corpus: `scalelab data ingest`, the study keys (data.path,
data.max_epochs), plan's epochs, the fingerprint, bad input (exit 2 naming the key), and one tiny
study end to end on a real local Ray and SQLite MLflow store (val_bpb and epochs logged)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.store.tracking import fingerprint_hash
from orchestrator.study.config import load_study
from tests.conftest import write_study
from tests.corpus_data import documents, write_tree

STUDY = """\
study: {name}
data: {{source: corpus, path: {path}, seq_len: 16, val_tokens: 512{extra}}}
model: {{d_head: 8, aspect_ratio: 8}}
grid:
  sizes: [{{n_layer: 1, d_model: 8}}, {{n_layer: 1, d_model: 16}}]
  tokens: {tokens}
train: {{batch_size: 8, lr: 1.0e-2}}
resources: {{num_cpus: 1, num_gpus: 0}}
"""


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Ingested once through the CLI: ~25k training tokens at vocab 300."""
    tmp = tmp_path_factory.mktemp("corpus")
    write_tree(tmp / "src", documents(80, seed=5))
    argv = ["data", "ingest", str(tmp / "src"), "--out", str(tmp / "c"), "--vocab-size", "300"]
    assert main([*argv, "--val-fraction", "0.25", "--no-progress"]) == 0
    return tmp / "c"


def _study(tmp_path, corpus, name="corp", tokens="[4096, 8192]", extra=""):
    return write_study(
        tmp_path / f"{name}.yaml", STUDY.format(name=name, path=corpus, tokens=tokens, extra=extra)
    )


def test_ingest_cli_json_and_up_to_date(corpus, capsys):
    code, out, err = _run(["data", "ingest", str(corpus.parent / "src"), "--out", str(corpus),
                           "--vocab-size", "300", "--val-fraction", "0.25", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert res["up_to_date"] is True and res["vocab_size"] == 300 and res["dtype"] == "uint16"


@pytest.mark.parametrize(
    "argv,frag",
    [
        (["--vocab-size", "70000", "--dtype", "uint16"], "--vocab-size: 70000 token ids do not fit uint16"),
        (["--vocab-size", "5000000000"], "--vocab-size"),
        (["--val-fraction", "0.9"], "--val-fraction"),
    ],
)
def test_ingest_cli_bad_input_exit_2(corpus, tmp_path, capsys, argv, frag):
    code, out, err = _run(
        ["data", "ingest", str(corpus.parent / "src"), "--out", str(tmp_path / "o"), *argv], capsys
    )
    assert code == 2 and frag in err and not (tmp_path / "o").exists()
    code, _, err = _run(["data", "ingest", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "PATH" in err and "--python-stdlib" in err


def test_plan_shows_epochs_and_refuses_too_many(corpus, tmp_path, capsys):
    train_tokens = json.loads((corpus / "meta.json").read_text())["train_tokens"]
    code, out, err = _run(["plan", str(_study(tmp_path, corpus)), "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert sorted(r["epochs"] for r in rows) == pytest.approx(
        sorted([4096 / train_tokens] * 2 + [8192 / train_tokens] * 2)
    )
    code, out, _ = _run(["plan", str(_study(tmp_path, corpus))], capsys)
    assert code == 0 and " epochs " in out.splitlines()[1]
    big = (int(5 * train_tokens) // 128 + 1) * 128  # > 4 epochs
    code, out, err = _run(["plan", str(_study(tmp_path, corpus, "rep", f"[4096, {big}]"))], capsys)
    assert code == 2 and "data.max_epochs" in err and out == ""
    code, out, err = _run(
        ["plan", str(_study(tmp_path, corpus, "rep", f"[4096, {big}]", ", max_epochs: 8"))], capsys
    )
    assert code == 0, err


def test_bad_corpus_input_exit_2_naming_the_key(corpus, tmp_path, capsys):
    code, _, err = _run(["plan", str(_study(tmp_path, tmp_path / "missing"))], capsys)
    assert code == 2 and "data.path" in err and "scalelab data ingest" in err
    half = tmp_path / "half"
    shutil.copytree(corpus, half)
    (half / "val.bin").write_bytes((half / "val.bin").read_bytes()[:-2])
    code, _, err = _run(["plan", str(_study(tmp_path, half))], capsys)
    assert code == 2 and "data.path" in err and "half-written" in err
    val_tokens = json.loads((corpus / "meta.json").read_text())["val_tokens"]
    code, _, err = _run(
        ["plan", str(_study(tmp_path, corpus, extra=f", val_tokens: {val_tokens + 64}"))], capsys
    )
    assert code == 2 and "data.val_tokens" in err and "--val-fraction" in err
    code, _, err = _run(["plan", str(_study(tmp_path, corpus, extra=", vocab_size: 512"))], capsys)
    assert code == 2 and "data.vocab_size" in err


def test_fingerprint_has_the_corpus_and_tokenizer_hashes(corpus, tmp_path):
    cfg = load_study(_study(tmp_path, corpus))
    fp = cfg.fingerprint()["data"]
    meta = json.loads((corpus / "meta.json").read_text())
    assert fp["corpus_hash"] == meta["corpus_hash"] and fp["tokenizer_hash"] == meta["tokenizer_hash"]
    assert "path" not in fp  # a moved corpus is the same data
    moved = tmp_path / "moved"
    shutil.copytree(corpus, moved)
    assert fingerprint_hash(load_study(_study(tmp_path, moved)).fingerprint()) == fingerprint_hash(
        cfg.fingerprint()
    )
    # re-ingested from other text: a new dataset, so a new study fingerprint
    write_tree(tmp_path / "src", documents(80, seed=7))
    assert main(["data", "ingest", str(tmp_path / "src"), "--out", str(moved), "--vocab-size", "300",
                 "--val-fraction", "0.25", "--no-progress"]) == 0  # fmt: skip
    assert fingerprint_hash(load_study(_study(tmp_path, moved)).fingerprint()) != fingerprint_hash(
        cfg.fingerprint()
    )


def test_corpus_study_end_to_end(corpus, tmp_path, store, ray_session, capsys):
    path = _study(tmp_path, corpus, "corpus-e2e", "[4096]")
    assert main(["run", str(path), "--no-progress"]) == 0
    meta = json.loads((corpus / "meta.json").read_text())
    c = MlflowClient(store.tracking_uri)
    exp = c.get_experiment_by_name("corpus-e2e")
    points = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("scalelab.role") == "point"]
    assert len(points) == 2
    for r in points:
        m, p = r.data.metrics, r.data.params
        assert m["val_bpb"] == pytest.approx(
            m["val_loss"] * meta["val_tokens"] / meta["bytes_val"] / math.log(2)
        )
        assert m["epochs"] == pytest.approx(4096 / meta["train_tokens"])
        assert p["data_source"] == "corpus" and p["corpus_hash"] == meta["corpus_hash"][:16]
        assert float(p["compressor_bpb"]) == pytest.approx(meta["compressor_bpb"])
