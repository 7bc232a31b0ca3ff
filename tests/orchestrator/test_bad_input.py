"""Bad study files: exit status 2, a message naming the key, nothing written anywhere."""

from __future__ import annotations

import pytest

from orchestrator.cli import main
from tests.conftest import write_study

GOOD = {
    "study": "bad-input",
    "data": "{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16}",
    "model": "{d_head: 8, aspect_ratio: 8}",
    "grid": "{sizes: [{n_layer: 1, d_model: 16}], tokens: [4096]}",
    "train": "{batch_size: 8, lr: 1.0e-2}",
}


def study_text(**override):
    parts = dict(GOOD, **override)
    return "".join(f"{k}: {v}\n" for k, v in parts.items() if v is not None)


CASES = [
    # (description, yaml text, key the message must name)
    ("malformed yaml", "study: [unclosed\n", "not valid YAML"),
    ("not a mapping", "- just\n- a list\n", "mapping"),
    ("missing study", study_text(study=None), "study"),
    ("unicode name", study_text(study="étude"), "study"),
    ("unknown top key", study_text() + "resorces: {num_cpus: 1}\n", "resorces"),
    ("unknown data key", study_text(data="{source: markov, vocab: 16}"), "data.vocab"),
    ("unknown source", study_text(data="{source: wiki}"), "data.source"),
    ("vocab too large", study_text(data="{source: markov, vocab_size: 70000, order: 1}"), "data.vocab_size"),
    ("text path missing", study_text(data="{source: text, paths: [/no/such/dir]}"), "data.paths[0]"),
    ("wrong type lr", study_text(train="{lr: fast}"), "train.lr"),
    ("negative lr", study_text(train="{lr: -1.0}"), "train.lr"),
    ("unknown schedule", study_text(train="{schedule: linear}"), "train.schedule"),
    ("size too small", study_text(grid="{sizes: [10], tokens: [4096]}"), "grid.sizes[0]"),
    ("negative size", study_text(grid="{sizes: [-5.0e4], tokens: [4096]}"), "grid.sizes[0]"),
    (
        "heads do not divide",
        study_text(grid="{sizes: [{n_layer: 1, d_model: 20, n_head: 3}], tokens: [4096]}"),
        "grid.sizes[0]",
    ),
    (
        "top_k > experts",
        study_text(
            grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [4096], moe: [{experts: 2, top_k: 3}]}"
        ),
        "grid.moe[0].top_k",
    ),
    (
        "tokens below a batch",
        study_text(grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [10]}"),
        "grid.tokens[0]",
    ),
    (
        "huge tokens",
        study_text(grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [1.0e40]}"),
        "grid.tokens[0]",
    ),
    ("nan tokens", study_text(grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [.nan]}"), "grid.tokens[0]"),
    (
        "two grid kinds",
        study_text(grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [4096], tokens_per_param: [20]}"),
        "grid.tokens_per_param",
    ),
    ("no budget", study_text(grid="{sizes: [{n_layer: 1, d_model: 16}]}"), "grid"),
    ("zero cpus", study_text() + "resources: {num_cpus: 0}\n", "resources.num_cpus"),
    ("gpus no node has", study_text() + "resources: {num_gpus: 64}\n", "resources.num_gpus"),
]


@pytest.mark.parametrize("desc,text,key", CASES, ids=[c[0] for c in CASES])
def test_bad_study_exits_2_naming_the_key(desc, text, key, tmp_path, capsys, ray_session):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    home = tmp_path / "store"
    assert main(["run", str(path), "--home", str(home), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert key in err, err
    assert "error:" in err
    assert not home.exists(), "bad input must not create the store"


def test_unreachable_tracking_uri_and_address(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", study_text())
    home = tmp_path / "store"
    assert (
        main(["run", str(path), "--home", str(home), "--tracking-uri", "postgresql://nobody@127.0.0.1:1/x"])
        == 2
    )
    assert "--tracking-uri" in capsys.readouterr().err
    assert main(["run", str(path), "--home", str(home), "--address", "127.0.0.1:1"]) == 2
    assert "--address" in capsys.readouterr().err
    assert not home.exists()
