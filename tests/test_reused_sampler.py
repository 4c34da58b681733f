"""The sampler compiled once per model shape (bayes_msem.reused_sampler): the
lifted density equals PyMC's to the last bit, in value and gradient; two data
sets of one design give one program key, another shape another; and a reused
program samples the *new* data: a second data set with another slope gives
that data set's posterior (as a fit compiled for it alone does), not the
first one's."""

import warnings

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayes_msem as bm
from bayes_msem.engines import get_engine
from bayes_msem.reused_sampler import compiled_programs, lift_density

POPULATION = "level: 1\n  y ~ x\nlevel: 2\n  y ~ w"
FIT = {"draws": 300, "tune": 300, "chains": 2, "random_seed": 3, "progressbar": False}


def _potential(data):
    """PyMC's numpyro potential (minus the log density) of the model on ``data``, and a start."""
    from pymc.sampling.jax import get_jaxified_logp

    model = bm.Model(POPULATION, data, cluster="cluster")
    pymc_model = get_engine(model.engine).build(model.spec, "numpyro")
    start = [np.asarray(v) + 0.1 for v in pymc_model.initial_point().values()]
    return get_jaxified_logp(pymc_model, negative_logp=False), start


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), slope=st.floats(-1, 1))
def test_lifted_density_equals_pymcs_and_keys_the_shape_only(seed, slope):
    data = bm.simulate_data(POPULATION, {"y~x|within": slope}, n_clusters=8, cluster_size=3, seed=seed)
    potential, start = _potential(data)
    lifted = lift_density(potential, start)
    assert float(lifted.evaluate(lifted.consts, start)) == float(potential(start))
    expected = jax.grad(potential)(start)
    for got, want in zip(jax.grad(lambda z: lifted.evaluate(lifted.consts, z))(start), expected):
        np.testing.assert_array_equal(got, want)
    other, other_start = _potential(bm.simulate_data(POPULATION, {}, n_clusters=8, cluster_size=3, seed=seed + 1))
    assert lift_density(other, other_start).key == lifted.key  # other data, same design: one program
    bigger, bigger_start = _potential(bm.simulate_data(POPULATION, {}, n_clusters=9, cluster_size=3, seed=seed))
    assert lift_density(bigger, bigger_start).key != lifted.key


def _fit(data, reuse: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = bm.Model(POPULATION, data, cluster="cluster").fit(reuse_compiled=reuse, **FIT).summary()
    summary.index = summary.lhs + summary.op + summary.rhs + "|" + summary.level.astype(str)
    return summary


def test_a_reused_program_samples_the_new_data():
    first = bm.simulate_data(POPULATION, {"y~x|within": -0.6}, n_clusters=20, cluster_size=8, seed=1)
    second = bm.simulate_data(POPULATION, {"y~x|within": 0.8}, n_clusters=20, cluster_size=8, seed=2)
    _fit(first, reuse=True)
    held = compiled_programs()
    reused = _fit(second, reuse=True)
    assert compiled_programs() == held  # no new program: the first one ran on the second data set
    alone = _fit(second, reuse=False)
    free = alone.index[alone.free]
    gap = (reused.loc[free, "mean"] - alone.loc[free, "mean"]).abs() / alone.loc[free, "sd"]
    assert gap.max() < 0.25, gap  # two independent runs on one posterior: a few MCSE apart
    assert reused.loc["y~x|within", "mean"] == pytest.approx(0.8, abs=0.15)  # the first data set's slope is -0.6
    sd_ratio = reused.loc[free, "sd"] / alone.loc[free, "sd"]
    assert sd_ratio.between(0.8, 1.25).all(), sd_ratio
