"""Per-cluster likelihood of two-level ordinal models (LOO's unit): the
importance-sampling estimate of log p(y_j | theta), with the cluster effects
integrated out, against references that share none of its proposal:

- plain quasi-Monte Carlo over the prior of the innovations (2^15 points), on
  data as users bring them (shuffled rows, string labels out of order,
  unequal clusters, holes in categories and continuous values);
- a one-dimensional integral by SciPy quadrature, written out from the
  definition of the random-intercept probit model, at posterior draws of a
  real fit; and the fit's ``loo()`` by cluster label.

The conditional terms p(y_j | u, theta) themselves are the sampler's
likelihood (checked against it here) and each row's probability is checked
against SciPy's normal CDF in tests/engines/test_ordinal.py."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

import bayes_msem as bm
from bayes_msem.engines.latent import build_latent_model, effects_from_innovations, innovation_nodes
from bayes_msem.engines.ordinal_clusters import (
    conditional_terms,
    innovations_of,
    integrated_cluster_log_likelihood,
)
from bayes_msem.matrices import NUMPY_BACKEND, level_moments

from .test_latent import evaluate, random_point
from .test_ordinal import case_setup

pytestmark = pytest.mark.filterwarnings("ignore:only 6 clusters")

# an ordinal outcome with a level-2 covariate w and a level-2 outcome z of the
# clusters' latent mean of u: every term of a cluster's likelihood
LEVEL_TWO_MODEL = """level: 1
  u ~ x
level: 2
  u ~ w
  z ~ u"""


def level_two_data(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 7, size=12)
    cluster = np.repeat(np.arange(12), sizes)
    w = rng.standard_normal(12)
    u_between = 0.5 * w + 0.6 * rng.standard_normal(12)
    x = rng.standard_normal(len(cluster))
    latent = u_between[cluster] + 0.7 * x + rng.standard_normal(len(cluster))
    frame = pd.DataFrame({"cluster": [f"class {(5 * c) % 13}" for c in cluster], "x": x, "w": w[cluster],
                          "z": (0.8 * u_between + 0.5 * rng.standard_normal(12))[cluster],
                          "u": np.digitize(latent, [-0.5, 0.6]) + 1})
    return frame.iloc[rng.permutation(len(frame))]


def prior_points(spec, points: int = 2**15) -> np.ndarray:
    """Scrambled-Sobol points of the innovations' prior N(0, I), the same for
    every cluster (points, clusters, r)."""
    sobol = stats.qmc.Sobol(len(innovation_nodes(spec)), scramble=True, seed=7).random(points)
    return np.repeat(stats.norm.ppf(sobol)[:, None, :], spec.data.n_clusters, axis=1)


def prior_monte_carlo(spec, theta, seed: int):
    """log p(y_j | theta) by quasi-Monte Carlo over the prior, and 500 draws
    of the innovations spread like their posterior given theta: the prior's
    points resampled by their likelihood, with a little noise."""
    u = prior_points(spec)
    terms = conditional_terms(spec, theta[None], u)[0]  # (points, clusters)
    reference = special.logsumexp(terms, axis=0) - np.log(len(u))
    rng = np.random.default_rng(seed)
    weights = np.exp(terms - terms.max(axis=0))
    draws = np.stack([u[rng.choice(len(u), size=500, p=weights[:, j] / weights[:, j].sum()), j]
                      for j in range(spec.data.n_clusters)], axis=1)
    return reference, draws + 0.05 * rng.standard_normal(draws.shape)


@settings(max_examples=4, deadline=None, derandomize=True)  # the same examples in every CI run
@given(case=st.sampled_from(["mediation", "factor"]), seed=st.integers(0, 1000), rate=st.sampled_from([0.0, 0.3]))
def test_importance_sampling_matches_prior_monte_carlo(case, seed, rate):
    """Two innovations (mediation, 32 points) and five (factor model, 64
    points): within 0.06 of the 2^15-point reference (measured, session 13:
    largest errors 0.001 and 0.014 on the first examples, 0.042 on one with
    larger clusters, where the prior's points also serve the reference less well)."""
    frame, model, spec, theta = case_setup(case, seed, rate)
    reference, posterior_draws = prior_monte_carlo(spec, theta, seed)
    got = integrated_cluster_log_likelihood(spec, theta[None], posterior_draws)[0]
    np.testing.assert_allclose(got, reference, atol=0.06)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(case=st.sampled_from(["mediation", "factor"]), seed=st.integers(0, 1000))
def test_innovations_are_recovered_from_the_cluster_effects(case, seed):
    frame, model, spec, theta = case_setup(case, seed, 0.0)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((3, spec.data.n_clusters, len(innovation_nodes(spec))))
    between = level_moments(theta, spec.layout.levels[1].structure)
    effects = np.stack([effects_from_innovations(spec, between, draw, NUMPY_BACKEND) for draw in u])
    np.testing.assert_allclose(innovations_of(spec, np.stack([theta] * 3), effects), u, atol=1e-10)


def test_conditional_terms_are_the_samplers_likelihood():
    """At the sampler's own innovations, the clusters' conditional terms sum
    to its rows' and level-2 outcomes' log-likelihood, and the cluster order
    follows the spec's labels whatever the order of the rows."""
    frame = level_two_data(seed=3)
    spec = bm.Model(LEVEL_TWO_MODEL, frame, cluster="cluster", ordered=["u"]).spec
    model = build_latent_model(spec)
    values = evaluate(model, random_point(model, seed=5),
                      ["parameters", "cluster_innovations", "within_loglik", "between_outcomes_loglik"])
    terms = conditional_terms(spec, values["parameters"][None], values["cluster_innovations"][None])[0, 0]
    assert terms.sum() == pytest.approx(values["within_loglik"] + values["between_outcomes_loglik"], rel=1e-9)
    # the same data in another row order: the same term per cluster label
    again = bm.Model(LEVEL_TWO_MODEL, frame.sort_values("x"), cluster="cluster", ordered=["u"]).spec
    by_label = dict(zip(spec.data.cluster_labels, terms))
    shuffled = conditional_terms(again, values["parameters"][None], values["cluster_innovations"][None])[0, 0]
    assert [by_label[label] for label in again.data.cluster_labels] == pytest.approx(shuffled, rel=1e-9)


def random_intercept_cluster_logp(frame: pd.DataFrame, thresholds, slope, variance) -> pd.Series:
    """log p(cluster's categories) of y* = slope x + b_j + e (b_j ~ N(0,
    variance), e ~ N(0, 1)), the integral over b_j by SciPy's adaptive quadrature."""
    cuts = np.concatenate([[-np.inf], thresholds, [np.inf]])
    out = {}
    for label, rows in frame.groupby("cluster"):
        k = rows["u"].to_numpy(int) - 1
        eta = slope * rows["x"].to_numpy()

        def integrand(b, k=k, eta=eta):
            cells = stats.norm.cdf(cuts[k + 1] - eta - b) - stats.norm.cdf(cuts[k] - eta - b)
            return np.exp(np.log(cells).sum()) * stats.norm.pdf(b, scale=np.sqrt(variance))

        sd = np.sqrt(variance)
        out[str(label)] = np.log(integrate.quad(integrand, -10 * sd, 10 * sd, epsabs=0, epsrel=1e-10, limit=200)[0])
    return pd.Series(out)


@pytest.fixture(scope="module")
def random_intercept_fit():
    rng = np.random.default_rng(11)
    sizes = rng.integers(3, 9, size=25)
    cluster = np.repeat(np.arange(25), sizes)
    x = rng.standard_normal(len(cluster))
    latent = 0.7 * rng.standard_normal(25)[cluster] + 0.6 * x + rng.standard_normal(len(cluster))
    frame = pd.DataFrame({"cluster": [f"g{(7 * c) % 29}" for c in cluster], "x": x,
                          "u": np.digitize(latent, [-0.8, 0.1, 0.9]) + 1}).sample(frac=1, random_state=2)
    model = bm.Model("level: 1\n u ~ x\nlevel: 2\n u ~~ u", frame, cluster="cluster", ordered=["u"])
    return frame, model.fit(draws=150, tune=150, chains=2, random_seed=4, progressbar=False)


def test_loo_units_are_clusters_with_their_effects_integrated_out(random_intercept_fit):
    """The fit's per-cluster log-likelihood at its draws equals the integral
    over the random intercept from the model's definition, by cluster label:
    within 0.01 each, and within 0.002 on average (measured over 20 draws x
    25 clusters, 32 points: largest error 0.003, root mean square 0.0004)."""
    frame, fit = random_intercept_fit
    loo = fit.loo()
    loglik = fit.idata.log_likelihood["loglik"]
    assert loglik.dims == ("chain", "draw", "cluster") and loglik.sizes["draw"] == 150
    assert sorted(loglik["cluster"].values) == sorted(frame["cluster"].unique())
    assert np.isfinite(loo.elpd_loo) and (loo.pareto_k.values < 0.7).mean() > 0.9
    errors = []
    for chain, draw in [(0, 0), (0, 75), (0, 149), (1, 10), (1, 80), (1, 140)]:
        point = fit.idata.posterior.isel(chain=chain, draw=draw)
        expected = random_intercept_cluster_logp(
            frame, [float(point[f"u|t{k}"]) for k in (1, 2, 3)], float(point["u~x"]), float(point["u~~u"]))
        errors.append(loglik.isel(chain=chain, draw=draw).to_series()[expected.index] - expected)
    errors = np.array(errors)
    assert np.abs(errors).max() < 0.01 and abs(errors.mean()) < 0.002


def test_thinned_draws_stay_paired_with_their_parameters(random_intercept_fit, monkeypatch):
    """Where LOO takes every k-th draw, the log-likelihood keeps the draws'
    own labels, and power-scaling pairs it with the same posterior draws."""
    import dataclasses

    import bayes_msem.engines

    frame, fit = random_intercept_fit
    monkeypatch.setattr(bayes_msem.engines, "MAX_IMPORTANCE_DRAWS", 100)
    thinned = dataclasses.replace(fit, idata=fit.idata.copy())
    if "log_likelihood" in thinned.idata.groups():
        del thinned.idata.log_likelihood
    assert thinned.add_log_likelihood()
    loglik = thinned.idata.log_likelihood["loglik"]
    np.testing.assert_array_equal(loglik["draw"].values, fit.idata.posterior["draw"].values[::3])
    np.testing.assert_allclose(loglik.isel(draw=5, chain=1).values,
                               fit.idata.log_likelihood["loglik"].sel(draw=15, chain=1).values, atol=0.01)
    sensitivity = thinned.prior_sensitivity()
    assert np.isfinite(sensitivity[["prior", "likelihood"]].to_numpy()).all()
