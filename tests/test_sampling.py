"""Sampling layout: how chains share the cores, and the compilation cache (fitted only in subprocesses)."""

import os
import subprocess
import sys

import pytest

from bayes_msem.sampling import parallel_layout, spare_device


@pytest.mark.parametrize("chains, devices, cores, expected", [
    (4, 4, 2, 2),   # more chains than cores: two devices, two chains each
    (4, 8, 8, 4),   # a core per chain
    (4, 2, 8, 2),   # JAX started with fewer devices than cores
    (3, 4, 2, 1),   # no even split: one chain after another
    (6, 4, 4, 3),
    (1, 4, 4, 1),
])
def test_parallel_layout_never_puts_more_devices_than_cores_to_work(chains, devices, cores, expected):
    assert parallel_layout(chains, devices, cores) == expected


def test_large_fits_leave_a_device_idle():
    """At about 50 bytes per cluster, chain and iteration, 4 chains x 2000
    iterations pass 1 GiB from about 2700 clusters on."""
    assert spare_device(n_clusters=5000, chains=4, iterations=2000) == 1
    assert spare_device(n_clusters=500, chains=4, iterations=2000) == 0
    assert spare_device(n_clusters=5000, chains=4, iterations=400) == 0


CHAINS_SPLIT_OVER_TWO_DEVICES = """
import jax, jax.numpy as jnp, numpy as np
from bayes_msem.sampling import chains_per_device

assert jax.local_device_count() == 2, jax.local_device_count()


def single_chain(args):
    key, start = args
    noise = jax.random.normal(key, (5,))
    return {"path": start + jnp.cumsum(noise), "last": start + noise.sum()}


keys = jax.random.split(jax.random.PRNGKey(3), 4)
starts = jnp.arange(4.0)
together = chains_per_device(2)(single_chain)((keys, starts))
for chain in range(4):  # float32 unless x64 is on: sums in another order, hence 1e-6
    alone = single_chain((keys[chain], starts[chain]))
    np.testing.assert_allclose(together["path"][chain], alone["path"], rtol=1e-6)
    np.testing.assert_allclose(together["last"][chain], alone["last"], rtol=1e-6)
assert together["path"].shape == (4, 5)
print("ok")
"""


def test_chains_per_device_gives_each_chain_what_it_would_get_alone():
    """A chain function with a carried state and a random key: split over 2
    devices and mapped within each, every chain's result equals running it
    alone, and the chains stay in order. In a process of its own, as JAX fixes
    its device count when it starts: in this one, an earlier test may have
    started it with one device (the test then skipped, depending on order)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", CHAINS_SPLIT_OVER_TWO_DEVICES], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_compilation_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    from bayes_msem.sampling import compilation_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("BAYES_MSEM_CACHE_DIR", raising=False)
    assert compilation_cache_dir() == str(tmp_path / "bayes_msem" / "jax")  # on by default
    monkeypatch.setenv("BAYES_MSEM_CACHE_DIR", str(tmp_path / "c"))
    assert compilation_cache_dir() == str(tmp_path / "c")
    monkeypatch.setenv("BAYES_MSEM_CACHE_DIR", "off")
    assert compilation_cache_dir() is None
    monkeypatch.setenv("BAYES_MSEM_CACHE_DIR", "default")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache_dir() == str(tmp_path / "bayes_msem" / "jax")


@pytest.mark.slow
def test_a_repeated_fit_reads_its_sampler_from_the_cache(tmp_path):
    """In processes of their own, as JAX's cache settings hold for a whole process."""
    script = ("import bayes_msem as bm, numpy as np, pandas as pd\n"
              "rng = np.random.default_rng(1); x = rng.normal(size=60)\n"
              "data = pd.DataFrame({'x': x, 'y': 0.5 * x + rng.normal(size=60)})\n"
              "r = bm.Model('y ~ x', data).fit(draws=50, tune=50, chains=2, random_seed=3, progressbar=False)\n"
              "print(repr(float(r.summary()['mean'].iloc[0])))\n")
    env = dict(os.environ, BAYES_MSEM_CACHE_DIR=str(tmp_path / "cache"))
    first, second = (subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                    timeout=300) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert any((tmp_path / "cache").iterdir())  # compiled programs were written
    assert first.stdout == second.stdout  # and the cached sampler gives the same draws


def test_library_noise_is_silenced_and_nothing_else():
    """In a fresh process (pytest resets warning filters for each test)."""
    import subprocess
    import sys

    code = ("import warnings, bayes_msem\n"
            "warnings.warn('PyTensor could not link to a BLAS installation. Operations ...')\n"
            "warnings.warn('Some donated buffers were not usable: float64[2,100]')\n"
            "warnings.warn('R-hat above 1.01 for y~x')\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "R-hat above 1.01" in err and "BLAS" not in err and "donated" not in err


def test_jittered_starts_keep_thresholds_that_nearly_meet_in_order():
    """A middle category with 4 of 1000 answers starts its thresholds 0.011
    apart (-0.501, -0.490): the 10% jitter swapped them in 38% of
    the chains, and a swapped pair is NaN on the sampler's scale (log of a
    negative gap), where the chain never moves. Every start stays increasing."""
    import numpy as np
    import pandas as pd

    import bayes_msem as bm
    from bayes_msem.engines import get_engine
    from bayes_msem.sampling import jittered_starts

    rng = np.random.default_rng(5)
    answers = np.repeat([0, 1, 2], [308, 4, 688])
    data = pd.DataFrame({"u": rng.permutation(answers), "x": rng.normal(size=1000)})
    model = bm.Model("u ~ x", data, ordered=["u"])
    pymc_model = get_engine(model.engine).build(model.spec, "numpyro")
    starts = [start["thresholds[u]"] for start in jittered_starts(pymc_model, 200, random_seed=1)]
    assert all(np.all(np.diff(cuts) > 0) for cuts in starts)
    assert np.ptp([cuts[0] for cuts in starts]) > 0.05  # still jittered
