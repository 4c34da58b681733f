"""The parameterization NUTS samples in. The LKJ correlations: the log-Jacobian
equals the log-determinant of the Jacobian of z -> off-diagonal correlations
(autodiff), and every z gives a positive definite correlation matrix. Scales:
rescaling the data leaves the sampler's target unchanged."""

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_msem.engines.parameters import lkj_cholesky


@pytest.mark.parametrize("n", [2, 3, 5])
def test_lkj_jacobian_matches_autodiff(n):
    z = pt.vector("z")
    L, log_jacobian, half_log_det = lkj_cholesky(z, n)
    C = L @ L.T
    off = C[np.tril_indices(n, -1)]
    values = pytensor.function([z], [C, log_jacobian, half_log_det])
    jacobian = pytensor.function([z], pytensor.gradient.jacobian(off, z))
    rng = np.random.default_rng(n)
    for _ in range(3):
        point = rng.normal(scale=1.5, size=n * (n - 1) // 2)
        corr, log_j, half = values(point)
        np.testing.assert_allclose(np.diag(corr), 1.0)
        assert np.linalg.eigvalsh(corr).min() > 0
        assert log_j == pytest.approx(np.log(abs(np.linalg.det(jacobian(point)))), rel=1e-9)
        assert 2 * half == pytest.approx(np.linalg.slogdet(corr)[1], rel=1e-9)


# A partial pattern (issue 12): free pairs (1,0), (2,0), (3,1), (3,2); (2,1) and (3,0) fixed at 0.
PATTERN = [(1, 0), (2, 0), (3, 1), (3, 2)]


def test_patterned_correlation_has_exact_zeros_and_is_positive_definite():
    from bayes_msem.priors import patterned_correlation, patterned_factor_values

    x = np.random.default_rng(1).normal(scale=2.0, size=(200, len(PATTERN)))
    corr, log_det = patterned_correlation(x, 4, PATTERN)
    np.testing.assert_allclose(np.diagonal(corr, axis1=1, axis2=2), 1.0)
    np.testing.assert_allclose(corr[:, 2, 1], 0.0, atol=1e-15)
    np.testing.assert_allclose(corr[:, 3, 0], 0.0, atol=1e-15)
    assert np.linalg.eigvalsh(corr).min() > 0
    np.testing.assert_allclose(log_det, np.linalg.slogdet(corr)[1], rtol=1e-10)
    np.testing.assert_allclose(patterned_factor_values(corr, PATTERN), x, rtol=1e-8)  # one x per matrix


def test_patterned_correlation_in_pytensor_equals_numpy():
    from bayes_msem.priors import patterned_correlation

    x = pt.vector("x")
    corr, log_det = patterned_correlation(x, 4, PATTERN, xp=pt)
    point = np.array([0.3, -1.2, 0.8, 2.0])
    values = pytensor.function([x], [corr, log_det])(point)
    expected = patterned_correlation(point, 4, PATTERN)
    np.testing.assert_allclose(values[0], expected[0], rtol=1e-12)
    assert values[1] == pytest.approx(expected[1], rel=1e-12)


def test_patterned_prior_of_a_lone_correlation_is_uniform_as_lkj1():
    from scipy import stats

    from bayes_msem.priors import patterned_draw, patterned_logpdf

    draws = patterned_draw(np.random.default_rng(2), 2, [(1, 0)], 1.0, 20000)[:, 1, 0]
    assert stats.kstest(draws, stats.uniform(-1, 2).cdf).pvalue > 0.01
    # eta > 1 by rejection: LKJ(3) on a 2x2 matrix is Beta(3, 3) on (r + 1) / 2
    draws = patterned_draw(np.random.default_rng(3), 2, [(1, 0)], 3.0, 20000)[:, 1, 0]
    assert stats.kstest((draws + 1) / 2, stats.beta(3, 3).cdf).pvalue > 0.01
    corr = np.array([[[1.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    x = np.array([0.5 / np.sqrt(0.75), 0.0])
    expected = stats.t(2, scale=1 / np.sqrt(2)).logpdf(x)
    np.testing.assert_allclose(patterned_logpdf(corr, [(1, 0)], 1.0), expected)


def test_constrained_correlation_meets_its_targets_in_numpy_and_pytensor():
    """y1 ~~ c*y2 + 0.3*y3; y3 ~~ c*y4; y2 ~~ y4 (y1 ~~ y4, y2 ~~ y3 at 0)."""
    import pandas as pd

    from bayes_msem.priors import constrained_correlation
    from bayes_msem.spec import build_spec

    data = pd.DataFrame(np.random.default_rng(1).normal(size=(50, 4)), columns=["y1", "y2", "y3", "y4"])
    (block,) = build_spec("y1 ~~ c*y2 + 0.3*y3\ny3 ~~ c*y4\ny2 ~~ y4", data).covariance_blocks
    sd = np.array([1.5, 0.8, 1.1, 2.0])
    cpc = np.array([0.4, -0.3])
    corr, margins, covariances = constrained_correlation(cpc, 4, block.owners(), block.targets(None), list(sd))
    cov = corr * np.outer(sd, sd)
    assert min(margins) > 0 and np.linalg.eigvalsh(corr).min() > 0
    assert cov[2, 0] == pytest.approx(0.3) and cov[3, 2] == pytest.approx(cov[1, 0]) == pytest.approx(covariances[0])
    assert cov[3, 0] == pytest.approx(0.0, abs=1e-14) and cov[2, 1] == pytest.approx(0.0, abs=1e-14)
    assert corr[1, 0] == pytest.approx(0.4)  # the first free partial correlation is a correlation
    z = pt.vector("z")
    graph = constrained_correlation(z, 4, block.owners(), block.targets(None), [pt.constant(v) for v in sd], xp=pt)
    np.testing.assert_allclose(pytensor.function([z], graph[0])(cpc), corr, rtol=1e-12)
    # a fixed covariance larger than the variances allow is flagged, not built
    (tight,) = build_spec("y1 ~~ 5*y2", data).covariance_blocks
    assert constrained_correlation(np.zeros(0), 2, tight.owners(), tight.targets(None), [1.0, 1.0])[1][0] < 0


# Scale-free sampling (issue 17): every parameter is sampled in units of its prior's scale
# (engines.parameters.Standardized), and the default priors scale with the data, so rescaling a
# variable must leave the target NUTS sees unchanged but for a constant, at every point of the
# coordinates it moves in: the same gradient, hence the same adaptation and draws (rescaled).
SCALES = st.sampled_from([1e-6, 1e-3, 0.1, 1.0, 10.0, 1e4, 1e6])


def _scale_cases():
    from conftest import DATA, POLITICAL_DEMOCRACY_SEM

    import bayes_msem as bm

    return {
        "demo": (bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), "cluster", {}),
        "random-slope mediation": (bm.example_model("mediation_111_random_slopes"),
                                   bm.example_data("mediation_111_random_slopes"), "cluster",
                                   {"centering": {"m": "none"}}),
        "single-level SEM": (POLITICAL_DEMOCRACY_SEM, pd.read_csv(DATA / "political_democracy.csv"), None, {}),
    }


def _target(spec):
    """The log-density in the coordinates NUTS moves in: the priors with the
    transforms' Jacobians (compiled through JAX) plus the log-likelihood at the
    parameters those coordinates give (in NumPy)."""
    import pymc as pm

    from bayes_msem.checking import row_log_likelihood
    from bayes_msem.engines.collapsed import collapsed_logp
    from bayes_msem.engines.parameters import free_parameter_vector
    from bayes_msem.matrices import NUMPY_BACKEND

    with pm.Model() as model:
        theta = free_parameter_vector(spec)
    prior_and_parameters = model.compile_fn([model.logp(), *model.replace_rvs_by_values([theta])], mode="JAX")

    def target(point):
        log_prior, values = prior_and_parameters(point)
        if spec.layout.multilevel:
            return float(log_prior) + float(collapsed_logp(spec, np.asarray(values), NUMPY_BACKEND))
        return float(log_prior) + float(row_log_likelihood(spec, np.asarray(values)[None, None]).sum())

    return model, target


@pytest.mark.parametrize("case", ["demo", "random-slope mediation", "single-level SEM"])
@settings(deadline=None, max_examples=4)
@given(data=st.data())
def test_rescaling_variables_leaves_the_samplers_target_unchanged(case, data):
    from bayes_msem.spec import build_spec

    syntax, frame, cluster, options = _scale_cases()[case]
    variables = [c for c in frame.columns if c != cluster]
    factors = {v: data.draw(SCALES, label=v) for v in variables}
    # the outcomes' origin moves by 100 of their units: far, though not so far that the
    # cross-products of raw values lose the digits of the deviations (|mean| / sd near 1e6 would)
    shift = data.draw(st.sampled_from([0.0, 100.0]), label="shift of the outcomes' origin")
    rescaled = frame.assign(**{v: (frame[v] + (shift if v.startswith("y") else 0.0)) * f for v, f in factors.items()})
    model, original = _target(build_spec(syntax, frame, cluster=cluster, **options))
    _, changed = _target(build_spec(syntax, rescaled, cluster=cluster, **options))
    rng = np.random.default_rng(0)
    start = model.initial_point()
    offsets, size = [], 0.0
    for _ in range(6):
        point = {k: v + rng.normal(scale=0.5, size=np.shape(v)) for k, v in start.items()}
        value = original(point)
        offsets.append(value - changed(point))
        size = max(size, abs(value))
    assert np.ptp(offsets) < 1e-8 * size, offsets  # a constant: the log-Jacobian of the change of units
