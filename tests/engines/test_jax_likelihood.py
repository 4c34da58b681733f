"""The collapsed likelihood traced by JAX (what numpyro samples) equals the
PyTensor graph's, in value and gradient, through JAX and through PyTensor's
own backend (the Op's perform and grad)."""

import numpy as np
import pytest

from bayes_msem.engines.collapsed import build_collapsed_model
from bayes_msem.spec import build_spec

from .test_collapsed import unequal_clusters
from .test_collapsed_slopes import SLOPES, mediation_data
from .test_latent import TWO_LEVEL, jax_value_and_gradient, random_point, simulate_two_level

SINGULAR_BETWEEN = "level: 1\n fw =~ y1 + y2 + y3\nlevel: 2\n fb =~ y1 + y2 + y3\n y1 ~~ 0*y1; y2 ~~ 0*y2; y3 ~~ 0*y3"


def specs():
    return {
        "random slopes, level-2 covariate and outcome": build_spec(SLOPES, mediation_data(), cluster="cluster",
                                                                   centering={"m": "none"}),
        "clusters grouped by size": build_spec(TWO_LEVEL, unequal_clusters(), cluster="g"),
        "singular between covariance": build_spec(SINGULAR_BETWEEN, simulate_two_level(), cluster="g"),
    }


@pytest.mark.parametrize("name", list(specs()))
def test_jax_likelihood_equals_pytensor_likelihood(name):
    spec = specs()[name]
    reference, traced = build_collapsed_model(spec), build_collapsed_model(spec, jax_likelihood=True)
    point = random_point(reference, 11)
    # the reference gradient through PyMC's translation of the PyTensor graph:
    # compiling it in C took two minutes
    expected_value = reference.compile_logp()(point)
    translated_value, expected_gradient = jax_value_and_gradient(reference, point)
    assert translated_value == pytest.approx(expected_value, rel=1e-10)
    # PyTensor's C backend, through the Op's perform and its gradient Op
    assert traced.compile_logp()(point) == pytest.approx(expected_value, rel=1e-10)
    np.testing.assert_allclose(traced.compile_dlogp()(point), expected_gradient, rtol=1e-7, atol=1e-8)
    # the JAX function itself, which numpyro samples
    value, gradient = jax_value_and_gradient(traced, point)
    assert value == pytest.approx(expected_value, rel=1e-10)
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-7, atol=1e-8)
