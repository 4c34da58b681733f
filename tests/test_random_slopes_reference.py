"""Random slopes and centering against lme4 and known truth (slow: full MCMC runs).

- A random intercept-and-slope regression with a cross-level interaction
  (models/random_slope_cross_level.lavaan) against lme4 ML on
  tests/data/cross_level.csv (simulated: 100 clusters of 20); the numbers come
  from `Rscript tests/data/make_lme4_references.R` (lme4 1.1,
  `lmer(y ~ x * w + (1 + x | cluster), REML = FALSE)`).
- The latent and collapsed engines give the same posterior for it.
- Lüdtke et al. (2008): when a level-1 predictor has a between component,
  the latent decomposition recovers the between effect, while the observed
  cluster mean is unreliable with small clusters and biases it towards the
  within effect.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, FULL_RUN, SHUFFLED_RUN, shuffled

import bayes_msem as bm

pytestmark = pytest.mark.slow

CROSS_LEVEL = (Path(__file__).parents[1] / "models" / "random_slope_cross_level.lavaan").read_text()

# lme4 estimate and standard error (fixed effects) or ML estimate (variance components)
LME4_FIXED = {
    ("y", "~1", "", "between"): (1.0189009965, 0.05919841811),
    ("s", "~1", "", "between"): (0.2995847860, 0.03609224707),
    ("y", "~", "w", "between"): (0.5617138887, 0.05989416793),
    ("s", "~", "w", "between"): (0.1705412448, 0.03636868004),  # the cross-level interaction x:w
}
LME4_VARIANCES = {
    ("y", "~~", "y", "between"): 0.30044461803,
    ("s", "~~", "s", "between"): 0.07512940342,
    ("y", "~~", "s", "between"): 0.06735729942,
    ("y", "~~", "y", "within"): 0.95167468101,
}


@pytest.fixture(scope="module")
def cross_level_fits():
    data = pd.read_csv(DATA / "cross_level.csv")
    collapsed = bm.Model(CROSS_LEVEL, data, cluster="cluster")
    latent = bm.Model(CROSS_LEVEL, data, cluster="cluster", engine="latent")
    assert collapsed.engine == "collapsed"
    return collapsed.fit(**FULL_RUN), latent.fit(**FULL_RUN)


@pytest.fixture(scope="module")
def cross_level_shuffled_fit():
    """The collapsed fit on a copy with rows shuffled and cluster ids relabelled (issue 12)."""
    data = shuffled(pd.read_csv(DATA / "cross_level.csv"), "cluster")[0]
    return bm.Model(CROSS_LEVEL, data, cluster="cluster").fit(**SHUFFLED_RUN)


@pytest.mark.parametrize("order", ["as shipped", "shuffled"])
def test_cross_level_interaction_matches_lme4(order, request):
    fit = (request.getfixturevalue("cross_level_fits")[0] if order == "as shipped"
           else request.getfixturevalue("cross_level_shuffled_fit"))
    summary = fit.summary().set_index(["lhs", "op", "rhs", "level"])
    for key, (estimate, se) in LME4_FIXED.items():
        assert abs(summary.loc[key, "median"] - estimate) <= 0.35 * se, key
    for key, estimate in LME4_VARIANCES.items():
        # ML variance components have no SE in lme4; posterior medians sit within 15%
        assert summary.loc[key, "median"] == pytest.approx(estimate, rel=0.15), key
    diagnostics = fit.diagnostics()
    assert diagnostics["divergences"] == 0 and diagnostics["max_r_hat"] <= 1.01


def test_engines_agree_with_random_slopes(cross_level_fits):
    collapsed, latent = (fit.summary().query("free").set_index(["lhs", "op", "rhs", "level"]) for fit in cross_level_fits)
    gap = (collapsed["mean"] - latent["mean"]).abs() / collapsed["sd"]
    # 0.1 posterior SD, or 3.5 Monte Carlo SEs where the latent engine's ESS is low
    mcse = latent["sd"] / np.sqrt(latent["ess_bulk"])
    assert ((gap <= 0.1) | ((collapsed["mean"] - latent["mean"]).abs() <= 3.5 * mcse)).all(), gap
    slopes = [fit.cluster_effects().query("variable == 's'")["mean"].to_numpy() for fit in cross_level_fits]
    assert np.corrcoef(*slopes)[0, 1] > 0.99


def simulate_ludtke(seed=7, clusters=300, size=5):
    """x has ICC 0.2; within effect 0.2, between effect 0.8 (Lüdtke et al. 2008)."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(clusters), size)
    x_between = rng.normal(scale=np.sqrt(0.2), size=clusters)
    x_within = rng.normal(scale=np.sqrt(0.8), size=clusters * size)
    y = (0.2 * x_within + 0.8 * x_between[cluster] + rng.normal(scale=0.5, size=clusters)[cluster]
         + rng.normal(size=clusters * size))
    return pd.DataFrame({"cluster": cluster, "x": x_between[cluster] + x_within, "y": y})


LUDTKE = """level: 1
  y ~ x
level: 2
  y ~ x
"""


def test_latent_decomposition_recovers_between_effect_that_observed_means_bias():
    data = simulate_ludtke()
    latent = bm.Model(LUDTKE, data, cluster="cluster").fit(**FULL_RUN).summary()
    observed = bm.Model(LUDTKE, data, cluster="cluster", centering={"x": "cluster-mean"}).fit(**FULL_RUN).summary()
    between_latent = latent[(latent.lhs == "y") & (latent.op == "~") & (latent.level == "between")].iloc[0]
    between_observed = observed[(observed.lhs == "y") & (observed.rhs == "x.cm")].iloc[0]
    assert between_latent["q2.5"] <= 0.8 <= between_latent["q97.5"]
    # reliability of a cluster mean of 5: 0.2 / (0.2 + 0.8 / 5) = 0.56, so the
    # observed-mean slope is pulled to 0.2 + 0.56 * (0.8 - 0.2) = 0.53
    assert between_observed["q97.5"] < 0.8
    assert between_observed["median"] == pytest.approx(0.53, abs=0.1)
    within_observed = observed[(observed.lhs == "y") & (observed.rhs == "x.cwc")].iloc[0]
    assert within_observed["q2.5"] <= 0.2 <= within_observed["q97.5"]
