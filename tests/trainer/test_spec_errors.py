import pytest

from trainer.spec import DataSpec, ModelSpec, RecipeSpec, RunSpec, SpecError

from .conftest import tiny_spec

M = dict(n_layer=2, d_model=32, n_head=2, vocab_size=64, seq_len=16)


@pytest.mark.parametrize(
    "build,field,words",
    [
        (lambda: ModelSpec(**{**M, "n_layer": -1}), "model.n_layer", ">= 1"),
        (lambda: ModelSpec(**{**M, "d_model": 0}), "model.d_model", ">= 1"),
        (lambda: ModelSpec(**{**M, "d_model": 30, "n_head": 4}), "model.n_head", "not divisible"),
        (lambda: ModelSpec(**M, experts=4, top_k=5), "model.top_k", "exceeds experts"),
        (lambda: ModelSpec(**M, top_k=2), "model.top_k", "exceeds experts"),
        (lambda: DataSpec(vocab_size=70000), "data.vocab_size", "uint16"),
        (
            lambda: DataSpec(source="text", vocab_size=256, paths=("/no/such/dir",)),
            "data.paths[0]",
            "does not exist",
        ),
        (
            lambda: DataSpec(source="tokens", vocab_size=256, paths=("/no/such/dir",)),
            "data.paths[0]",
            "does not exist",
        ),
        (lambda: DataSpec(source="csv"), "data.source", "unknown source"),
        (lambda: RecipeSpec(lr=-1.0), "train.lr", "> 0"),
        (lambda: RecipeSpec(schedule="linear"), "train.schedule", "unknown schedule"),
        (lambda: tiny_spec(tokens=10), "tokens", "less than one batch"),
        (lambda: tiny_spec(tokens=-5), "tokens", ">= 1"),
    ],
)
def test_bad_specs_name_the_field(build, field, words):
    with pytest.raises(SpecError) as e:
        build()
    assert e.value.field == field
    assert field in str(e.value) and words in str(e.value)


def test_tokens_dir_without_bins(tmp_path):
    with pytest.raises(SpecError) as e:
        DataSpec(source="tokens", vocab_size=256, paths=(str(tmp_path),))
    assert e.value.field == "data.paths[0]" and "train.bin" in str(e.value)


def test_spec_roundtrip_and_keys():
    s = tiny_spec(tokens=4096)
    assert RunSpec.from_dict(s.to_dict()) == s
    assert s.key() == RunSpec.from_dict(s.to_dict()).key()
    longer = tiny_spec(tokens=8192)
    assert s.key() != longer.key() and s.trunk_key() == longer.trunk_key()
