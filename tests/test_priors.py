"""Prior strings and defaults."""

import numpy as np
import pytest

from bayes_msem.priors import DefaultPriors, PriorSpec, lkj_draw, parse_prior


@pytest.mark.parametrize("text, expected", [
    ("normal(0, 1)", PriorSpec("normal", (0.0, 1.0))),
    ("student_t(3, 0, 2.5)", PriorSpec("student_t", (3.0, 0.0, 2.5))),
    ("gamma(2, 0.5)[sd]", PriorSpec("gamma", (2.0, 0.5), "sd")),
    ("inverse_gamma(1, 1)[var]", PriorSpec("inverse_gamma", (1.0, 1.0), "var")),
    (" lkj(2) ", PriorSpec("lkj", (2.0,))),
])
def test_parse(text, expected):
    assert parse_prior(text) == expected


@pytest.mark.parametrize("text, words", [
    ("gauss(0,1)", "unknown prior family"),
    ("normal(0)", "takes 2 argument"),
    ("normal(0, -1)", "must be positive"),
    ("normal(a, 1)", "must be numbers"),
    ("uniform(1, 0)", "lower < upper"),
    ("normal 0 1", "cannot read the prior"),
])
def test_parse_errors(text, words):
    with pytest.raises(ValueError, match=words):
        parse_prior(text)


def test_defaults_scale_with_the_data():
    defaults = DefaultPriors()
    slope = defaults.for_parameter("regression", lhs_scale=10.0, rhs_scale=2.0, lhs_mean=0.0)
    assert slope == PriorSpec("normal", (0.0, 25.0))
    intercept = defaults.for_parameter("intercept", lhs_scale=2.0, lhs_mean=100.0, rhs_scale=1.0)
    assert intercept.args == (100.0, 20.0)
    assert defaults.for_parameter("variance", 2.0, 1.0, 0.0).scale == "sd"


def test_user_defaults():
    assert DefaultPriors.from_user({"slope_sd": 1}).slope_sd == 1.0
    with pytest.raises(ValueError, match="unknown default-prior keys"):
        DefaultPriors.from_user({"slopes": 1})


FAMILY_EXAMPLES = ["normal(1, 2)", "student_t(4, 1, 2)", "cauchy(0.5, 2)", "uniform(-1, 3)", "gamma(2, 0.5)",
                   "exponential(1.5)", "half_normal(2)", "half_cauchy(1.5)", "half_student_t(3, 2)",
                   "lognormal(0.2, 0.7)", "inverse_gamma(3, 2)"]


@pytest.mark.parametrize("text", FAMILY_EXAMPLES)
def test_logpdf_is_the_density_pymc_samples_with(text):
    # the log prior of power-scaling must be the prior the engines build
    import pymc as pm

    from bayes_msem.engines.parameters import _distribution

    prior = parse_prior(text)
    points = np.array([0.3, 0.9, 1.7, 2.9])
    with pm.Model():
        rv = _distribution("theta", prior, 1.0)
    expected = pm.logp(rv, points).eval()
    np.testing.assert_allclose(prior.logpdf(points), expected, rtol=1e-6)  # PyTensor keeps some constants in float32


@pytest.mark.parametrize("text", FAMILY_EXAMPLES)
def test_draws_follow_the_density(text):
    prior = parse_prior(text)
    draws = prior.draw(np.random.default_rng(1), 20000)
    lower, upper = np.quantile(draws, [0.2, 0.6])
    grid = np.linspace(lower, upper, 2001)
    mass = np.trapezoid(np.exp(prior.logpdf(grid)), grid)  # P(lower < X < upper) from the density
    assert mass == pytest.approx(0.4, abs=0.015)


@pytest.mark.parametrize("n, eta", [(2, 1.0), (3, 2.0), (5, 0.7)])
def test_lkj_draws_have_the_known_marginal(n, eta):
    # each correlation is Beta(b, b) on (-1, 1) with b = eta - 1 + n/2, so E r^2 = 1 / (2b + 1)
    corr = lkj_draw(np.random.default_rng(2), n, eta, 20000)
    assert np.allclose(np.diagonal(corr, axis1=1, axis2=2), 1.0)
    assert (np.linalg.eigvalsh(corr) > 0).all()
    b = eta - 1 + n / 2
    r = corr[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]]
    assert np.mean(r**2) == pytest.approx(1 / (2 * b + 1), rel=0.04)
    assert np.mean(r) == pytest.approx(0.0, abs=0.01)
