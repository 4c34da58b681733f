"""Collapsed engine: the integrated likelihood equals the stacked multivariate
normal of each cluster's rows computed with SciPy, and cluster effects are drawn
from the exact Gaussian conditional."""

import numpy as np
import pytest
from scipy import stats

from bayes_msem.data import cluster_mean_statistics
from bayes_msem.engines.collapsed import build_collapsed_model, draw_cluster_effects
from bayes_msem.engines.latent import cluster_effect_names
from bayes_msem.matrices import level_moments
from bayes_msem.spec import build_spec

from .test_latent import TWO_LEVEL, evaluate, jax_value_and_gradient, random_point, simulate_two_level


def unequal_clusters():
    data = simulate_two_level(clusters=12, size=6)
    return data.drop(index=[0, 1, 7, 20]).reset_index(drop=True)  # sizes 4, 5 and 6


def stacked_moments(spec, theta, j):
    """Mean and covariance of cluster j's rows stacked with its between outcomes,
    built row by row (the definition, not the shortcut)."""
    data = spec.data
    within = level_moments(theta, spec.within)
    between = level_moments(theta, spec.between)
    rows = np.flatnonzero(data.cluster_index == j)
    p = spec.within.n_observed
    observed_b = spec.between.observed
    w = data.between_covariates[j]
    mean_between = between.mean + between.Pi @ w
    load = np.zeros((p, len(observed_b)))  # y_ij = m + Pi x + load @ (b, z) + e
    for i, name in enumerate(spec.within.observed):
        if name in spec.table.both_level:
            load[i, observed_b.index(name)] = 1.0
    z_idx = [k for k, name in enumerate(observed_b) if name not in spec.table.both_level]
    blocks_mean = [within.mean + within.Pi @ data.within_covariates[r] + load @ mean_between for r in rows]
    mean = np.concatenate(blocks_mean + [mean_between[z_idx]])
    n = len(rows)
    cov = np.kron(np.eye(n), within.Sigma) + np.kron(np.ones((n, n)), load @ between.Sigma @ load.T)
    cross = np.kron(np.ones((n, 1)), load @ between.Sigma[:, z_idx])
    cov = np.block([[cov, cross], [cross.T, between.Sigma[np.ix_(z_idx, z_idx)]]])
    values = np.concatenate([data.within_outcomes[rows].ravel(), data.between_outcomes[j]])
    return mean, cov, values


def test_collapsed_density_equals_stacked_normal():
    data = unequal_clusters()
    spec = build_spec(TWO_LEVEL, data, cluster="g")
    assert len(cluster_mean_statistics(spec.data)["sizes"]) == 3
    model = build_collapsed_model(spec)
    values = evaluate(model, random_point(model, 7), ["parameters", "loglik"])
    expected = 0.0
    for j in range(spec.data.n_clusters):
        mean, cov, observed = stacked_moments(spec, values["parameters"], j)
        expected += stats.multivariate_normal(mean, cov).logpdf(observed)
    assert values["loglik"] == pytest.approx(expected, rel=1e-9)


def test_gradient_finite_with_singular_between_covariance():
    data = simulate_two_level()
    text = "level: 1\n fw =~ y1 + y2 + y3\nlevel: 2\n fb =~ y1 + y2 + y3\n y1 ~~ 0*y1; y2 ~~ 0*y2; y3 ~~ 0*y3"
    model = build_collapsed_model(build_spec(text, data, cluster="g"))
    assert np.all(np.isfinite(jax_value_and_gradient(model, model.initial_point())[1]))


def test_cluster_effect_draws_follow_the_exact_conditional():
    data = unequal_clusters()
    spec = build_spec(TWO_LEVEL, data, cluster="g")
    model = build_collapsed_model(spec)
    theta = evaluate(model, random_point(model, 8), ["parameters"])["parameters"]
    draws = draw_cluster_effects(spec, np.broadcast_to(theta, (1, 4000, len(theta))).copy(), seed=1)[0]
    names = cluster_effect_names(spec)
    # exact conditional of cluster 0's between effects by conditioning the joint normal
    between = level_moments(theta, spec.between)
    node_cov = between.total @ between.S @ between.total.T
    w = spec.data.between_covariates[0]
    node_mean = between.total @ (between.alpha + between.A_x @ w)
    mean, cov, observed = stacked_moments(spec, theta, 0)
    nodes = spec.between.nodes
    effect_idx = [nodes.index(n) for n in names]
    rows = int(np.sum(spec.data.cluster_index == 0))
    p = spec.within.n_observed
    # covariance of effects with the stacked observations
    loading = np.zeros((len(observed), len(nodes)))
    for r in range(rows):
        for i, name in enumerate(spec.within.observed):
            if name in spec.table.both_level:
                loading[r * p + i, nodes.index(name)] = 1.0
    loading[rows * p:, nodes.index("z")] = 1.0
    cross = node_cov[effect_idx] @ loading.T
    gain = cross @ np.linalg.inv(cov)
    expected_mean = node_mean[effect_idx] + gain @ (observed - mean)
    expected_cov = node_cov[np.ix_(effect_idx, effect_idx)] - gain @ cross.T
    np.testing.assert_allclose(draws[:, 0].mean(0), expected_mean, atol=4 * np.sqrt(np.diag(expected_cov).max() / 4000))
    np.testing.assert_allclose(np.cov(draws[:, 0].T), expected_cov, atol=0.1 * np.abs(expected_cov).max())
