"""Ordinal (probit) models against brms, lavaan and lme4 (slow: full MCMC runs).

Reference: shared/reference/ordinal_twolevel_brms_ref.csv, brms 2.18 (Stan)
`brm(y ~ x + w + (1 | cluster), family = cumulative("probit"))`, 2 chains x
1000 draws, on ordinal_twolevel.csv (150 clusters of 12; 4 categories; y* =
0.6 x + 0.4 w + u_j + e, var(u) = 0.5, thresholds -1, 0, 1.2). brms's
intercepts are our thresholds y|t1..t3, its b_x the within slope, b_w the
between slope, and the random-intercept variance the between variance of y*.

Tolerances (issue 15): posterior medians within 0.3 brms posterior SDs, 0.5
for the variance; the fit also runs on a copy with rows shuffled and cluster
ids relabelled.

The single-level CFA of five 3-category items and the binary outcome with a
random slope are checked against lavaan (WLSMV, theta parameterization) and
lme4's glmer (probit, Laplace): numbers from tests/data/make_ordinal_references.R.
"""

import pandas as pd
import pytest
from conftest import DATA, reference_fit

import bayes_msem as bm

pytestmark = pytest.mark.slow

LEVELS = {1.0: "within", 2.0: "between"}


def test_ordinal_two_level_regression_matches_brms(data_order):
    fit = reference_fit("ordinal", data_order)
    assert fit.info["engine"] == "latent"
    summary = fit.summary()
    reference = pd.read_csv(DATA / "ordinal_twolevel_brms_ref.csv")
    for row in reference.itertuples():
        level = LEVELS.get(row.level, "within")  # thresholds: no level in brms, ours sit within
        ours = summary[(summary.lhs == row.lhs) & (summary.op == row.op) & (summary.rhs == row.rhs)
                       & (summary.level == level)]
        assert len(ours) == 1, (row.lhs, row.op, row.rhs)
        tolerance = 0.5 if row.op == "~~" else 0.3
        distance = abs(ours["median"].iloc[0] - row.est) / row.se
        assert distance < tolerance, f"{row.lhs} {row.op} {row.rhs}: {distance:.2f} brms SDs"
        assert ours["q2.5"].iloc[0] < ours["median"].iloc[0] < ours["q97.5"].iloc[0]


def test_single_level_ordinal_cfa_matches_lavaan():
    """Loadings, thresholds and the factor variance within 0.4 lavaan SEs
    (WLSMV is a limited-information estimator, so not the same posterior mode;
    measured: at most 0.31)."""
    items = [f"u{k}" for k in range(1, 6)]
    data = pd.read_csv(DATA / "ordinal_cfa.csv")
    fit = bm.Model("f =~ " + " + ".join(items), data, ordered=items).fit(draws=300, tune=300, chains=2,
                                                                        random_seed=3, progressbar=False)
    reference = pd.read_csv(DATA / "ordinal_cfa_lavaan_wlsmv.csv")
    merged = reference[reference.se > 0].merge(fit.summary(), on=["lhs", "op", "rhs"])
    assert len(merged) == 15
    distance = (merged["median"] - merged["est"]).abs() / merged["se"]
    assert distance.max() < 0.4, merged.assign(distance=distance)[["lhs", "op", "rhs", "distance"]]


def test_binary_random_slope_matches_glmer():
    """glmer's intercept is minus our threshold; fixed effects within 0.3 glmer
    SEs, the variance components within 0.6 of our posterior SDs (measured:
    0.02-0.07 SEs; 0.01-0.52 SDs, the slope variance's posterior median above
    the Laplace estimate, as usual)."""
    data = pd.read_csv(DATA / "binary_random_slope.csv")
    fit = bm.Model("level: 1\n s | y ~ x\nlevel: 2\n y ~~ s", data, cluster="cluster",
                   ordered=["y"]).fit(draws=500, tune=500, chains=2, random_seed=3, progressbar=False)
    summary = fit.summary().set_index(["lhs", "op", "rhs", "level"])
    glmer = pd.read_csv(DATA / "binary_random_slope_glmer.csv").set_index("quantity")
    ours = {"intercept": ("y", "|", "t1", "within"), "slope": ("s", "~1", "", "between"),
            "var_intercept": ("y", "~~", "y", "between"), "var_slope": ("s", "~~", "s", "between"),
            "cov_intercept_slope": ("y", "~~", "s", "between")}
    for quantity, key in ours.items():
        median = -summary.loc[key, "median"] if quantity == "intercept" else summary.loc[key, "median"]
        estimate = glmer.loc[quantity, "est"]
        if quantity in ("intercept", "slope"):
            assert abs(median - estimate) < 0.3 * glmer.loc[quantity, "se"], quantity
        else:
            assert abs(median - estimate) < 0.6 * summary.loc[key, "sd"], quantity
