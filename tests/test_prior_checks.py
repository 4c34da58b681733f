"""Prior draws, the log prior of posterior draws, prior predictive sampling and
power-scaling sensitivity."""

import numpy as np
import pandas as pd
import pytest

import bayes_msem as bm
from bayes_msem.prior_checks import log_prior, prior_draws
from bayes_msem.spec import build_spec


def _regression_data(seed: int = 1, n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"y": 0.5 * x + rng.normal(size=n), "x": x,
                         "y2": rng.normal(size=n), "y3": rng.normal(size=n)})


def test_log_prior_is_the_pymc_models_prior():
    # the model's free random variables, evaluated without Jacobians, are the log prior

    from bayes_msem.engines.latent import build_latent_model

    syntax = 'f =~ y + y2 + prior("student_t(3, 0, 2)")*y3\ny ~~ prior("inverse_gamma(3, 2)[var]")*y\nf ~ x'
    spec = build_spec(syntax, _regression_data())
    assert not spec.covariance_blocks
    model = build_latent_model(spec)
    theta = prior_draws(spec, 5, np.random.default_rng(3))
    logp = model.compile_logp(vars=model.free_RVs, jacobian=False)
    for t in theta:
        point = {}
        for rv in model.free_RVs:
            name = rv.name
            k = next(i for i, n in enumerate(_parameter_names(spec)) if name in (n, f"sd[{n}]", f"var[{n}]"))
            value = np.sqrt(t[k]) if name.startswith("sd[") else t[k]
            transform = model.rvs_to_transforms[rv]
            value_var = model.rvs_to_values[rv]
            point[value_var.name] = transform.forward(value).eval() if transform is not None else value
        assert float(logp(point)) == pytest.approx(float(log_prior(spec, t[None])[0]), rel=1e-6)


def _parameter_names(spec):
    from bayes_msem.engines.parameters import parameter_names

    return parameter_names(spec)


def test_prior_draws_fill_covariances_from_an_lkj_matrix():
    data = _regression_data()
    spec = build_spec('y ~~ prior("lkj(3)")*y2 + prior("lkj(3)")*y3\ny2 ~~ prior("lkj(3)")*y3', data)
    theta = prior_draws(spec, 4000, np.random.default_rng(4))
    cov = np.zeros((len(theta), 3, 3))
    names = _parameter_names(spec)
    variables = ["y", "y2", "y3"]
    for k, name in enumerate(names):
        for i, a in enumerate(variables):
            for j, b in enumerate(variables):
                if name in (f"{a}~~{b}", f"{b}~~{a}"):
                    cov[:, i, j] = theta[:, k]
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    assert (np.linalg.eigvalsh(corr) > 0).all()
    # LKJ(3) in 3 dimensions: each correlation is Beta(3.5, 3.5) on (-1, 1), E r^2 = 1/8
    assert np.mean(corr[:, 0, 1] ** 2) == pytest.approx(1 / 8, rel=0.08)
    assert np.isfinite(log_prior(spec, theta)).all()


def test_prior_predictive_has_the_moments_the_priors_imply():
    # y = intercept + e: intercept ~ N(1, 2), sd ~ gamma(2, 1) so E var = 2 * 3 = 6; Var(y) = 4 + 6
    data = _regression_data()
    model = bm.Model('y ~ prior("normal(1, 2)")*1\ny ~~ prior("gamma(2, 1)")*y', data)
    idata = model.sample_prior_predictive(draws=4000, random_seed=5)
    y = idata.prior_predictive["y"].values
    assert y.shape == (1, 4000, len(data))
    assert y.mean() == pytest.approx(1.0, abs=0.1)
    assert y.var() == pytest.approx(10.0, rel=0.08)
    assert idata.prior["y~1"].shape == (1, 4000)
    np.testing.assert_array_equal(idata.observed_data["y"].values, data["y"].values)


def test_prior_predictive_of_a_two_level_model_keeps_clusters():
    model = bm.Model(bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), cluster="cluster")
    idata = model.sample_prior_predictive(draws=50, random_seed=1)
    y1 = idata.prior_predictive["y1"].values[0]  # (draws, rows)
    index = model.spec.data.cluster_index
    # the between part makes rows of a cluster correlated: cluster means vary more than rows alone allow
    means = np.stack([np.bincount(index, weights=row) / np.bincount(index) for row in y1])
    assert np.median(means.var(axis=1) / y1.var(axis=1)) > 0.1
    assert {"y1", "y2", "y3"} <= set(idata.prior_predictive.data_vars)


@pytest.mark.slow
def test_power_scaling_flags_a_conflicting_prior_only():
    data = _regression_data()
    run = dict(draws=500, tune=500, chains=2, random_seed=1, progressbar=False)
    weak = bm.Model("y ~ x", data, priors={"slope_sd": 2.0}).fit(**run)
    assert "Priors: defaults changed: slope_sd=2" in str(weak)
    default = weak.prior_sensitivity()
    assert (default.prior < 0.05).all()
    assert (default.diagnosis == "-").all()
    # the data say 0.5 (SE about 0.07); a prior at 3 with SD 0.1 fights them
    strong = bm.Model('y ~ prior("normal(3, 0.1)")*x', data).fit(**run)
    assert "Priors: y~x normal(3, 0.1) (result.priors()" in str(strong)
    slope = strong.prior_sensitivity().set_index("parameter").loc["y~x"]
    assert slope.prior > 0.05 and slope.likelihood > 0.05
    assert slope.diagnosis == "prior-data conflict"


def test_prior_predictive_of_a_random_slope_model():
    data = bm.example_data("mediation_111_random_slopes")
    model = bm.Model(bm.example_model("mediation_111_random_slopes"), data, cluster="cluster", centering={"m": "none"})
    idata = model.sample_prior_predictive(draws=20, random_seed=2)
    assert idata.prior_predictive["y"].shape == (1, 20, len(data))
    assert np.isfinite(idata.prior_predictive["y"].values).all()
    assert "a~~a" in idata.prior


def test_prior_draws_of_a_partial_pattern_keep_its_zeros():
    data = _regression_data()
    spec = build_spec("y ~~ y2\ny2 ~~ y3", data)  # y ~~ y3 is fixed at 0
    (block,) = spec.covariance_blocks
    assert block.pattern is not None
    theta = prior_draws(spec, 500, np.random.default_rng(5))
    names = _parameter_names(spec)
    assert "y~~y3" not in names and {"y~~y2", "y2~~y3"} <= set(names)
    sd = np.sqrt(theta[:, [names.index(f"{v}~~{v}") for v in ("y", "y2", "y3")]])
    r12 = theta[:, names.index("y~~y2")] / (sd[:, 0] * sd[:, 1])
    r23 = theta[:, names.index("y2~~y3")] / (sd[:, 1] * sd[:, 2])
    assert np.all(r12**2 + r23**2 < 1)  # positive definite with r13 = 0
    assert np.isfinite(log_prior(spec, theta)).all()


def test_prior_draws_keep_given_covariances_and_positive_definiteness():
    spec = build_spec("y ~~ c*y2 + 0.2*y3\ny2 ~~ c*y3", _regression_data())
    theta = prior_draws(spec, 300, np.random.default_rng(6))
    names = _parameter_names(spec)
    assert "y2~~y3" not in names  # equal to y ~~ y2: one free parameter
    cov = np.empty((len(theta), 3, 3))
    variables = ["y", "y2", "y3"]
    for i, v in enumerate(variables):
        cov[:, i, i] = theta[:, names.index(f"{v}~~{v}")]
    cov[:, 0, 1] = cov[:, 1, 0] = cov[:, 1, 2] = cov[:, 2, 1] = theta[:, names.index("y~~y2")]
    cov[:, 0, 2] = cov[:, 2, 0] = 0.2
    assert np.linalg.eigvalsh(cov).min() > 0  # draws outside the positive definite region were redrawn
    assert np.isfinite(log_prior(spec, theta)).all()


def test_prior_predictive_of_a_three_level_model_adds_each_schools_part():
    """The school means of the replicated rows vary with the drawn school variance
    (without the schools' parts they would not depend on it at all)."""
    data = bm.example_data("three_level_sim")
    model = bm.Model("level: 1\n  y ~~ y\nlevel: 2\n  y ~~ y\nlevel: 3\n  y ~~ y", data, cluster=["class", "school"])
    idata = model.sample_prior_predictive(draws=200, random_seed=3)
    y = idata.prior_predictive["y"].values[0]  # (draws, rows)
    school = model.spec.data.upper_levels[0].row_index
    means = np.stack([np.bincount(school, weights=row) / np.bincount(school) for row in y])
    school_variance = idata.prior["y~~y"].sel(level="school").values[0]  # levels named as in the posterior
    class_variance = idata.prior["y~~y"].sel(level="class").values[0]
    assert np.corrcoef(np.log(means.var(axis=1)), np.log(school_variance))[0, 1] > 0.6
    assert np.corrcoef(np.log(means.var(axis=1)), np.log(class_variance))[0, 1] < 0.5


@pytest.mark.parametrize("thresholds, means", [
    # one shared prior: sorted draws; the smaller of two standard normals has mean -1/sqrt(pi)
    ('prior("normal(0, 1)")*t1 + prior("normal(0, 1)")*t2', [-1 / np.sqrt(np.pi), 1 / np.sqrt(np.pi)]),
    # different priors: the product restricted to t1 < t2, whose means are E[t1 | t2 - t1 > 0] with
    # t2 - t1 ~ normal(2, sqrt 2): -1 - (1/2) sqrt(2) phi(sqrt 2) / Phi(sqrt 2); sorting would give -1.050
    ('prior("normal(-1, 1)")*t1 + prior("normal(1, 1)")*t2', [-1.11265, 1.11265]),
    # t1 fixed at 0: t2 is its normal(0, 1) prior above 0, a half-normal with mean sqrt(2 / pi)
    ('0*t1 + prior("normal(0, 1)")*t2', [np.nan, np.sqrt(2 / np.pi)]),
])
def test_prior_draws_of_thresholds_follow_the_models_prior_restricted_to_increasing_values(thresholds, means):
    data = pd.DataFrame({"u": np.tile([0, 1, 2], 20), "x": np.linspace(-1, 1, 60)})
    spec = bm.Model(f"u ~ x\nu | {thresholds}", data, ordered=["u"]).spec
    theta = prior_draws(spec, 40000, np.random.default_rng(7))
    cuts = [f for f, _ in spec.table.thresholds()["u"]]
    for free, mean in zip(cuts, means):
        if free:
            assert theta[:, free - 1].mean() == pytest.approx(mean, abs=0.02)
    lowest = theta[:, cuts[0] - 1] if cuts[0] else np.zeros(len(theta))
    assert np.all(theta[:, cuts[1] - 1] > lowest)
