"""The zipf source's study keys: accepted, validated once at load, errors name key and fix."""

from __future__ import annotations

import pytest

from orchestrator.study.config import StudyError, parse_study


def _study(**data):
    return {
        "study": "zipf-keys",
        "data": {"source": "zipf", "vocab_size": 32, "seq_len": 16, "val_tokens": 64, **data},
        "grid": {"sizes": [{"n_layer": 1, "d_model": 16}], "tokens": [4096]},
        "train": {"batch_size": 8},
    }


def test_zipf_keys_are_accepted():
    cfg = parse_study(_study(lexicon_size=1000, zipf_exponent=1.3, min_word_len=4, max_word_len=4))
    d = cfg.data
    assert (d.source, d.lexicon_size, d.zipf_exponent, d.min_word_len, d.max_word_len) == (
        "zipf",
        1000,
        1.3,
        4,
        4,
    )
    assert parse_study(_study(lexicon_size=2.0e3)).data.lexicon_size == 2000  # e-notation


@pytest.mark.parametrize(
    "data,key,fix",
    [
        ({"lexicon_size": 1}, "data.lexicon_size", ">= 2"),
        ({"lexicon_size": 5.0e6}, "data.lexicon_size", "<= 1000000"),
        (
            {"lexicon_size": 4000, "min_word_len": 2, "max_word_len": 2},
            "data.lexicon_size",
            "lower lexicon_size or raise max_word_len",
        ),
        ({"zipf_exponent": 0}, "data.zipf_exponent", "> 0"),
        ({"zipf_exponent": "steep"}, "data.zipf_exponent", "finite number"),
        ({"min_word_len": 0}, "data.min_word_len", ">= 1"),
        ({"min_word_len": 5, "max_word_len": 3}, "data.max_word_len", "raise max_word_len"),
        ({"max_word_len": 40}, "data.max_word_len", "<= 16"),
        ({"lexicon_words": 10}, "data.lexicon_words", "lexicon_size"),
    ],
)
def test_bad_zipf_keys_name_the_key_and_the_fix(data, key, fix):
    with pytest.raises(StudyError) as err:
        parse_study(_study(**data))
    assert err.value.key == key and fix in str(err.value)
