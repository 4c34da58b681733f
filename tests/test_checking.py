"""Model checking: pointwise log-likelihoods and leave-one-cluster-out LOO."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, FULL_RUN
from scipy import stats

import bayes_msem as bm
from bayes_msem.checking import row_log_likelihood
from bayes_msem.spec import build_spec


def test_row_log_likelihood_equals_scipy():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"x": rng.normal(size=30), "y1": rng.normal(size=30), "y2": rng.normal(size=30)})
    spec = build_spec("y1 ~ x\ny2 ~ y1 + x", data)
    theta = np.array([[[0.3, -0.2, 0.5, 1.2, 0.8, 0.1, -0.1]]])
    assert theta.shape[-1] == spec.table.n_free
    values = row_log_likelihood(spec, theta)[0, 0]
    from bayes_msem.matrices import level_moments

    m = level_moments(theta[0, 0], spec.within)
    y, x = spec.data.within_outcomes, spec.data.within_covariates
    expected = [stats.multivariate_normal(m.mean + m.Pi @ x[i], m.Sigma).logpdf(y[i]) for i in range(len(y))]
    np.testing.assert_allclose(values, expected, rtol=1e-10)


FIXED_SLOPES = """level: 1
  m ~ x
  y ~ m + x
level: 2
  m ~~ y
"""


@pytest.mark.slow
def test_loo_prefers_the_generating_random_slope_model():
    data = pd.read_csv(DATA / "mediation_111_random_slopes.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        true = bm.Model(bm.example_model("mediation_111_random_slopes"), data, cluster="cluster",
                        centering={"m": "none"}).fit(**FULL_RUN)
        fixed = bm.Model(FIXED_SLOPES, data, cluster="cluster", centering={"m": "none"}).fit(**FULL_RUN)
    loo = true.loo()
    assert loo.n_data_points == 150 and loo.pareto_k.max() < 0.7
    table = bm.compare({"random slopes": true, "fixed slopes": fixed})
    assert table.index[0] == "random slopes"
    assert table.loc["fixed slopes", "elpd_diff"] > 4 * table.loc["fixed slopes", "dse"]
    # WAIC on the same units, against its definition (Gelman et al. 2014, eq. 13; ArviZ takes the
    # variance over draws with ddof=0)
    loglik = true.idata.log_likelihood["loglik"].values.reshape(-1, 150)
    lppd = np.log(np.mean(np.exp(loglik - loglik.max(0)), axis=0)) + loglik.max(0)
    assert true.waic().elpd_waic == pytest.approx(np.sum(lppd - loglik.var(axis=0)), rel=1e-9)
    assert bm.compare({"random slopes": true, "fixed slopes": fixed}, ic="waic").index[0] == "random slopes"
