"""Latent engine: the log-density from cross-products equals a row-by-row
normal density computed with SciPy, and gradients are finite."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayes_msem.engines.latent import build_latent_model
from bayes_msem.matrices import level_moments
from bayes_msem.spec import build_spec


def simulate_two_level(seed=1, clusters=12, size=6):
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(clusters), size)
    w = rng.normal(size=clusters)
    z = 0.5 * w + rng.normal(size=clusters)
    between = rng.normal(size=(clusters, 1)) + 0.3 * z[:, None]
    x = rng.normal(size=len(cluster))
    f = 0.6 * x + rng.normal(size=len(cluster))
    y = between[cluster] + np.outer(f, [1.0, 0.8, 0.7]) + rng.normal(size=(len(cluster), 3))
    return pd.DataFrame({"g": cluster, "x": x, "w": w[cluster], "z": z[cluster],
                         "y1": y[:, 0], "y2": y[:, 1], "y3": y[:, 2], "y4": rng.normal(size=len(cluster))})


TWO_LEVEL = """level: 1
  fw =~ y1 + y2 + y3
  fw ~ x
  y4 ~ x
level: 2
  fb =~ y1 + y2 + y3
  z ~ w
  fb ~ z
"""


def random_point(model, seed):
    rng = np.random.default_rng(seed)
    return {name: value + rng.normal(scale=0.3, size=np.shape(value)) for name, value in model.initial_point().items()}


def evaluate(model, point, names):
    outputs = model.replace_rvs_by_values([model[name] for name in names])
    function = model.compile_fn(outputs, inputs=model.value_vars,
                                on_unused_input="ignore", point_fn=True)
    return dict(zip(names, function(point)))


def test_two_level_density_matches_rowwise_scipy():
    data = simulate_two_level()
    spec = build_spec(TWO_LEVEL, data, cluster="g")
    model = build_latent_model(spec)
    point = random_point(model, seed=2)
    values = evaluate(model, point, ["parameters", "cluster_effects", "within_loglik", "between_outcomes_loglik"])
    theta = values["parameters"]
    within = level_moments(theta, spec.within)
    effects = pd.DataFrame(values["cluster_effects"], columns=model.coords["cluster_variable"])
    expected_within = 0.0
    prepared = spec.data
    for row in range(prepared.n_rows):
        j = prepared.cluster_index[row]
        cluster_mean = np.array([effects.iloc[j].get(name, 0.0) if name in spec.table.both_level else 0.0
                                 for name in spec.within.observed])
        mean = within.mean + cluster_mean + within.Pi @ prepared.within_covariates[row]
        expected_within += stats.multivariate_normal(mean, within.Sigma).logpdf(prepared.within_outcomes[row])
    assert values["within_loglik"] == pytest.approx(expected_within, rel=1e-9)
    # between-only outcome z ~ w: its own normal density per cluster
    between = level_moments(theta, spec.between)
    z_at = spec.between.nodes.index("z")
    w = prepared.between_covariates[:, 0]
    expected_z = stats.norm(between.alpha[z_at] + between.A_x[z_at, 0] * w,
                            np.sqrt(between.S[z_at, z_at])).logpdf(prepared.between_outcomes[:, 0]).sum()
    assert values["between_outcomes_loglik"] == pytest.approx(expected_z, rel=1e-9)


def test_cluster_effects_follow_the_between_regression_on_observed_z():
    data = simulate_two_level()
    spec = build_spec(TWO_LEVEL, data, cluster="g")
    model = build_latent_model(spec)
    point = random_point(model, seed=3)
    point["cluster_innovations"] = np.zeros_like(point["cluster_innovations"])
    values = evaluate(model, point, ["parameters", "cluster_effects"])
    between = level_moments(values["parameters"], spec.between)
    fb, z = spec.between.nodes.index("fb"), spec.between.nodes.index("z")
    expected_fb = between.A[fb, z] * spec.data.between_outcomes[:, 0]
    column = model.coords["cluster_variable"].index("fb")
    np.testing.assert_allclose(values["cluster_effects"][:, column], expected_fb)


def test_single_level_density_is_the_multivariate_normal():
    rng = np.random.default_rng(4)
    x = rng.normal(size=40)
    data = pd.DataFrame({"x": x, "m": 0.5 * x + rng.normal(size=40)})
    data["y"] = 0.4 * data.m + rng.normal(size=40)
    spec = build_spec("m ~ x\ny ~ m + x", data)
    model = build_latent_model(spec)
    values = evaluate(model, random_point(model, 5), ["parameters", "within_loglik"])
    moments = level_moments(values["parameters"], spec.within)
    expected = sum(stats.multivariate_normal(moments.mean + moments.Pi @ [xi], moments.Sigma).logpdf(obs)
                   for xi, obs in zip(data.x, spec.data.within_outcomes))
    assert values["within_loglik"] == pytest.approx(expected, rel=1e-9)


def test_gradient_is_finite_with_zero_between_variances():
    data = simulate_two_level()
    model_text = ("level: 1\n fw =~ y1 + y2 + y3\nlevel: 2\n fb =~ y1 + y2 + y3\n"
                  " y1 ~~ 0*y1; y2 ~~ 0*y2; y3 ~~ 0*y3")
    model = build_latent_model(build_spec(model_text, data, cluster="g"))
    gradient = model.compile_dlogp()(model.initial_point())
    assert np.all(np.isfinite(gradient))


def test_correlated_residuals_are_sampled_as_lkj_block():
    data = simulate_two_level()
    spec = build_spec("y1 ~ x\ny2 ~ x\ny3 ~ x", data)
    model = build_latent_model(spec)
    assert any(name.startswith("corr[") for name in model.named_vars)
    values = evaluate(model, random_point(model, 6), ["parameters"])
    moments = level_moments(values["parameters"], spec.within)
    assert np.all(np.linalg.eigvalsh(moments.Sigma) > 0)


def test_stop_gradient_holds_in_pytensor_and_in_jax():
    """The quadrature's nodes are held constant for differentiation; PyTensor's
    zero_grad is rewritten away before JAX sees it, so JAX's gradient (the one
    numpyro uses) went through the Newton steps. d/dx [sg(x) * x] = x."""
    import jax
    import pytensor
    import pytensor.tensor as pt
    from pymc.sampling.jax import get_jaxified_graph

    from bayes_msem.engines.latent import stop_gradient

    x = pt.dscalar("x")
    y = stop_gradient(x) * x
    assert pytensor.function([x], pytensor.grad(y, x))(3.0) == pytest.approx(3.0)
    jax_y = get_jaxified_graph([x], [y])
    assert float(jax.grad(lambda v: jax_y(v)[0])(3.0)) == pytest.approx(3.0)
    assert pytensor.function([x], y)(3.0) == pytest.approx(9.0)
