"""Answers must not depend on how the data arrive: property tests.

Users bring data with rows in any order, cluster ids that are unsorted
integers, strings or categoricals, and clusters of unequal size. Every array
with one row per cluster must stay paired with the right cluster. The
properties tested here, for every engine path (no slopes, slopes on
covariates, slopes on modelled variables, level-2 outcomes, between
covariates, single level):

- the log-density is unchanged (1e-9 relative) by permuting rows and
  relabelling clusters, with the cluster effects carried along by label;
- the per-cluster log-likelihood (the unit of LOO) and the cluster effects
  drawn after sampling belong to the same label before and after;
- the level-2 values of a cluster are that cluster's, whatever the row order.

The first version failed all of these whenever rows were not sorted by cluster
id: level-2 covariates and outcomes were paired with the wrong clusters.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from conftest import users_copy
from engines.test_collapsed_slopes import LATENT_SLOPE, SLOPES, mediation_data
from engines.test_latent import TWO_LEVEL, random_point, simulate_two_level
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayes_msem.data import prepare_data
from bayes_msem.engines.collapsed import collapsed_logp, draw_cluster_effects
from bayes_msem.engines.collapsed_slopes import cluster_marginal_logp, marginal_statistics
from bayes_msem.engines.latent import build_latent_model, cluster_effect_names
from bayes_msem.matrices import NUMPY_BACKEND
from bayes_msem.spec import build_spec

LABEL_KINDS = ("int", "unsorted_int", "string", "categorical")  # see users_copy in conftest.py


def unequal(data: pd.DataFrame) -> pd.DataFrame:
    """Drop a few rows so that the clusters have different sizes."""
    return data.drop(index=[0, 1, 7, 20, 33]).reset_index(drop=True)


def label_order(original, copy, mapping: dict) -> np.ndarray:
    """For each cluster of ``copy`` (in its code order), the code of the same
    cluster in ``original``: ``values[order]`` carries per-cluster arrays over."""
    back = {new: old for old, new in mapping.items()}
    position = {str(label): k for k, label in enumerate(original.data.cluster_labels)}
    return np.array([position[back[str(label)]] for label in copy.data.cluster_labels])


def perturbed_theta(spec, seed: int) -> np.ndarray:
    """A valid parameter vector away from the starting values (covariances stay 0)."""
    rng = np.random.default_rng(seed)
    theta = np.array(spec.starts, dtype=float)
    kinds = np.array(spec.kinds)
    theta[kinds == "variance"] *= np.exp(rng.normal(scale=0.3, size=(kinds == "variance").sum()))
    moved = ~np.isin(kinds, ["variance", "covariance"])
    theta[moved] += rng.normal(scale=0.3, size=moved.sum())
    return theta


# Each case: model text, data maker, cluster column, build_spec options.
COLLAPSED_CASES = {
    "no slopes, level-2 outcome and covariate": (TWO_LEVEL, lambda: unequal(simulate_two_level()), "g", {}),
    "slopes on covariates, level-2 outcome and covariate": (SLOPES, mediation_data, "cluster", {"centering": {"m": "none"}}),
}
LATENT_CASES = {
    **COLLAPSED_CASES,
    "slope on a within factor": (LATENT_SLOPE, lambda: unequal(simulate_two_level()), "g", {}),
    "single level": ("y1 ~ x + y4\ny2 ~ y1", lambda: simulate_two_level(), None, {}),
}

copies = st.tuples(st.sampled_from(LABEL_KINDS), st.integers(0, 2**32 - 1))
property_settings = settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=list(COLLAPSED_CASES))
def collapsed_case(request):
    syntax, make, cluster, options = COLLAPSED_CASES[request.param]
    data = make()
    return syntax, data, cluster, options, build_spec(syntax, data, cluster=cluster, **options)


@property_settings
@given(copy=copies, seed=st.integers(0, 1000))
def test_prepared_data_pair_level2_values_with_their_clusters(copy, seed):
    """Every per-cluster array of the copy, reordered by label, equals the original's."""
    data = unequal(simulate_two_level())
    spec = build_spec(TWO_LEVEL, data, cluster="g")
    shuffled, mapping = users_copy(data, "g", *copy)
    other = build_spec(TWO_LEVEL, shuffled, cluster="g")
    order = label_order(spec, other, mapping)
    for name in ("between_outcomes", "between_covariates", "cluster_sizes"):
        np.testing.assert_array_equal(getattr(other.data, name), getattr(spec.data, name)[order], err_msg=name)
    for name in ("sum_y", "sum_x", "n"):
        np.testing.assert_allclose(other.data.stats[name], spec.data.stats[name][order], rtol=1e-12, err_msg=name)
    # and against the raw data: z of each cluster is the z on its rows
    raw = shuffled.groupby("g", observed=True)["z"].first()
    for label, value in zip(other.data.cluster_labels, other.data.between_outcomes[:, 0]):
        assert raw.loc[label] == value


@property_settings
@given(copy=copies, seed=st.integers(0, 1000))
def test_collapsed_log_density_invariant_to_row_order_and_labels(collapsed_case, copy, seed):
    syntax, data, cluster, options, spec = collapsed_case
    shuffled, mapping = users_copy(data, cluster, *copy)
    other = build_spec(syntax, shuffled, cluster=cluster, **options)
    theta = perturbed_theta(spec, seed)
    expected = collapsed_logp(spec, theta, NUMPY_BACKEND)
    assert collapsed_logp(other, theta, NUMPY_BACKEND) == pytest.approx(expected, rel=1e-9)
    # the per-cluster likelihood (LOO's unit) belongs to the same label
    per_cluster = per_cluster_logp(spec, theta)
    np.testing.assert_allclose(per_cluster_logp(other, theta), per_cluster[label_order(spec, other, mapping)],
                               rtol=1e-9)


def per_cluster_logp(spec, theta):
    """What ``cluster_log_likelihood`` computes per draw (through JAX), in NumPy."""
    return cluster_marginal_logp(spec, marginal_statistics(spec), theta, NUMPY_BACKEND)


@settings(deadline=None, max_examples=8)
@given(copy=copies)
def test_saturated_model_of_the_predictive_check_invariant_to_row_order_and_labels(copy):
    """The PPP's saturated two-level model (EM on cluster statistics)."""
    from bayes_msem.predictive import saturated_loglik

    data = unequal(simulate_two_level())
    expected = saturated_loglik(build_spec(TWO_LEVEL, data, cluster="g"))
    shuffled, _ = users_copy(data, "g", *copy)
    assert saturated_loglik(build_spec(TWO_LEVEL, shuffled, cluster="g")) == pytest.approx(expected, rel=1e-9)


def test_row_labels_follow_the_rows():
    """Single-level LOO names its units by the user's index, whatever the row order."""
    data = simulate_two_level()
    shuffled, _ = users_copy(data, None, "int", seed=3)
    spec = build_spec("y1 ~ x", shuffled)
    np.testing.assert_array_equal(spec.data.row_labels, shuffled.index.to_numpy())
    np.testing.assert_array_equal(spec.data.within_outcomes[:, 0], shuffled["y1"].to_numpy())


@pytest.mark.parametrize("case", list(COLLAPSED_CASES))
def test_collapsed_cluster_effects_follow_their_labels(case):
    """Cluster effects drawn from their exact conditional: the mean of each
    label's draws agrees before and after a shuffle, within Monte Carlo error."""
    syntax, make, cluster, options = COLLAPSED_CASES[case]
    data = make()
    spec = build_spec(syntax, data, cluster=cluster, **options)
    shuffled, mapping = users_copy(data, cluster, "string", seed=4)
    other = build_spec(syntax, shuffled, cluster=cluster, **options)
    theta = np.broadcast_to(perturbed_theta(spec, 2), (1, 3000, len(spec.starts))).copy()
    before = draw_cluster_effects(spec, theta, seed=1)[0]
    after = draw_cluster_effects(other, theta, seed=2)[0]
    order = label_order(spec, other, mapping)
    sd = before.std(0)[order]
    gap = np.abs(after.mean(0) - before.mean(0)[order])
    assert np.all(gap <= 5 * sd * np.sqrt(2 / 3000)), gap / sd
    np.testing.assert_allclose(after.std(0), sd, rtol=0.1)
    assert cluster_effect_names(other) == cluster_effect_names(spec)


def latent_log_density(spec, point: dict | None = None, seed: int = 1):
    """The latent engine's log-density (compiled through JAX: a second per
    example, against ten for PyTensor's C backend) at ``point``."""
    model = build_latent_model(spec)
    point = point if point is not None else random_point(model, seed)
    function = model.compile_fn(model.logp(), mode="JAX")
    return float(function(point)), point


@functools.cache
def latent_reference(case: str):
    """The case's data, spec, and density at a random point: the same in
    every example, so compiled once per case rather than once per example."""
    syntax, make, cluster, options = LATENT_CASES[case]
    data = make()
    spec = build_spec(syntax, data, cluster=cluster, **options)
    return (data, spec, *latent_log_density(spec))


@pytest.mark.parametrize("case", list(LATENT_CASES))
@settings(deadline=None, max_examples=4)
@given(copy=copies)
def test_latent_log_density_invariant_to_row_order_and_labels(case, copy):
    """Cluster innovations are carried over by label; the density must not move."""
    syntax, _, cluster, options = LATENT_CASES[case]  # the data come from latent_reference
    data, spec, expected, point = latent_reference(case)
    shuffled, mapping = users_copy(data, cluster, *copy)
    other = build_spec(syntax, shuffled, cluster=cluster, **options)
    moved = dict(point)
    if cluster is not None:
        moved["cluster_innovations"] = point["cluster_innovations"][label_order(spec, other, mapping)]
    assert latent_log_density(other, moved)[0] == pytest.approx(expected, rel=1e-9)


def test_cluster_ids_that_read_alike_are_refused():
    from bayes_msem.errors import DataError

    data = simulate_two_level(clusters=4).assign(g=lambda d: d.g.astype(object))
    data.loc[data.g == 1, "g"] = "1"
    data.loc[data.g == 2, "g"] = 1
    from bayes_msem.partable import build_partable

    with pytest.raises(DataError, match="read the same as text"):
        prepare_data(build_partable(TWO_LEVEL), data, cluster="g")
