"""Effects found from the model: paths, and the expectation of a product of
Gaussian random slopes (Isserlis) against Monte Carlo."""

from pathlib import Path

import numpy as np
import pytest

from bayes_msem.effects import _contextual, _gaussian_product_mean, path_name, paths, regression_edges
from bayes_msem.partable import build_partable

MODELS = Path(__file__).parents[1] / "models"


def test_paths_of_a_111_design_at_each_level():
    table = build_partable((MODELS / "mediation_111.lavaan").read_text())
    assert [path_name(p) for p in paths(regression_edges(table, 1))] == ["x -> m -> y"]
    assert [path_name(p) for p in paths(regression_edges(table, 2))] == ["x -> m -> y"]


def test_paths_through_a_centered_copy_and_random_slopes():
    table = build_partable((MODELS / "mediation_111_random_slopes.lavaan").read_text(), centering={"m": "none"})
    found = paths(regression_edges(table, 1))
    assert [path_name(p) for p in found] == ["x -> m -> y"]
    assert [e.slope for e in found[0]] == ["a", "b"]


def test_paths_of_a_221_design_are_between():
    table = build_partable((MODELS / "mediation_221.lavaan").read_text())
    assert [path_name(p) for p in paths(regression_edges(table, 2))] == ["w -> z -> y"]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_gaussian_product_mean_matches_monte_carlo(k):
    rng = np.random.default_rng(k)
    mean = rng.normal(size=k)
    root = rng.normal(scale=0.5, size=(k, k))
    cov = root @ root.T
    draws = rng.multivariate_normal(mean, cov, size=2_000_000)
    exact = _gaussian_product_mean(mean[None], cov[None])[0]
    monte_carlo = np.prod(draws, axis=1)
    assert exact == pytest.approx(monte_carlo.mean(), abs=4 * monte_carlo.std() / np.sqrt(len(draws)))
    if k == 2:
        assert exact == pytest.approx(mean[0] * mean[1] + cov[0, 1])  # Bauer, Preacher & Gil (2006)


def _contextual_means(text: str, cluster=None) -> tuple[dict, object]:
    """Contextual effects of ``text`` (effect -> (mean, the draws of every table
    row)) where each row's draws are its row number plus noise, and the table."""
    table = build_partable(text, cluster=cluster)
    rng = np.random.default_rng(0)
    values = np.arange(len(table.rows))[None, :] + rng.normal(scale=0.01, size=(200, len(table.rows)))
    return {r["effect"]: (r["mean"], values) for r in _contextual(table, values)}, table


def _row(table, lhs, rhs, level) -> int:
    rows = table.rows
    return rows[(rows.lhs == lhs) & (rows.op == "~") & (rows.rhs == rhs) & (rows.level == level)].index[0]


def test_contextual_effect_is_between_minus_within():
    found, table = _contextual_means("level: 1\n  y ~ x\nlevel: 2\n  y ~ x + w")
    assert list(found) == ["x -> y (between - within)"]  # w has no within coefficient
    mean, values = found["x -> y (between - within)"]
    expected = values[:, _row(table, "y", "x", 2)] - values[:, _row(table, "y", "x", 1)]
    assert mean == pytest.approx(expected.mean())
    assert _contextual_means("level: 1\n  y ~ x\nlevel: 2\n  w ~ x")[0] == {}  # no between part of y


def test_contextual_effects_of_three_levels_step_down_to_the_nearest_level():
    """b2 - b1 and b3 - b2; where the class level lacks the coefficient, b3 - b1."""
    found, table = _contextual_means("level: 1\n  y ~ x\nlevel: 2\n  y ~ x\nlevel: 3\n  y ~ x",
                                     cluster=["class", "school"])
    assert sorted(found) == ["x -> y (class - within)", "x -> y (school - class)"]
    beta = {level: _row(table, "y", "x", level) for level in (1, 2, 3)}
    mean, values = found["x -> y (school - class)"]
    assert mean == pytest.approx((values[:, beta[3]] - values[:, beta[2]]).mean())
    mean, values = found["x -> y (class - within)"]
    assert mean == pytest.approx((values[:, beta[2]] - values[:, beta[1]]).mean())
    skipped, table = _contextual_means("level: 1\n  y ~ x\nlevel: 2\n  y ~ z\nlevel: 3\n  y ~ x",
                                       cluster=["class", "school"])
    assert list(skipped) == ["x -> y (school - within)"]
    mean, values = skipped["x -> y (school - within)"]
    assert mean == pytest.approx((values[:, _row(table, "y", "x", 3)] - values[:, _row(table, "y", "x", 1)]).mean())


def test_contextual_effect_of_a_random_slope_uses_its_mean():
    text = "level: 1\n  s | y ~ x\nlevel: 2\n  y ~ x\n  s ~ 1"
    found, table = _contextual_means(text)
    mean, values = found["x -> y (between - within)"]
    rows = table.rows
    slope_mean = rows[(rows.lhs == "s") & (rows.op == "~1")].index[0]
    assert mean == pytest.approx((values[:, _row(table, "y", "x", 2)] - values[:, slope_mean]).mean())


def test_indirect_effect_of_slopes_over_classes_and_schools_adds_both_parts():
    """A slope with parts at levels 2 and 3 has its mean at level 3 and the sum
    of both parts' (co)variances: E[a b] = mu_a mu_b + cov_2(a, b) + cov_3(a, b)."""
    from bayes_msem.effects import effects_table
    from bayes_msem.matrices import level_structures, parameter_values

    text = "level: 1\n  a | m ~ x\n  b | y ~ m\nlevel: 2\n  a ~~ b\nlevel: 3\n  a ~~ b\n  a ~ w"
    table = build_partable(text, cluster=["class", "school"])
    rows = table.rows
    rng = np.random.default_rng(3)
    theta = np.repeat(rng.uniform(0.2, 0.9, size=(1, table.n_free)), 2, axis=0)  # two draws: describe() takes an sd
    values = parameter_values(rows, theta)[0]

    def value(lhs, op, rhs, level):
        return values[rows[(rows.lhs == lhs) & (rows.op == op) & (rows.rhs == rhs) & (rows.level == level)].index[0]]

    assert value("a", "~1", "", 2) == 0.0 and value("b", "~1", "", 2) == 0.0  # the means sit at level 3
    w_mean, w_var = 0.4, 2.0
    mu_a = value("a", "~1", "", 3) + value("a", "~", "w", 3) * w_mean
    cov_3 = value("a", "~~", "b", 3)
    expected = mu_a * value("b", "~1", "", 3) + value("a", "~~", "b", 2) + cov_3
    frame = effects_table(table, level_structures(table), theta,
                          {2: (np.zeros(0), np.zeros((0, 0))), 3: (np.array([w_mean]), np.array([[w_var]]))})
    found = frame[(frame.type == "indirect") & (frame.effect == "x -> m -> y")]
    assert found["mean"].iloc[0] == pytest.approx(expected)


def test_indirect_effect_through_a_class_covariates_slope_over_schools_uses_its_level_3_mean():
    """z -> m -> y at the class level, the first path a slope varying over schools
    only: its mean sits at level 3 (E[a] b, no covariance with a fixed path)."""
    from bayes_msem.effects import effects_table
    from bayes_msem.matrices import level_structures, parameter_values

    text = "level: 1\n  y ~ x\nlevel: 2\n  a | m ~ z\n  y ~ m\nlevel: 3\n  m ~~ y"
    table = build_partable(text, cluster=["class", "school"])
    rows = table.rows
    theta = np.repeat(np.random.default_rng(4).uniform(0.2, 0.9, size=(1, table.n_free)), 2, axis=0)
    values = parameter_values(rows, theta)[0]
    mean_a = values[rows[(rows.lhs == "a") & (rows.op == "~1") & (rows.level == 3)].index[0]]
    b = values[rows[(rows.lhs == "y") & (rows.op == "~") & (rows.rhs == "m") & (rows.level == 2)].index[0]]
    empty = (np.zeros(0), np.zeros((0, 0)))
    frame = effects_table(table, level_structures(table), theta, {2: (np.zeros(1), np.eye(1)), 3: empty})
    found = frame[(frame.type == "indirect") & (frame.effect == "z -> m -> y")]
    assert found["mean"].iloc[0] == pytest.approx(mean_a * b)
