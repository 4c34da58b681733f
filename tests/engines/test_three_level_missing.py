"""Three-level models with missing values (bayes_msem.engines.three_level_missing):
the observed-data density with every effect integrated out equals the normal
density of each school's observed values stacked, written from the model's
definition; per school as well (LOO's units); in NumPy and JAX; and the
classes' and schools' effects follow their exact conditional given the
observed values. On data as users bring them: holes anywhere in the rows'
variables, rows shuffled, text ids out of order, unequal classes and schools."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_msem.engines.collapsed import collapsed_logp
from bayes_msem.matrices import NUMPY_BACKEND, jax_backend
from bayes_msem.spec import build_spec
from engines.test_three_level import (
    THREE_LEVEL,
    THREE_LEVEL_CLASS_SLOPE,
    THREE_LEVEL_SLOPE,
    assert_draws_follow,
    check_density,
    random_theta,
    slope_school_moments,
    stacked_logp,
    stacked_slope_logp,
    three_level_data,
)

OUTCOMES = ["y1", "y2", "y3"]
# a slope over classes; and slopes over schools (of x, over classes and schools; of the class covariate z)
SLOPE_MODELS = pytest.mark.parametrize("syntax", [THREE_LEVEL_SLOPE, THREE_LEVEL_CLASS_SLOPE],
                                       ids=["slope over classes", "slopes over schools"])


def with_holes(data: pd.DataFrame, seed: int, rate: float) -> pd.DataFrame:
    """``rate`` of the outcome values set missing at random; every row keeps
    one observed value, and each class's first two rows are complete (else a
    variable could be constant within every class, which the data check refuses)."""
    rng = np.random.default_rng(seed)
    holes = rng.random((len(data), len(OUTCOMES))) < rate
    holes[holes.all(axis=1), rng.integers(len(OUTCOMES))] = False
    holes[data.groupby("class").cumcount().to_numpy() < 2] = False
    values = data[OUTCOMES].to_numpy(copy=True)
    values[holes] = np.nan
    return data.assign(**{name: values[:, k] for k, name in enumerate(OUTCOMES)})


def spec_with_holes(syntax: str, data: pd.DataFrame):
    with pytest.warns(UserWarning, match="units in 'school'|clusters in 'class'"):
        return build_spec(syntax, data, cluster=["class", "school"])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), schools=st.integers(2, 5), max_classes=st.integers(2, 4),
       max_pupils=st.integers(2, 5), rate=st.floats(0.05, 0.5))
def test_density_with_holes_equals_the_stacked_normal_of_the_observed_values(seed, schools, max_classes,
                                                                              max_pupils, rate):
    """A factor at levels 1 and 3, a variable without a class part, covariates at every level."""
    data = with_holes(three_level_data(seed, schools, max_classes, max_pupils), seed, rate)
    check_density(THREE_LEVEL, stacked_logp, data, seed)


@SLOPE_MODELS
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), schools=st.integers(2, 5), max_classes=st.integers(2, 4),
       max_pupils=st.integers(2, 5), rate=st.floats(0.05, 0.5))
def test_density_with_holes_and_a_random_slope_equals_the_stacked_normal(syntax, seed, schools, max_classes,
                                                                         max_pupils, rate):
    data = with_holes(three_level_data(seed, schools, max_classes, max_pupils), seed, rate)
    check_density(syntax, stacked_slope_logp, data[data.columns.drop("y3")], seed)


def test_each_schools_observed_density_and_jax():
    """LOO's per-school terms are each school's stacked normal of its observed
    values and sum to the total; JAX gives the NumPy value."""
    from bayes_msem.engines.collapsed import three_level_unit_log_likelihood

    data = with_holes(three_level_data(11, schools=4, max_classes=3, max_pupils=4), 12, 0.3)
    for syntax, stacked in ((THREE_LEVEL, stacked_logp), (THREE_LEVEL_SLOPE, stacked_slope_logp),
                            (THREE_LEVEL_CLASS_SLOPE, stacked_slope_logp)):
        spec = spec_with_holes(syntax, data)
        theta = random_theta(spec, 3)
        labels = [str(label) for label in spec.data.upper_levels[0].labels]
        per_unit = three_level_unit_log_likelihood(spec, theta[None, None])[0, 0]
        np.testing.assert_allclose(per_unit, [stacked(spec, theta, data[data.school == label]) for label in labels],
                                   rtol=1e-9)
        expected = float(collapsed_logp(spec, theta, NUMPY_BACKEND))
        assert per_unit.sum() == pytest.approx(expected, rel=1e-9)
        assert float(collapsed_logp(spec, theta, jax_backend())) == pytest.approx(expected, rel=1e-10)


@SLOPE_MODELS
def test_effects_with_holes_follow_their_exact_conditional(syntax):
    """Classes' intercepts and slopes and schools' parts given the observed values only."""
    data = with_holes(three_level_data(5, schools=3, max_classes=3, max_pupils=4), 6, 0.3).drop(columns="y3")
    spec = spec_with_holes(syntax, data)
    theta = random_theta(spec, 6)
    names = list(spec.within.observed)

    def exact(label):
        school = data[data.school == label]
        mean, cov, classes, joint_mean, joint_cov, cross = slope_school_moments(spec, theta, school)
        values = school[names].to_numpy().ravel()
        seen = ~np.isnan(values)
        gain = np.linalg.solve(cov[np.ix_(seen, seen)], cross[seen]).T
        return joint_mean + gain @ (values[seen] - mean[seen]), joint_cov - gain @ cross[seen], classes

    assert_draws_follow(spec, theta, exact)
