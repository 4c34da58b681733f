"""Effects found from the model: paths, and the expectation of a product of
Gaussian random slopes (Isserlis) against Monte Carlo."""

from pathlib import Path

import numpy as np
import pytest

from bayes_msem.effects import _gaussian_product_mean, path_name, paths, regression_edges
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
