"""Random slopes: both engines' log-densities equal the definition.

The collapsed engine's Woodbury likelihood is compared with the stacked
multivariate normal of each cluster's rows, built row by row; the latent
engine's within likelihood given the cluster effects with a row-wise normal
density whose regression weights are that cluster's slopes. Cluster effects
drawn by the collapsed engine are checked against brute-force conditioning.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayes_msem.engines.collapsed import build_collapsed_model, draw_cluster_effects
from bayes_msem.engines.latent import build_latent_model, cluster_effect_names
from bayes_msem.matrices import level_moments
from bayes_msem.spec import build_spec

from .test_latent import evaluate, random_point

SLOPES = """level: 1
  a | m ~ x
  b | y ~ m
  y ~ x
level: 2
  m ~~ y + a + b
  y ~~ a + b
  a ~~ b
  a ~ w
  z ~ w + m
"""


def mediation_data(clusters=10):
    data = pd.read_csv(Path(__file__).parents[1] / "data" / "mediation_111_random_slopes.csv")
    data = data[data.cluster <= clusters].iloc[::2].reset_index(drop=True)  # unequal sizes 7 and 8
    rng = np.random.default_rng(3)
    w, z = rng.normal(size=clusters + 1), rng.normal(size=clusters + 1)
    return data.assign(w=w[data.cluster], z=z[data.cluster])


def stacked_moments(spec, theta, j):
    """Mean and covariance of cluster j's rows and its level-2 outcomes, from
    the definition y_ij = mu + Pi x_ij + Z_ij u_j + e_ij."""
    data = spec.data
    within, between = level_moments(theta, spec.within), level_moments(theta, spec.between)
    structure = spec.within
    nodes = spec.between.nodes
    node_cov = between.total @ between.S @ between.total.T
    node_mean = between.total @ (between.alpha + between.A_x @ data.between_covariates[j])
    effects = list(spec.table.both_level) + list(structure.slopes)
    u = [nodes.index(n) for n in effects]
    z = [nodes.index(n) for n in spec.table.between_outcomes]
    rows = np.flatnonzero(data.cluster_index == j)
    p = structure.n_observed
    Z = []
    for r in rows:
        z_row = np.zeros((p, len(effects)))
        for k, name in enumerate(spec.table.both_level):
            z_row[structure.observed.index(name), k] = 1.0
        for k in range(len(structure.slopes)):
            z_row[:, len(spec.table.both_level) + k] = (within.total @ structure.slope_A_x[k] @ data.within_covariates[r])[:p]
        Z.append(z_row)
    Z = np.concatenate(Z)
    n = len(rows)
    fixed_mean = np.concatenate([within.mean + within.Pi @ data.within_covariates[r] for r in rows])
    mean = np.concatenate([fixed_mean + Z @ node_mean[u], node_mean[z]])
    cov_y = np.kron(np.eye(n), within.Sigma) + Z @ node_cov[np.ix_(u, u)] @ Z.T
    cross = Z @ node_cov[np.ix_(u, z)]
    cov = np.block([[cov_y, cross], [cross.T, node_cov[np.ix_(z, z)]]])
    values = np.concatenate([data.within_outcomes[rows].ravel(), data.between_outcomes[j]])
    return mean, cov, values, Z, u


def test_collapsed_slopes_density_equals_stacked_normal():
    spec = build_spec(SLOPES, mediation_data(), cluster="cluster", centering={"m": "none"})
    assert spec.within.slopes == ("a", "b") and not spec.within.slopes_on_nodes
    model = build_collapsed_model(spec)
    values = evaluate(model, random_point(model, 5), ["parameters", "loglik"])
    expected = sum(stats.multivariate_normal(*stacked_moments(spec, values["parameters"], j)[:2]).logpdf(
        stacked_moments(spec, values["parameters"], j)[2]) for j in range(spec.data.n_clusters))
    assert values["loglik"] == pytest.approx(expected, rel=1e-9)


def test_collapsed_slope_draws_follow_exact_conditional():
    spec = build_spec(SLOPES, mediation_data(), cluster="cluster", centering={"m": "none"})
    model = build_collapsed_model(spec)
    theta = evaluate(model, random_point(model, 6), ["parameters"])["parameters"]
    draws = draw_cluster_effects(spec, np.broadcast_to(theta, (1, 4000, len(theta))).copy(), seed=1)[0]
    names = cluster_effect_names(spec)
    j = 3
    mean, cov, values, Z, u = stacked_moments(spec, theta, j)
    between = level_moments(theta, spec.between)
    node_cov = between.total @ between.S @ between.total.T
    effect_nodes = [spec.between.nodes.index(n) for n in names]
    z = [spec.between.nodes.index(n) for n in spec.table.between_outcomes]
    n_y = len(values) - len(z)
    cross = np.concatenate([node_cov[np.ix_(effect_nodes, u)] @ Z.T, node_cov[np.ix_(effect_nodes, z)]], axis=1)
    node_mean = between.total @ (between.alpha + between.A_x @ spec.data.between_covariates[j])
    gain = cross @ np.linalg.inv(cov)
    exact_mean = node_mean[effect_nodes] + gain @ (values - mean)
    exact_cov = node_cov[np.ix_(effect_nodes, effect_nodes)] - gain @ cross.T
    sd = np.sqrt(np.diag(exact_cov))
    assert n_y > 0
    np.testing.assert_allclose(draws[:, j].mean(0), exact_mean, atol=4 * sd.max() / np.sqrt(4000))
    np.testing.assert_allclose(draws[:, j].std(0), sd, rtol=0.06)


def test_latent_slopes_density_matches_rowwise_scipy():
    spec = build_spec(SLOPES, mediation_data(), cluster="cluster", centering={"m": "none"})
    model = build_latent_model(spec)
    values = evaluate(model, random_point(model, 4), ["parameters", "cluster_effects", "within_loglik"])
    theta, effects = values["parameters"], values["cluster_effects"]
    names = cluster_effect_names(spec)
    data, structure = spec.data, spec.within
    expected = 0.0
    for j in range(data.n_clusters):
        slopes = effects[j, [names.index(s) for s in structure.slopes]][None]
        moments = level_moments(theta, structure, slope_values=slopes)
        b_part = np.array([effects[j, names.index(n)] if n in spec.table.both_level else 0.0
                           for n in structure.observed])
        for r in np.flatnonzero(data.cluster_index == j):
            mean = moments.mean[0] + b_part + moments.Pi[0] @ data.within_covariates[r]
            expected += stats.multivariate_normal(mean, moments.Sigma).logpdf(data.within_outcomes[r])
    assert values["within_loglik"] == pytest.approx(expected, rel=1e-9)


LATENT_SLOPE = """level: 1
  fw =~ y1 + y2 + y3
  s | y4 ~ fw
level: 2
  fb =~ y1 + y2 + y3
  y4 ~~ s
"""


def test_latent_slope_on_within_factor_density_matches_rowwise_scipy():
    from .test_latent import simulate_two_level

    spec = build_spec(LATENT_SLOPE, simulate_two_level(), cluster="g")
    assert spec.within.slopes_on_nodes
    model = build_latent_model(spec)
    values = evaluate(model, random_point(model, 8), ["parameters", "cluster_effects", "within_loglik"])
    theta, effects = values["parameters"], values["cluster_effects"]
    names = cluster_effect_names(spec)
    data = spec.data
    expected = 0.0
    for j in range(data.n_clusters):
        moments = level_moments(theta, spec.within, slope_values=effects[j, [names.index("s")]][None])
        b_part = np.array([effects[j, names.index(n)] for n in spec.within.observed])
        for r in np.flatnonzero(data.cluster_index == j):
            expected += stats.multivariate_normal(moments.mean[0] + b_part, moments.Sigma[0]).logpdf(
                data.within_outcomes[r])
    assert values["within_loglik"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("with_slopes", [True, False])
def test_cluster_log_likelihood_equals_stacked_normal_per_cluster(with_slopes):
    from bayes_msem.engines.collapsed_slopes import cluster_log_likelihood

    from .test_latent import TWO_LEVEL, simulate_two_level

    if with_slopes:
        spec = build_spec(SLOPES, mediation_data(), cluster="cluster", centering={"m": "none"})
    else:
        spec = build_spec(TWO_LEVEL, simulate_two_level(), cluster="g")
    model = build_collapsed_model(spec)
    thetas = np.stack([evaluate(model, random_point(model, seed), ["parameters"])["parameters"] for seed in (1, 2)])
    values = cluster_log_likelihood(spec, thetas[None])[0]
    for d, theta in enumerate(thetas):
        for j in range(spec.data.n_clusters):
            mean, cov, observed, _, _ = stacked_moments(spec, theta, j)
            assert values[d, j] == pytest.approx(stats.multivariate_normal(mean, cov).logpdf(observed), rel=1e-9)
