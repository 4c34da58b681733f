"""Latent engine: the log-density from cross-products equals a row-by-row
normal density computed with SciPy, and gradients are finite."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    """The model's variables ``names`` at ``point``, computed in JAX as the
    sampler runs the graph (a C compilation of each test's graph cost about a
    minute per test in CI)."""
    outputs = model.replace_rvs_by_values([model[name] for name in names])
    function = model.compile_fn(outputs, inputs=model.value_vars,
                                on_unused_input="ignore", point_fn=True, mode="JAX")
    return {name: np.asarray(value) for name, value in zip(names, function(point))}


def jax_value_and_gradient(model, point) -> tuple[float, np.ndarray]:
    """The log density and its gradient (value variables in order, flattened)
    as the JAX samplers take them: JAX's grad of PyMC's translation of the
    graph. PyMC's own ``compile_dlogp`` builds a symbolic gradient in PyTensor
    first, which took 35-55 s per test model."""
    import jax
    import jax.numpy as jnp
    from pymc.sampling.jax import get_jaxified_logp

    logp = get_jaxified_logp(model)
    values = [jnp.asarray(point[v.name]) for v in model.value_vars]
    value, gradient = jax.value_and_grad(lambda *x: logp(x), argnums=tuple(range(len(values))))(*values)
    return float(value), np.concatenate([np.ravel(g) for g in gradient])


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
    assert np.all(np.isfinite(jax_value_and_gradient(model, model.initial_point())[1]))


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


# ---- missing level-2 outcomes -------------------------------------------------------------------------------------

INCOMPLETE_OUTCOMES = """level: 1
  y ~ x
level: 2
  z1 ~ y + w
  z2 ~ z1 + y"""


def incomplete_outcomes_data(rng, clusters: int, holes: float) -> pd.DataFrame:
    """Unequal clusters with text labels out of order, rows shuffled, z1 and z2 missing in some clusters."""
    sizes = rng.integers(1, 6, clusters)
    sizes[0] = max(sizes[0], 2)  # every cluster of one row is refused (nothing varies within), not what this tests
    cluster = np.repeat(np.arange(clusters), sizes)
    w, z1, z2 = rng.normal(size=(3, clusters))
    kept = np.arange(clusters) < 2  # two clusters observe both: no column is all missing or constant
    z1[(rng.random(clusters) < holes) & ~kept] = np.nan
    z2[(rng.random(clusters) < holes) & ~kept] = np.nan
    labels = np.array([f"school {k}" for k in rng.permutation(clusters)])
    data = pd.DataFrame({"g": labels[cluster], "x": rng.normal(size=len(cluster)), "y": rng.normal(size=len(cluster)),
                         "w": w[cluster], "z1": z1[cluster], "z2": z2[cluster]})
    return data.iloc[rng.permutation(len(data))]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), clusters=st.integers(3, 15), holes=st.sampled_from([0.2, 0.5, 0.9]))
def test_missing_level_two_outcomes_are_integrated_out(seed, clusters, holes):
    """Per cluster, log p(observed z | cluster effect) equals the normal density
    of the observed ones written out by hand: z1 = a1 + g1 b + g2 w + e1,
    z2 = a2 + h1 z1 + h2 b + e2 (a cluster that observes neither adds 0)."""
    from bayes_msem.engines.latent import between_outcomes_logp
    from bayes_msem.engines.parameters import parameter_names
    from bayes_msem.matrices import NUMPY_BACKEND

    rng = np.random.default_rng(seed)
    data = incomplete_outcomes_data(rng, clusters, holes)
    spec = build_spec(INCOMPLETE_OUTCOMES, data, cluster="g")
    values = {name: rng.uniform(0.3, 1.5) if "~~" in name else rng.normal() for name in parameter_names(spec)}
    theta = np.array(list(values.values()))
    moments = level_moments(theta, spec.layout.levels[1].structure)
    effects = rng.normal(size=(spec.data.n_clusters, 1))  # y's between part
    got = between_outcomes_logp(spec, theta, moments, effects, NUMPY_BACKEND, per_cluster=True)
    assert got.shape == (spec.data.n_clusters,)
    np.testing.assert_allclose(got.sum(), between_outcomes_logp(spec, theta, moments, effects, NUMPY_BACKEND))
    # leading axes (per-cluster LOO's importance points): each copy on its own
    copies = np.stack([effects, effects + 1.0])
    stacked = between_outcomes_logp(spec, theta, moments, copies, NUMPY_BACKEND, per_cluster=True)
    np.testing.assert_allclose(stacked[0], got)
    np.testing.assert_allclose(stacked[1], between_outcomes_logp(spec, theta, moments, effects + 1.0, NUMPY_BACKEND,
                                                                 per_cluster=True))

    v = values
    z = spec.data.between_outcomes
    w = data.groupby("g").w.first().loc[spec.data.cluster_labels].to_numpy()
    for j, b in enumerate(effects[:, 0]):
        mean1 = v["z1~1|between"] + v["z1~y|between"] * b + v["z1~w|between"] * w[j]
        mean = np.array([mean1, v["z2~1|between"] + v["z2~z1|between"] * mean1 + v["z2~y|between"] * b])
        s1, s2, h = v["z1~~z1|between"], v["z2~~z2|between"], v["z2~z1|between"]
        cov = np.array([[s1, h * s1], [h * s1, h**2 * s1 + s2]])
        seen = ~np.isnan(z[j])
        expected = stats.multivariate_normal(mean[seen], cov[np.ix_(seen, seen)]).logpdf(z[j, seen]) if seen.any() else 0.0
        np.testing.assert_allclose(got[j], expected, rtol=1e-10, atol=1e-10)


def test_missing_level_two_outcomes_in_pytensor_and_the_refusals():
    """The sampler's PyTensor term equals the NumPy one; the model compiles
    with a finite density; a missing outcome that predicts an effect is refused."""
    import pytensor.tensor as pt

    import bayes_msem as bm
    from bayes_msem.engines.latent import PYTENSOR_BACKEND, between_outcomes_logp
    from bayes_msem.engines.parameters import parameter_names
    from bayes_msem.matrices import NUMPY_BACKEND

    rng = np.random.default_rng(4)
    data = incomplete_outcomes_data(rng, 10, 0.4)
    spec = build_spec(INCOMPLETE_OUTCOMES, data, cluster="g")
    theta = rng.uniform(0.3, 1.2, size=len(parameter_names(spec)))
    effects = rng.normal(size=(spec.data.n_clusters, 1))
    structure = spec.layout.levels[1].structure
    expected = between_outcomes_logp(spec, theta, level_moments(theta, structure), effects, NUMPY_BACKEND)
    theta_t = pt.as_tensor_variable(theta)
    got = between_outcomes_logp(spec, theta_t, level_moments(theta_t, structure, PYTENSOR_BACKEND),
                                pt.as_tensor_variable(effects), PYTENSOR_BACKEND).eval()
    np.testing.assert_allclose(got, expected, rtol=1e-10)

    model = build_latent_model(spec)
    assert np.isfinite(evaluate(model, random_point(model, 2), ["between_outcomes_loglik"])["between_outcomes_loglik"])

    with pytest.raises(ValueError, match="z1, which predict a cluster effect.*engine=.collapsed"):
        bm.Model("level: 1\n y ~ x\nlevel: 2\n z1 ~ w\n y ~ z1", data, cluster="g", engine="latent")
