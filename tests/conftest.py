"""Shared fitted models: each slow reference fit runs once per test session."""

from pathlib import Path

import pandas as pd
import pytest

import bayes_msem as bm

DATA = Path(__file__).parent / "data"

HOLZINGER_SWINEFORD_CFA = """visual =~ x1 + x2 + x3
textual =~ x4 + x5 + x6
speed =~ x7 + x8 + x9"""

POLITICAL_DEMOCRACY_SEM = """ind60 =~ x1 + x2 + x3
dem60 =~ y1 + y2 + y3 + y4
dem65 =~ y5 + y6 + y7 + y8
dem60 ~ ind60
dem65 ~ ind60 + dem60
y1 ~~ y5"""

POLITICAL_DEMOCRACY_PATH = """y1 ~ x1
y5 ~ y1 + x1
y6 ~ x1 + x2"""

# Full runs as the issue asks: default priors, 4 chains x 1000 draws.
FULL_RUN = dict(draws=1000, tune=1000, chains=4, random_seed=20261128, progressbar=False)


@pytest.fixture(scope="session")
def demo_fit():
    return bm.Model(bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), cluster="cluster").fit(**FULL_RUN)


@pytest.fixture(scope="session")
def demo_latent_fit():
    model = bm.Model(bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), cluster="cluster",
                     engine="latent")
    return model.fit(**FULL_RUN, target_accept=0.9)  # a near-zero between variance (y1) is a funnel here


@pytest.fixture(scope="session")
def ex9_6_fit():
    return bm.Model(bm.example_model("mplus_ex9_6"), bm.example_data("mplus_ex9_6"), cluster="clus").fit(**FULL_RUN)


@pytest.fixture(scope="session")
def holzinger_swineford_fit():
    data = pd.read_csv(DATA / "holzinger_swineford.csv")
    return bm.Model(HOLZINGER_SWINEFORD_CFA, data).fit(**FULL_RUN)


@pytest.fixture(scope="session")
def political_democracy_path_fit():
    data = pd.read_csv(DATA / "political_democracy.csv")
    return bm.Model(POLITICAL_DEMOCRACY_PATH, data).fit(**FULL_RUN)


@pytest.fixture(scope="session")
def political_democracy_fit():
    data = pd.read_csv(DATA / "political_democracy.csv")
    return bm.Model(POLITICAL_DEMOCRACY_SEM, data).fit(**FULL_RUN)


def simulate_small_two_level(seed: int = 11, clusters: int = 30, size: int = 8) -> pd.DataFrame:
    """A small two-level mediation-like data set for fast tests."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(clusters), size)
    x = rng.normal(size=clusters * size)
    m = 0.5 * x + rng.normal(scale=0.5, size=clusters)[cluster] + rng.normal(size=clusters * size)
    y = 0.4 * m + 0.2 * x + rng.normal(scale=0.5, size=clusters)[cluster] + rng.normal(size=clusters * size)
    return pd.DataFrame({"school": cluster, "x": x, "m": m, "y": y})


SMALL_TWO_LEVEL = """level: 1
  m ~ a*x
  y ~ b*m + x
level: 2
  y ~~ m
ab := a*b"""

QUICK_RUN = dict(draws=150, tune=150, chains=2, random_seed=5, progressbar=False)


@pytest.fixture(scope="session")
def small_fit():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few draws: low-ESS warnings are expected here
        return bm.Model(SMALL_TWO_LEVEL, simulate_small_two_level(), cluster="school").fit(**QUICK_RUN)


@pytest.fixture(scope="session")
def mediation_fit():
    """The 1-1-1 random-slope mediation of the brms reference, collapsed engine."""
    model = bm.Model(bm.example_model("mediation_111_random_slopes"), bm.example_data("mediation_111_random_slopes"),
                     cluster="cluster", centering={"m": "none"})
    assert model.engine == "collapsed"
    return model.fit(**FULL_RUN)


@pytest.fixture(scope="session")
def mediation_latent_fit():
    model = bm.Model(bm.example_model("mediation_111_random_slopes"), bm.example_data("mediation_111_random_slopes"),
                     cluster="cluster", centering={"m": "none"}, engine="latent")
    return model.fit(**FULL_RUN, target_accept=0.9)
