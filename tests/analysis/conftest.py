"""Shared fixtures: the Epoch AI digitisation of Chinchilla's Figure 4 (tests/data)."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "chinchilla_epoch_svg_extracted.csv"


@pytest.fixture(scope="session")
def epoch_csv():
    return DATA


@pytest.fixture(scope="session")
def epoch_all():
    from analysis import load_csv

    return load_csv(DATA)


@pytest.fixture(scope="session")
def epoch_points(epoch_all):
    """Epoch's default subset: the 5 highest losses dropped (240 points)."""
    return epoch_all.drop_top_loss(5)


@pytest.fixture(scope="session")
def epoch_fit(epoch_points):
    from analysis import ChinchillaFit

    return ChinchillaFit().fit(epoch_points.N, epoch_points.D, epoch_points.loss)


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(12345)
