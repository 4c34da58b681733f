"""Missing values: the observed-data likelihood equals the stacked normal of
each cluster's observed values (built row by row, SciPy), whatever the
pattern of holes, the row order or the cluster labels; with no hole it is the
complete-data likelihood; cluster effects are drawn from the exact conditional."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bayes_msem.data import cluster_mean_statistics
from bayes_msem.engines.collapsed import two_level_logp
from bayes_msem.engines.missing import draw_missing_cluster_effects, missing_logp, missing_unit_log_likelihood
from bayes_msem.matrices import level_moments
from bayes_msem.prior_checks import prior_draws
from bayes_msem.spec import build_spec

from .test_collapsed import stacked_moments
from .test_latent import TWO_LEVEL, jax_value_and_gradient, simulate_two_level

MODELLED = ["y1", "y2", "y3", "y4", "z"]


def with_holes(data: pd.DataFrame, seed: int, rate: float) -> pd.DataFrame:
    """Values of the level-1 outcomes set missing completely at random; z (level 2) per cluster."""
    rng = np.random.default_rng(seed)
    out = data.copy()
    for name in ["y1", "y2", "y3", "y4"]:
        out.loc[rng.uniform(size=len(out)) < rate, name] = np.nan
    missing_z = rng.uniform(size=out.g.max() + 1) < min(rate, 0.3)  # z observed in enough clusters to vary
    out.loc[missing_z[out.g], "z"] = np.nan
    return out


def parameter_draw(spec, seed: int) -> np.ndarray:
    """Parameter values from moderate priors: the defaults with slopes of sd 1."""
    return prior_draws(spec, 1, np.random.default_rng(seed))[0]


def stacked_observed_logp(spec, theta) -> np.ndarray:
    """log p of each cluster's observed values from the definition."""
    out = []
    for j in range(spec.data.n_clusters):
        mean, cov, values = stacked_moments(spec, theta, j)
        seen = ~np.isnan(values)
        out.append(stats.multivariate_normal(mean[seen], cov[np.ix_(seen, seen)]).logpdf(values[seen])
                   if seen.any() else 0.0)
    return np.array(out)


def spec_of(data, syntax=TWO_LEVEL, cluster="g"):
    return build_spec(syntax, data, cluster=cluster, priors={"slope_sd": 0.5})


@settings(max_examples=15, deadline=None, derandomize=True)  # the same examples in every CI run
@given(seed=st.integers(0, 10_000), rate=st.sampled_from([0.1, 0.3, 0.6]))
def test_observed_data_likelihood_equals_the_stacked_normal(seed, rate):
    data = with_holes(simulate_two_level(seed=seed % 7, clusters=10, size=5), seed, rate)
    data = data.sample(frac=1.0, random_state=seed)  # as users bring them: rows in any order
    data["g"] = data.g.map(lambda k: f"team-{(7 * k) % 10}")  # string labels in another order
    spec = spec_of(data)
    theta = parameter_draw(spec, seed)
    expected = stacked_observed_logp(spec, theta)
    assert float(missing_logp(spec, theta, _numpy())) == pytest.approx(expected.sum(), rel=1e-8, abs=1e-8)
    per_cluster = missing_unit_log_likelihood(spec, theta[None, None])[0, 0]
    np.testing.assert_allclose(per_cluster, expected, rtol=1e-8, atol=1e-8)


def _numpy():
    from bayes_msem.matrices import NUMPY_BACKEND

    return NUMPY_BACKEND


def test_without_holes_it_is_the_complete_data_likelihood():
    spec = spec_of(simulate_two_level(clusters=12, size=6).drop(index=[0, 1, 7, 20]))
    theta = parameter_draw(spec, 3)
    within, between = level_moments(theta, spec.within), level_moments(theta, spec.between)
    complete = two_level_logp(spec.data, cluster_mean_statistics(spec.data), within, between,
                              spec.layout.placement, _numpy())
    assert float(missing_logp(spec, theta, _numpy())) == pytest.approx(float(complete), rel=1e-10)


def test_a_cluster_with_every_level_1_value_missing_keeps_its_level_2_values():
    data = simulate_two_level(clusters=10, size=5)
    data.loc[data.g == 3, ["y1", "y2", "y3", "y4"]] = np.nan
    spec = spec_of(data)
    theta = parameter_draw(spec, 4)
    expected = stacked_observed_logp(spec, theta)
    assert spec.data.n_clusters == 10 and expected[3] != 0.0
    assert float(missing_logp(spec, theta, _numpy())) == pytest.approx(expected.sum(), rel=1e-8)


def test_single_level_rows_by_pattern():
    rng = np.random.default_rng(5)
    data = pd.DataFrame(rng.normal(size=(60, 4)), columns=["y1", "y2", "y3", "x"])
    data.loc[rng.uniform(size=60) < 0.3, "y2"] = np.nan
    data.loc[rng.uniform(size=60) < 0.3, "y3"] = np.nan
    spec = build_spec("f =~ y1 + y2 + y3\nf ~ x", data)
    theta = parameter_draw(spec, 6)
    moments = level_moments(theta, spec.within)
    expected = []
    for y, x in zip(spec.data.within_outcomes, spec.data.within_covariates):
        seen = ~np.isnan(y)
        mean = moments.mean + moments.Pi @ x
        expected.append(stats.multivariate_normal(mean[seen], moments.Sigma[np.ix_(seen, seen)]).logpdf(y[seen]))
    assert float(missing_logp(spec, theta, _numpy())) == pytest.approx(sum(expected), rel=1e-9)
    np.testing.assert_allclose(missing_unit_log_likelihood(spec, theta[None, None])[0, 0], expected, rtol=1e-9)


NO_LEVEL_2_OUTCOME = "level: 1\n fw =~ y1 + y2 + y3\n fw ~ x\n y4 ~ x\nlevel: 2\n fb =~ y1 + y2 + y3\n fb ~ w"


@pytest.mark.parametrize("syntax", [TWO_LEVEL, NO_LEVEL_2_OUTCOME], ids=["level-2 outcome", "none"])
def test_cluster_effect_draws_follow_the_exact_conditional(syntax):
    """Cluster 0's effects against conditioning the joint normal of its
    observed values; with a level-2 outcome (missing in cluster 0) u's
    covariance differs per cluster, without one it is one matrix."""
    data = with_holes(simulate_two_level(clusters=10, size=5), seed=2, rate=0.3)
    data.loc[data.g == 0, "z"] = np.nan
    spec = spec_of(data, syntax)
    theta = parameter_draw(spec, 8)
    draws = draw_missing_cluster_effects(spec, np.broadcast_to(theta, (1, 4000, len(theta))).copy(), seed=1)[0]
    between = level_moments(theta, spec.between)
    nodes = spec.between.nodes
    node_cov = between.total @ between.S @ between.total.T
    node_mean = between.total @ (between.alpha + between.A_x @ spec.data.between_covariates[0])
    mean, cov, values = stacked_moments(spec, theta, 0)
    rows, p = int(np.sum(spec.data.cluster_index == 0)), spec.within.n_observed
    loading = np.zeros((len(values), len(nodes)))  # stacked observations = loading @ between nodes + the rest
    for r in range(rows):
        for i, name in enumerate(spec.within.observed):
            if name in spec.table.both_level:
                loading[r * p + i, nodes.index(name)] = 1.0
    for k, name in enumerate(spec.table.between_outcomes):
        loading[rows * p + k, nodes.index(name)] = 1.0
    seen = ~np.isnan(values)
    effects = list(spec.layout.levels[1].effect_nodes)
    cross = node_cov[effects] @ loading[seen].T
    gain = cross @ np.linalg.inv(cov[np.ix_(seen, seen)])
    expected_mean = node_mean[effects] + gain @ (values[seen] - mean[seen])
    expected_cov = node_cov[np.ix_(effects, effects)] - gain @ cross.T
    sd = np.sqrt(np.diag(expected_cov))
    assert np.all(np.abs(draws[:, 0].mean(0) - expected_mean) < 4 * sd / np.sqrt(4000) + 1e-9)
    np.testing.assert_allclose(np.cov(draws[:, 0].T), expected_cov, atol=0.1 * np.abs(expected_cov).max())


@pytest.mark.parametrize("jax_likelihood", [True, False])
def test_the_collapsed_model_carries_the_observed_data_likelihood(jax_likelihood):
    from bayes_msem.engines.collapsed import build_collapsed_model

    from .test_latent import evaluate, random_point

    spec = spec_of(with_holes(simulate_two_level(clusters=10, size=5), seed=3, rate=0.3))
    model = build_collapsed_model(spec, jax_likelihood=jax_likelihood)
    values = evaluate(model, random_point(model, 2), ["parameters", "loglik"])
    assert float(values["loglik"]) == pytest.approx(float(missing_logp(spec, values["parameters"], _numpy())),
                                                    rel=1e-9)
    assert np.all(np.isfinite(jax_value_and_gradient(model, random_point(model, 2))[1]))


def test_engines_say_what_they_do_with_missing_values():
    from bayes_msem.engines import choose_engine, get_engine

    spec = spec_of(with_holes(simulate_two_level(clusters=10, size=5), seed=3, rate=0.2))
    assert choose_engine("auto", spec)[0] == "collapsed"
    supported, why = get_engine("latent").supports(spec)
    assert not supported and "z, which predict a cluster effect" in why  # TWO_LEVEL: fb ~ z, z with holes
    data = with_holes(simulate_two_level(clusters=10, size=5), seed=3, rate=0.2)
    slopes = spec_of(data, "level: 1\n s | y1 ~ x\nlevel: 2\n y1 ~~ s")
    assert choose_engine("auto", slopes)[0] == "collapsed"
    single = build_spec("y1 ~ x", data.drop(columns="g"))
    assert choose_engine("auto", single)[0] == "collapsed"


def test_the_latent_engine_takes_each_rows_observed_values():
    """Given the sampled cluster effects, the latent engine's likelihood is the
    row-wise normal density of each row's observed values."""
    from bayes_msem.engines.latent import build_latent_model

    from .test_latent import evaluate, random_point

    data = with_holes(simulate_two_level(clusters=8, size=5), seed=6, rate=0.3)
    data.loc[data.index[:5], ["y1", "y2", "y3", "y4"]] = np.nan  # rows with nothing observed add nothing
    spec = spec_of(data, NO_LEVEL_2_OUTCOME)
    model = build_latent_model(spec)
    values = evaluate(model, random_point(model, seed=3), ["parameters", "cluster_effects", "within_loglik"])
    within = level_moments(values["parameters"], spec.within)
    effects = pd.DataFrame(values["cluster_effects"], columns=model.coords["cluster_variable"])
    expected, prepared = 0.0, spec.data
    for row in range(prepared.n_rows):
        j = prepared.cluster_index[row]
        cluster_mean = np.array([effects.iloc[j][name] if name in spec.table.both_level else 0.0
                                 for name in spec.within.observed])
        mean = within.mean + cluster_mean + within.Pi @ prepared.within_covariates[row]
        y = prepared.within_outcomes[row]
        seen = ~np.isnan(y)
        if seen.any():
            expected += stats.multivariate_normal(mean[seen], within.Sigma[np.ix_(seen, seen)]).logpdf(y[seen])
    assert float(values["within_loglik"]) == pytest.approx(expected, rel=1e-9)


SLOPES_ON_X = """level: 1
  a | m ~ x
  s | y ~ x
  y ~ m
level: 2
  m ~~ y + a + s
  y ~~ a + s
  a ~~ s
  a ~ w
  z ~ w + m
"""


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), rate=st.sampled_from([0.1, 0.3, 0.6]))
def test_with_random_slopes_it_is_the_stacked_normal(seed, rate):
    """Random slopes on x (a slope on m moves y through y ~ m): each row's
    effects design differs by its x, so the cross-products go per cluster and
    pattern; the result must still be the stacked normal of the observed values."""
    from .test_collapsed_slopes import mediation_data
    from .test_collapsed_slopes import stacked_moments as slope_moments

    rng = np.random.default_rng(seed)
    data = mediation_data(clusters=8)
    for name in ["m", "y"]:
        data.loc[rng.uniform(size=len(data)) < rate, name] = np.nan
    data.loc[data.cluster.isin(rng.choice(9, 2, replace=False)), "z"] = np.nan
    data = data.sample(frac=1.0, random_state=seed)
    data["cluster"] = data.cluster.map(lambda k: f"c{(5 * k) % 9}")
    spec = spec_of(data, SLOPES_ON_X, cluster="cluster")
    assert spec.layout.levels[1].random_effects == ("m", "y", "a", "s")
    theta = parameter_draw(spec, seed)
    expected = []
    for j in range(spec.data.n_clusters):
        mean, cov, values, _, _ = slope_moments(spec, theta, j)
        seen = ~np.isnan(values)
        expected.append(stats.multivariate_normal(mean[seen], cov[np.ix_(seen, seen)]).logpdf(values[seen]))
    assert float(missing_logp(spec, theta, _numpy())) == pytest.approx(sum(expected), rel=1e-8)
    np.testing.assert_allclose(missing_unit_log_likelihood(spec, theta[None, None])[0, 0], expected, rtol=1e-8)


def test_with_random_slopes_cluster_effects_follow_the_exact_conditional():
    """A cluster with holes in m, y and its level-2 outcome z: every effect
    (between parts, slopes, and the level-2 ones) against conditioning the
    joint normal of the cluster's observed values."""
    from .test_collapsed_slopes import mediation_data
    from .test_collapsed_slopes import stacked_moments as slope_moments

    rng = np.random.default_rng(4)
    data = mediation_data(clusters=8)
    for name in ["m", "y"]:
        data.loc[rng.uniform(size=len(data)) < 0.3, name] = np.nan
    data.loc[data.cluster == 3, "z"] = np.nan
    spec = spec_of(data, SLOPES_ON_X, cluster="cluster")
    theta = parameter_draw(spec, 5)
    draws = draw_missing_cluster_effects(spec, np.broadcast_to(theta, (1, 4000, len(theta))).copy(), seed=2)[0]
    j = list(spec.data.cluster_labels).index(3)
    mean, cov, values, Z, u = slope_moments(spec, theta, j)
    seen = ~np.isnan(values)
    assert not seen.all() and not seen[-1]  # holes in the rows and in z
    between = level_moments(theta, spec.between)
    nodes = spec.between.nodes
    node_cov = between.total @ between.S @ between.total.T
    node_mean = between.total @ (between.alpha + between.A_x @ spec.data.between_covariates[j])
    effects = list(spec.layout.levels[1].effect_nodes)
    z = [nodes.index(n) for n in spec.table.between_outcomes]
    cross = np.concatenate([node_cov[np.ix_(effects, u)] @ Z.T, node_cov[np.ix_(effects, z)]], axis=1)[:, seen]
    gain = cross @ np.linalg.inv(cov[np.ix_(seen, seen)])
    exact_mean = node_mean[effects] + gain @ (values[seen] - mean[seen])
    exact_sd = np.sqrt(np.diag(node_cov[np.ix_(effects, effects)] - gain @ cross.T))
    np.testing.assert_allclose(draws[:, j].mean(0), exact_mean, atol=4 * exact_sd.max() / np.sqrt(4000))
    np.testing.assert_allclose(draws[:, j].std(0), exact_sd, rtol=0.06)


def test_with_random_slopes_the_collapsed_model_carries_the_same_likelihood():
    """The sampler's JAX graph (elementwise Cholesky over clusters) against the NumPy one."""
    from bayes_msem.engines.collapsed import build_collapsed_model

    from .test_collapsed_slopes import mediation_data
    from .test_latent import evaluate, random_point

    data = mediation_data(clusters=8)
    data.loc[data.index[::4], "m"] = np.nan
    data.loc[data.index[1::3], "y"] = np.nan
    spec = spec_of(data, SLOPES_ON_X, cluster="cluster")
    model = build_collapsed_model(spec, jax_likelihood=True)
    point = random_point(model, 5)
    values = evaluate(model, point, ["parameters", "loglik"])
    assert float(values["loglik"]) == pytest.approx(float(missing_logp(spec, values["parameters"], _numpy())),
                                                    rel=1e-9)
    assert np.all(np.isfinite(jax_value_and_gradient(model, point)[1]))


@pytest.mark.parametrize("on_modelled_variable", [False, True], ids=["slopes on x", "b | y ~ m, m split"])
def test_with_random_slopes_the_latent_engine_takes_each_rows_observed_values(on_modelled_variable):
    """Given the sampled cluster effects, each row's observed values are normal
    around its cluster's own regression (the cluster's slopes). With the shipped
    1-1-1 mediation (b | y ~ m, m split into parts) the rows' covariance differs
    per cluster too (it carries b_j), so the density uses one inverse per cluster
    and pattern; the collapsed engine does not apply, and LOO then has no
    per-cluster likelihood."""
    import bayes_msem as bm
    from bayes_msem.engines import choose_engine, get_engine
    from bayes_msem.engines.latent import build_latent_model

    from .test_collapsed_slopes import mediation_data
    from .test_latent import evaluate, random_point

    data = mediation_data(clusters=8)
    data.loc[data.index[::4], "m"] = np.nan
    data.loc[data.index[1::3], "y"] = np.nan
    syntax = bm.example_model("mediation_111_random_slopes") if on_modelled_variable else SLOPES_ON_X
    spec = spec_of(data, syntax, cluster="cluster")
    assert spec.within.slopes_on_nodes == on_modelled_variable and get_engine("latent").supports(spec)[0]
    assert choose_engine("auto", spec)[0] == ("latent" if on_modelled_variable else "collapsed")
    if on_modelled_variable:
        assert get_engine("latent").unit_log_likelihood(spec, np.zeros((1, 1, len(spec.priors)))) is None
    model = build_latent_model(spec)
    values = evaluate(model, random_point(model, seed=4), ["parameters", "cluster_effects", "within_loglik"])
    effects = pd.DataFrame(values["cluster_effects"], columns=model.coords["cluster_variable"])
    structure, prepared = spec.within, spec.data
    expected = 0.0
    for row in range(prepared.n_rows):
        j = prepared.cluster_index[row]
        own = level_moments(values["parameters"], structure,
                            slope_values=effects.iloc[j][list(structure.slopes)].to_numpy()[None])
        split = np.array([effects.iloc[j][name] if name in spec.table.both_level else 0.0
                          for name in structure.observed])
        mean = np.broadcast_to(own.mean, (1, len(split)))[0] + split + own.Pi[0] @ prepared.within_covariates[row]
        cov = own.Sigma[0] if own.Sigma.ndim == 3 else own.Sigma
        y = prepared.within_outcomes[row]
        seen = ~np.isnan(y)
        if seen.any():
            expected += stats.multivariate_normal(mean[seen], cov[np.ix_(seen, seen)]).logpdf(y[seen])
    assert float(values["within_loglik"]) == pytest.approx(expected, rel=1e-9)
