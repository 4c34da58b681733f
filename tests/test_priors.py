"""Prior strings and defaults."""

import pytest

from bayes_msem.priors import DefaultPriors, PriorSpec, parse_prior


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
