"""Results with missing values: multiple imputation (missing values drawn from
their exact conditional, observed values kept, one completed data set per
posterior draw, and, slow, imputed means that undo the bias of the complete
cases under MAR) and the covariance coverage in the summary and the report."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, reference_fit
from engines.test_latent import TWO_LEVEL, simulate_two_level
from engines.test_missing import with_holes

import bayes_msem as bm
from bayes_msem.imputation import _draw_conditional


def test_missing_entries_follow_their_conditional_normal():
    mean = np.array([1.0, -1.0, 0.5])
    cov = np.array([[2.0, 0.8, 0.3], [0.8, 1.0, 0.4], [0.3, 0.4, 1.5]])
    values = np.tile([np.nan, 0.2, np.nan], (20000, 1))
    drawn = _draw_conditional(np.tile(mean, (20000, 1)), cov, values, np.random.default_rng(1))
    m, o = [0, 2], [1]
    gain = cov[np.ix_(m, o)] / cov[1, 1]
    expected_mean = mean[m] + gain[:, 0] * (0.2 - mean[1])
    expected_cov = cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)]
    np.testing.assert_allclose(drawn[:, m].mean(0), expected_mean, atol=0.03)
    np.testing.assert_allclose(np.cov(drawn[:, m].T), expected_cov, atol=0.05)
    assert np.all(drawn[:, 1] == 0.2)


@pytest.fixture(scope="module")
def small_incomplete_fit():
    data = with_holes(simulate_two_level(clusters=30, size=6), seed=2, rate=0.2)
    data.index = data.index + 100  # the user's own row labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data, bm.Model(TWO_LEVEL, data, cluster="g").fit(draws=100, tune=150, chains=2, progressbar=False,
                                                                random_seed=1)


def test_imputations_keep_the_observed_values_and_fill_the_rest(small_incomplete_fit):
    data, result = small_incomplete_fit
    completed = result.impute(m=3, random_seed=4)
    assert len(completed) == 3 * len(data) and list(completed[".imp"].unique()) == [1, 2, 3]
    first = completed[completed[".imp"] == 1].set_index(".row")
    modelled = ["y1", "y2", "y3", "y4", "z"]
    assert first[modelled].notna().all().all() and list(first.index) == list(data.index)
    observed = data[modelled].notna()
    np.testing.assert_array_equal(first[modelled].to_numpy()[observed.to_numpy()],
                                  data[modelled].to_numpy()[observed.to_numpy()])
    assert first.groupby("g").z.nunique().max() == 1  # a level-2 value per cluster
    second = completed[completed[".imp"] == 2].set_index(".row")
    assert not np.allclose(first.y1[data.y1.isna().to_numpy()], second.y1[data.y1.isna().to_numpy()])


@pytest.mark.slow
def test_imputed_means_undo_the_complete_case_bias():
    """On mar_outcome.csv (y2 missing where y1 is high) the complete cases'
    mean of y2 is far below lavaan's full-information mean (-0.114, SE 0.095);
    the mean over imputations is within 0.2 of it."""
    data = pd.read_csv(DATA / "mar_outcome.csv")
    completed = reference_fit("mar_outcome").impute(m=10, random_seed=1)
    assert data.y2.mean() < -0.4
    assert abs(completed.y2.mean() - (-0.114)) < 0.2


def test_coverage_is_the_share_of_rows_with_both_observed(small_incomplete_fit):
    data, result = small_incomplete_fit
    coverage = result.coverage()
    observed = data[["y1", "y2", "y3", "y4"]].notna()
    assert coverage.loc["y1", "y2"] == pytest.approx((observed.y1 & observed.y2).mean())
    assert coverage.loc["y3", "y3"] == pytest.approx(observed.y3.mean())
    assert "Missing values (full information, MAR; no row dropped)" in str(result)
    from bayes_msem.html_report import report_html

    assert "Covariance coverage" in report_html(result)


def test_a_covariate_brought_into_the_model_keeps_its_role_in_the_results():
    """The result's parameter table is rebuilt with the covariate brought in, so
    standardized estimates and R-squared read the fitted rows with the right roles."""
    data = simulate_two_level(clusters=20, size=6)
    data.loc[data.index[::7], "x"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bm.Model(TWO_LEVEL, data, cluster="g").fit(draws=100, tune=150, chains=2, progressbar=False,
                                                            random_seed=2)
    table = result.parameter_table()
    assert "x" in table.level_roles(1).observed and "x" not in table.level_roles(1).covariates
    assert "x ~ x" not in str(result) and "Covariates with missing values brought into the model: x" in str(result)
    standardized = result.standardized().set_index(["lhs", "op", "rhs", "level"])
    assert np.isfinite(standardized.loc[("fw", "~", "x", "within"), "mean"])
    assert 0 < result.r_squared().set_index(["variable", "level"]).loc[("fw", "within"), "mean"] < 1


def test_with_random_slopes_each_row_is_imputed_around_its_clusters_regression():
    """The rows' means given the cluster effects, against y = mu + Pi x + Z_i u_j
    built from the definition (tests/engines/test_collapsed_slopes.py)."""
    from engines.test_collapsed_slopes import mediation_data, stacked_moments
    from engines.test_missing import SLOPES_ON_X, parameter_draw, spec_of

    from bayes_msem.imputation import row_means

    data = mediation_data(clusters=8)
    data.loc[data.index[::3], "y"] = np.nan
    spec = spec_of(data, SLOPES_ON_X, cluster="cluster")
    theta = parameter_draw(spec, 2)
    clusters = spec.layout.levels[1]
    effects = np.random.default_rng(3).normal(size=(spec.data.n_clusters, len(clusters.effects)))
    means = row_means(spec, theta, effects)
    order = [list(clusters.effects).index(name) for name in clusters.random_effects]
    for j in range(spec.data.n_clusters):
        _, _, _, Z, _ = stacked_moments(spec, theta, j)
        rows = np.flatnonzero(spec.data.cluster_index == j)
        within = bm.matrices.level_moments(theta, spec.within)
        fixed = within.mean + spec.data.within_covariates[rows] @ within.Pi.T
        expected = fixed + (Z @ effects[j, order]).reshape(len(rows), -1)
        np.testing.assert_allclose(means[rows], expected, rtol=1e-10, atol=1e-12)


def test_with_a_slope_on_a_modelled_variable_each_cluster_has_its_own_covariance():
    """b | y ~ m with m split: the rows' covariance carries the cluster's b_j, so
    the missing values are drawn cluster by cluster from it."""
    from engines.test_collapsed_slopes import mediation_data
    from engines.test_missing import parameter_draw, spec_of

    from bayes_msem.imputation import _completed, row_moments
    from bayes_msem.matrices import level_moments

    data = mediation_data(clusters=8)
    data.loc[data.index[::3], "y"] = np.nan
    spec = spec_of(data, bm.example_model("mediation_111_random_slopes"), cluster="cluster")
    theta = parameter_draw(spec, 2)
    clusters = spec.layout.levels[1]
    effects = np.random.default_rng(3).normal(scale=0.5, size=(spec.data.n_clusters, len(clusters.effects)))
    _, Sigma = row_moments(spec, theta, effects)
    b = list(clusters.effects).index("b")
    assert Sigma.shape == (8, 2, 2) and not np.allclose(Sigma[0], Sigma[1])
    own = level_moments(theta, spec.within, slope_values=effects[[3]][:, [list(clusters.effects).index(s)
                                                                          for s in spec.within.slopes]])
    np.testing.assert_allclose(Sigma[3], own.Sigma[0])
    assert effects[3, b] != effects[4, b]
    y, _ = _completed(spec, theta, effects, np.random.default_rng(1))
    observed = ~np.isnan(spec.data.within_outcomes)
    assert not np.isnan(y).any() and np.array_equal(y[observed], spec.data.within_outcomes[observed])
