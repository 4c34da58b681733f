"""Posterior predictive checks: the saturated model against lavaan, and the PPP
of correctly and wrongly specified models."""

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, HOLZINGER_SWINEFORD_CFA, reference_fit

import bayes_msem as bm
from bayes_msem.predictive import posterior_predictive_check, saturated_loglik, saturated_parameter_count
from bayes_msem.spec import build_spec

# lavaan 0.6.14, conditional on the covariates (lavaan's two-level ML is):
#   fitMeasures(sem(model, data, cluster = ...), c("unrestricted.logl", "df"))
# on the shipped demo_twolevel and mplus_ex9_6 data, and for
#   cfa(HS model, data = HolzingerSwineford1939)
LAVAAN_SATURATED = {
    "demo_twolevel": (-12072.520, 10),
    "mplus_ex9_6": (-6542.255, 17),
    "holzinger_swineford": (-3695.092, 24),
}


def _spec(name: str):
    if name == "holzinger_swineford":
        return build_spec(HOLZINGER_SWINEFORD_CFA, pd.read_csv(DATA / "holzinger_swineford.csv"))
    cluster = {"demo_twolevel": "cluster", "mplus_ex9_6": "clus"}[name]
    return build_spec(bm.example_model(name), bm.example_data(name), cluster=cluster)


@pytest.mark.parametrize("name", ["demo_twolevel", "holzinger_swineford"])
def test_saturated_loglik_matches_lavaan(name):
    spec = _spec(name)
    logl, df = LAVAAN_SATURATED[name]
    assert saturated_loglik(spec) == pytest.approx(logl, abs=0.005)
    assert saturated_parameter_count(spec) - len(spec.priors) == df


def test_saturated_loglik_on_the_boundary_is_at_least_lavaans():
    # ex9.6's saturated between covariance is nearly singular, where EM creeps:
    # lavaan stops after 500 iterations (em.h1.iter.max); ours runs longer and
    # ends slightly higher, never lower.
    spec = _spec("mplus_ex9_6")
    logl, df = LAVAAN_SATURATED["mplus_ex9_6"]
    assert logl - 1e-3 <= saturated_loglik(spec) <= logl + 0.2
    assert saturated_parameter_count(spec) - len(spec.priors) == df


# lavaan 0.6.14, missing = "ml": fitMeasures(sem(model, data, cluster = "cluster", missing = "ml"),
#   c("chisq", "df", "logl", "unrestricted.logl")) on shared/reference/demo_twolevel_mar.csv (chisq 8.989,
#   df 10, logl -10751.706, unrestricted.logl -10747.212) and tests/data/mar_outcome.csv (a saturated
#   model: chisq 0, logl -3798.721, and lavaan's EM stops at unrestricted.logl -3799.280, below its own
#   model's maximum).
def test_saturated_loglik_with_missing_values_matches_lavaan():
    from conftest import MAR_OUTCOME_CFA
    from test_missing_reference import lavaan_estimates, lavaan_theta

    from bayes_msem.engines.missing import missing_logp
    from bayes_msem.matrices import NUMPY_BACKEND

    spec = build_spec(bm.example_model("demo_twolevel_mar"), bm.example_data("demo_twolevel_mar"), cluster="cluster")
    saturated = saturated_loglik(spec)
    assert saturated == pytest.approx(-10747.212, abs=0.005)
    model = float(missing_logp(spec, lavaan_theta(spec, lavaan_estimates("demo_twolevel_mar_lavaan_ml.csv")),
                               NUMPY_BACKEND))
    assert 2 * (saturated - model) == pytest.approx(8.989, abs=0.01)  # lavaan's chi-square
    assert saturated_parameter_count(spec) - len(spec.priors) == 10
    spec = build_spec(MAR_OUTCOME_CFA, pd.read_csv(DATA / "mar_outcome.csv"), cluster="cluster")
    assert saturated_loglik(spec) == pytest.approx(-3798.721, abs=1e-3)  # where lavaan's EM stops 0.56 short


def test_random_slopes_have_no_ppp():
    data = bm.example_data("mediation_111_random_slopes")
    spec = build_spec(bm.example_model("mediation_111_random_slopes"), data, cluster="cluster")
    with pytest.raises(ValueError, match="saturated model"):
        posterior_predictive_check(spec, np.zeros((1, 1, len(spec.priors))))


CROSS_LOADING_TRUTH = """level: 1
fw1 =~ y1 + y2 + y3 + y4
fw2 =~ y4 + y5 + y6
level: 2
fb =~ y1 + y2 + y3 + y4 + y5 + y6"""
WITHOUT_CROSS_LOADING = CROSS_LOADING_TRUTH.replace("y3 + y4\n", "y3\n")
SHORT_RUN = dict(draws=500, tune=500, chains=2, random_seed=7, progressbar=False)


@pytest.fixture(scope="module")
def cross_loading_data():
    return bm.simulate_data(CROSS_LOADING_TRUTH, {"fw1=~y4|within": 0.6}, n_clusters=100, cluster_size=10, seed=3)


@pytest.mark.slow
def test_ppp_accepts_the_generating_model(cross_loading_data, tmp_path):
    result = bm.Model(CROSS_LOADING_TRUTH, cross_loading_data, cluster="cluster").fit(**SHORT_RUN)
    check = result.ppp(n_draws=300)
    assert 0.2 < check.ppp < 0.8
    # saturated: 21 covariances per level and 6 means; the model: 14 within and 18 between parameters
    assert check.df == 2 * 21 + 6 - 32
    # kept with the result
    result.save(tmp_path / "fit.nc")
    loaded = bm.load_result(tmp_path / "fit.nc").ppp()
    assert loaded.ppp == check.ppp
    pd.testing.assert_frame_equal(loaded.covariances, check.covariances)


@pytest.mark.slow
def test_ppp_rejects_a_missing_cross_loading(cross_loading_data):
    result = bm.Model(WITHOUT_CROSS_LOADING, cross_loading_data, cluster="cluster").fit(**SHORT_RUN)
    check = result.ppp(n_draws=300)
    assert check.ppp < 0.05
    # the within covariances of y4 with fw1's indicators are what the model misses
    table = check.covariances
    missed = table[(table.level == "within") & (table.lhs == "y4") & table.rhs.isin(["y1", "y2", "y3"])]
    assert (missed.p < 0.025).all()
    assert "PPP" in str(result)


@pytest.mark.slow
def test_ppp_of_a_single_level_model_rejects_holzinger_swineford(holzinger_swineford_fit):
    # lavaan's chi-square is 85.3 on 24 df (p < 0.001); blavaan reports PPP 0.000
    check = holzinger_swineford_fit.ppp(n_draws=300)
    assert check.ppp < 0.05
    assert check.df == 24


@pytest.mark.slow
def test_ppp_with_missing_values_rejects_a_missing_cross_loading():
    """The same misfit with 20% of y2-y6 missing at random (given y1): the
    replicates keep the data's holes and the saturated model is fitted to the
    observed values, so the check still sees it."""
    data = bm.simulate_data(CROSS_LOADING_TRUTH, {"fw1=~y4|within": 0.6}, n_clusters=100, cluster_size=10, seed=3,
                            missing={"rate": 0.2, "mechanism": "MAR", "depends_on": "y1",
                                     "variables": ["y2", "y3", "y4", "y5", "y6"]})
    assert data[["y2", "y3", "y4", "y5", "y6"]].isna().any(axis=1).mean() > 0.4
    result = bm.Model(WITHOUT_CROSS_LOADING, data, cluster="cluster").fit(**SHORT_RUN)
    check = result.ppp(n_draws=100)
    assert check.ppp < 0.05 and check.df == 2 * 21 + 6 - 31
    table = check.covariances
    missed = table[(table.level == "within") & (table.lhs == "y4") & table.rhs.isin(["y1", "y2", "y3"])]
    assert (missed.p < 0.025).all()


@pytest.mark.slow
def test_ppp_with_missing_values_accepts_demo_twolevel():
    # lavaan missing = "ml": chi-square 8.989 on 10 df, p = 0.53
    check = reference_fit("demo_mar").ppp(n_draws=100)
    assert 0.1 < check.ppp < 0.9 and check.df == 10
