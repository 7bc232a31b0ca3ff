"""Memory bombs are refused at plan time, naming the key (issue 9)."""

from __future__ import annotations

import pytest

from orchestrator.cli import main
from orchestrator.study.config import StudyError, load_study
from orchestrator.study.grid import expand
from orchestrator.study.memory import GIB, check_memory, run_memory

BASE = """\
study: memory
data: {data}
model: {{d_head: 8, aspect_ratio: 8}}
grid: {grid}
train: {train}
resources: {resources}
"""
DATA = "{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16}"
GRID = "{sizes: [{n_layer: 1, d_model: 16}], tokens: [4096]}"
TRAIN = "{batch_size: 8, lr: 1.0e-2}"


def study(tmp_path, data=DATA, grid=GRID, train=TRAIN, resources="{num_cpus: 1}"):
    path = tmp_path / "s.yaml"
    path.write_text(BASE.format(data=data, grid=grid, train=train, resources=resources))
    return path


def refused(tmp_path, host_gib=16.0, **kw) -> StudyError:
    cfg = load_study(study(tmp_path, **kw))
    with pytest.raises(StudyError) as e:
        check_memory(cfg, expand(cfg), host_gib * GIB)
    return e.value


def test_long_sequences_name_seq_len(tmp_path):
    e = refused(
        tmp_path,
        data="{source: markov, vocab_size: 16, order: 1, seq_len: 1.0e+7, val_tokens: 2.0e+7}",
        grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [1.0e+9]}",
    )
    assert e.key == "data.seq_len" and "GiB" in e.message and "16 GiB" in e.message


def test_large_markov_vocabulary_names_vocab_size(tmp_path):
    e = refused(tmp_path, data="{source: markov, vocab_size: 65536, order: 1, seq_len: 16}")
    assert e.key == "data.vocab_size" and "markov" in e.message


def test_large_batch_names_batch_size(tmp_path):
    e = refused(
        tmp_path,
        train="{batch_size: 1.0e+7, lr: 1.0e-2}",
        grid="{sizes: [{n_layer: 1, d_model: 16}], tokens: [1.0e+9]}",
    )
    assert e.key == "train.batch_size"


def test_huge_explicit_shape_names_its_size(tmp_path):
    e = refused(
        tmp_path, grid="{sizes: [{n_layer: 1, d_model: 16}, {n_layer: 64, d_model: 65536}], tokens: [4096]}"
    )
    assert e.key == "grid.sizes[1]" and "explicit shape" in e.message


def test_gpu_runs_are_held_to_the_device_bound(tmp_path):
    cfg = load_study(
        study(
            tmp_path,
            grid="{sizes: [{n_layer: 96, d_model: 16384}], tokens: [1.0e+6]}",
            resources="{num_cpus: 1, num_gpus: 1}",
        )
    )
    with pytest.raises(StudyError) as e:
        check_memory(cfg, expand(cfg), 1e6 * GIB)  # plenty of RAM: the GPU is the bound
    assert e.value.key == "grid.sizes[0]" and "GPU" in e.value.message


def test_ordinary_studies_pass_and_estimates_scale(tmp_path):
    for path in ("configs/quickstart.yaml", "configs/isoflop.yaml", "configs/moe.yaml"):
        cfg = load_study(path)
        check_memory(cfg, expand(cfg), 1 * GIB)
    small = load_study(study(tmp_path))
    p = expand(small)[0]
    parts = run_memory(p)
    assert parts["model"] == 16 * p.n_params
    assert parts["logits"] == 3 * 4 * 8 * 16 * 16


def test_cli_exits_2_for_a_memory_bomb(tmp_path, capsys):
    path = study(tmp_path, data="{source: markov, vocab_size: 2048, order: 2, seq_len: 16}")
    assert main(["plan", str(path), "--home", str(tmp_path / "store")]) == 2
    assert "data.vocab_size" in capsys.readouterr().err


def test_explicit_shapes_have_upper_bounds(tmp_path, capsys):
    path = study(tmp_path, grid="{sizes: [{n_layer: 1.0e+6, d_model: 16}], tokens: [4096]}")
    assert main(["plan", str(path), "--home", str(tmp_path / "store")]) == 2
    assert "grid.sizes[0].n_layer" in capsys.readouterr().err
