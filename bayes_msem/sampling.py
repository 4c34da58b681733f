"""Stage 6: NUTS through PyMC with the fastest backend that is installed.

``sampler="auto"`` uses numpyro (JAX) when it can be imported and PyMC's own
NUTS otherwise. numpyro runs the chains vectorized (vmap) on one device, or, for
models with random slopes, one after another (latent engine) or in parallel on
one JAX device per core (collapsed engine); see run_nuts.
Heavy modules are imported here, inside functions, so that importing
bayes_msem and its command line stay fast.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings

__all__ = ["SAMPLERS", "CHAIN_METHODS", "choose_sampler", "run_nuts", "compilation_cache_dir", "free_compiled_programs"]

SAMPLERS = ("auto", "numpyro", "pymc", "nutpie")


def choose_sampler(sampler: str) -> str:
    """Resolve ``"auto"`` and check that the chosen backend is installed."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")
    if sampler == "auto":
        return "numpyro" if importlib.util.find_spec("numpyro") is not None else "pymc"
    module = {"numpyro": "numpyro", "nutpie": "nutpie", "pymc": "pymc"}[sampler]
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"sampler={sampler!r} needs the {module} package: pip install {module}")
    return sampler


START_JITTER = 0.1


def jittered_starts(model, chains: int, random_seed: int | None) -> list[dict]:
    """One start per chain: the model's start values (lavaan's "simple" starts)
    moved by up to 10% (values without a start: by up to 0.1). PyMC's default
    jitter, uniform(-1, 1) on the unconstrained scale, can start a loading near
    0 and leave a chain in the degenerate mode of a CFA (seen on the
    Holzinger-Swineford model: R-hat 1.5). An ordinal variable's thresholds
    stay increasing: two that nearly meet (a category almost empty in the
    data) can swap under the jitter, and out of order they are NaN on the
    sampler's scale, where a chain never moves (seen in the ordinal SBC)."""
    import numpy as np
    from pymc.distributions.transforms import Ordered

    rng = np.random.default_rng(random_seed)
    initial = model.initial_point()  # compiles a function: once
    shapes = {rv.name: np.shape(initial[model.rvs_to_values[rv].name]) for rv in model.free_RVs}
    starts = []
    for _ in range(chains):
        point = {}
        for rv in model.free_RVs:
            value = model.rvs_to_initial_values.get(rv)
            jitter = rng.uniform(-START_JITTER, START_JITTER, size=shapes[rv.name])
            if value is not None:
                point[rv.name] = np.asarray(value, dtype=float) * (1 + jitter)
                if isinstance(model.rvs_to_transforms.get(rv), Ordered):
                    point[rv.name] = np.sort(point[rv.name])
            elif model.rvs_to_transforms.get(rv) is None:  # unbounded, no start: around PyMC's default 0
                point[rv.name] = jitter
        starts.append(point)
    return starts


CHAIN_METHODS = ("vectorized", "sequential", "parallel")


def run_nuts(model, *, draws: int, tune: int, chains: int, random_seed: int | None, sampler: str,
             target_accept: float, progressbar: bool, var_names: list[str], chain_method: str = "parallel",
             n_clusters: int = 0, reuse_compiled: bool = False, curvature_start: bool = False):
    """Run NUTS on ``model`` and return ArviZ InferenceData with ``var_names`` in the posterior.

    ``chain_method`` (numpyro only; the engine says which suits it,
    :meth:`~bayes_msem.engines.Engine.chain_method`):

    - ``"vectorized"``: the chains vmapped on one device: every step waits
      for the chain with the longest trajectory, so it was the slowest
      wherever measured (session 8: Demo.twolevel 24.7 s against 12.6 s
      parallel);
    - ``"sequential"``: one chain after another on one device;
    - ``"parallel"``: the chains spread over several JAX devices, one per
      core (:func:`parallel_layout`), each device running its share one
      after another: the engines' choice. ``n_clusters`` sizes the memory
      parallel chains take (:func:`spare_device`).

    ``reuse_compiled`` (numpyro only): the sampler is compiled with the data
    as arguments and kept in this process, so that a later fit of a model of
    the same shape on other data skips compilation
    (:mod:`bayes_msem.reused_sampler`; Monte Carlo studies use it).

    ``curvature_start`` (numpyro only; the engine says where it pays,
    :meth:`~bayes_msem.engines.Engine.curvature_start`): warm-up starts from
    the inverse mass matrix of :func:`~bayes_msem.mass_matrix.curvature_inverse_mass`
    instead of the identity."""
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method={chain_method!r} is not one of {CHAIN_METHODS}")
    import pymc as pm

    backend = choose_sampler(sampler)
    kwargs = dict(draws=draws, tune=tune, chains=chains, random_seed=random_seed, progressbar=progressbar,
                  target_accept=target_accept, model=model, var_names=var_names,
                  compute_convergence_checks=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*arviz.*migration.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        if backend == "numpyro":
            method = chain_method
            if chain_method == "parallel":
                spare = spare_device(n_clusters, chains, draws + tune)
                method = _parallel_chain_method(chains, _host_devices() - spare, progressbar) if chains > 1 \
                    else "sequential"
            return _numpyro(model, draws=draws, tune=tune, chains=chains, random_seed=random_seed,
                            target_accept=target_accept, progressbar=progressbar, var_names=var_names,
                            chain_method=method, starts=jittered_starts(model, chains, random_seed),
                            reuse_compiled=reuse_compiled, curvature_start=curvature_start)
        if backend == "nutpie":
            return pm.sample(nuts_sampler="nutpie", **kwargs)
        return pm.sample(cores=min(chains, os.cpu_count() or 1), **kwargs)


_calls_since_freed = 0


def free_compiled_programs(every: int = 1) -> None:
    """Drop JAX's compiled programs held in memory (and collect garbage).
    Each holds a few memory maps, and a process that fits model after model
    reaches the kernel's limit of 65530 maps: XLA then aborts ("LLVM ERROR:
    Unable to allocate section memory"), as the test suite did after
    thousands of programs and each Monte Carlo worker did after about 45
    replications (session 8). A later fit compiles what it needs again (or
    reads it from the compilation cache). Samplers kept for reuse
    (:mod:`bayes_msem.reused_sampler`) stay.

    With ``every`` > 1, only every ``every``-th call frees: a Monte Carlo
    worker whose fits reuse their sampler compiles one or two small programs
    per fit, and freeing (0.4 s, mostly garbage collection) was a sixth of
    such a fit."""
    import gc

    global _calls_since_freed
    _calls_since_freed += 1
    if _calls_since_freed < every:
        return
    _calls_since_freed = 0
    if "jax" in sys.modules:
        import jax

        jax.clear_caches()
    gc.collect()


def compilation_cache_dir() -> str | None:
    """Where JAX keeps compiled samplers between runs: ``~/.cache/bayes_msem/jax``
    (under ``$XDG_CACHE_HOME`` where set) unless ``BAYES_MSEM_CACHE_DIR``
    names another folder, or is ``off`` for none.

    On by default since session 8: a repeated Demo.twolevel fit compiles in
    well under a second instead of seconds. In session 6 a test process
    aborted inside XLA while several processes shared one cache folder; it
    was not seen again in six processes with 1, 3 and 5 JAX devices sharing
    one folder, and the test suite's later aborts came from memory maps
    (tests/conftest.py). The tests run without the cache."""
    chosen = os.environ.get("BAYES_MSEM_CACHE_DIR", "default").strip()
    if chosen.lower() in ("off", "0", "none"):
        return None
    if chosen.lower() in ("", "default"):
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "bayes_msem", "jax")
    return chosen


def _use_compilation_cache() -> str | None:
    """JAX's persistent compilation cache: a model of the same shape and data
    compiles once, and a repeated run reads the sampler from disk (Demo.twolevel,
    100 draws: 33 s -> 21 s from the command line). Every program is kept, the
    small ones too: caching only those that took over 0.5 s saved 9 s, not 12.
    Returns the folder, or None where there is no cache."""
    import jax

    directory = compilation_cache_dir()
    if directory is None:
        return None
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile as before
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return directory


def _numpyro(model, *, draws, tune, chains, random_seed, target_accept, progressbar, var_names, chain_method, starts,
             reuse_compiled=False, curvature_start=False):
    # Called directly rather than through pm.sample, which first builds PyMC's
    # own step methods (compiling C gradients: 39 s of a 99 s random-slope fit)
    # and then discards them.
    from pymc.sampling.jax import sample_numpyro_nuts

    if reuse_compiled:  # no bars: the compiled program is called as one
        bars, context = False, _reused_sampler()
    else:
        directory = _use_compilation_cache()
        # Progress bars only where someone watches (a terminal or a notebook): the
        # bars' calls back to Python keep JAX from caching the sampling loop, which
        # costs a repeated Demo.twolevel run 5 s (benchmarks/README.md).
        bars = progressbar and (sys.stderr.isatty() or "ipykernel" in sys.modules)
        if progressbar:
            where = f"; a repeated run reads it from {directory}" if directory and not bars else ""
            print(f"Compiling the sampler (5-30 s{where})...", file=sys.stderr)
        context = _bars_for_chains_per_device(bars and callable(chain_method), draws + tune)
    nuts_kwargs = {}
    if curvature_start:  # after the cache is set up: a repeated run reads this compilation too
        from bayes_msem.mass_matrix import curvature_inverse_mass

        if progressbar:
            print("Taking the curvature at the start for warm-up's first steps...", file=sys.stderr)
        nuts_kwargs["inverse_mass_matrix"] = curvature_inverse_mass(model, starts[0], random_seed)
    with context:
        return sample_numpyro_nuts(draws=draws, tune=tune, chains=chains, target_accept=target_accept,
                                   random_seed=random_seed, model=model, var_names=var_names, initvals=starts,
                                   jitter=False, progressbar=bars, chain_method=chain_method, nuts_kwargs=nuts_kwargs,
                                   compute_convergence_checks=False, idata_kwargs={"log_likelihood": False})


@contextlib.contextmanager
def _reused_sampler():
    """While PyMC samples here, its numpyro step runs through
    :func:`bayes_msem.reused_sampler.lifted_numpyro_nuts` (same arguments and
    returns), whose compiled program takes the data as arguments."""
    import pymc.sampling.jax as pymc_jax

    from bayes_msem.reused_sampler import lifted_numpyro_nuts

    original = pymc_jax._sample_numpyro_nuts
    pymc_jax._sample_numpyro_nuts = lifted_numpyro_nuts
    try:
        yield
    finally:
        pymc_jax._sample_numpyro_nuts = original


PROGRESS_UPDATES = 40  # progress bar updates per chain: each is a call from the compiled loop to Python


@contextlib.contextmanager
def _bars_for_chains_per_device(wanted: bool, iterations: int):
    """numpyro turns its progress bars off for a ``chain_method`` of its own
    (:func:`chains_per_device`), although its bars work there: each chain
    takes the next bar when it starts. While PyMC builds its ``MCMC`` here,
    ``numpyro.infer.MCMC`` is a subclass that turns them back on, updated
    ``PROGRESS_UPDATES`` times per chain."""
    if not wanted:
        yield
        return
    import numpyro.infer

    original = numpyro.infer.MCMC

    class MCMCWithBars(original):
        def __init__(self, *args, progress_bar: bool = True, **kwargs):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Disabling progress bar")
                super().__init__(*args, progress_bar=False, **kwargs)
            self.progress_bar = progress_bar and "CI" not in os.environ
            self.progress_rate = max(1, iterations // PROGRESS_UPDATES)

    numpyro.infer.MCMC = MCMCWithBars
    try:
        yield
    finally:
        numpyro.infer.MCMC = original


# Parallel chains that keep every JAX device busy hold on to memory until
# sampling ends: about 50 bytes per cluster, chain and iteration (random-slope
# mediation, 2 cores: 110 kB per chain and iteration at 2000 clusters; 4089 MiB
# peak at 5000 x 20 against 2342 MiB with one device left idle, which took
# 141 s instead of 118 s). Nothing grew with a device idle, so fits whose growth
# would pass SPARE_DEVICE_ABOVE leave one idle; smaller ones keep the speed.
GROWTH_PER_CLUSTER_ITERATION = 50  # bytes, per chain
SPARE_DEVICE_ABOVE = 2**30  # bytes


def spare_device(n_clusters: int, chains: int, iterations: int) -> int:
    """1 when parallel chains on every device would hold more than
    ``SPARE_DEVICE_ABOVE`` bytes by the end of sampling, else 0."""
    return int(GROWTH_PER_CLUSTER_ITERATION * n_clusters * chains * iterations > SPARE_DEVICE_ABOVE)


def _parallel_chain_method(chains: int, devices: int, progressbar: bool):
    """numpyro's ``chain_method`` for chains in parallel on this machine's
    cores, on at most ``devices`` JAX devices."""
    used = parallel_layout(chains, devices, os.cpu_count() or 1)
    if used == 1:
        return "sequential"
    if used == chains:
        return "parallel"  # one device per chain: numpyro's own method, with its progress bars
    if progressbar:
        print(f"Sampling {chains} chains, {chains // used} at a time on each of {used} cores...", file=sys.stderr)
    return chains_per_device(used)


def _host_devices() -> int:
    """CPU devices JAX has for parallel chains. Before JAX starts, ask XLA for
    one per core, as ``numpyro.set_host_device_count`` does, and one more to
    leave idle in large fits (:func:`spare_device`); once JAX has started, the
    count it started with stays."""
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        import numpyro

        numpyro.set_host_device_count((os.cpu_count() or 1) + 1)
    import jax

    return jax.local_device_count()


def parallel_layout(chains: int, devices: int, cores: int) -> int:
    """How many devices run the chains at once: the largest number that divides
    ``chains`` and is at most the cores and the devices (1: one chain after
    another).

    Never more than one device per core: 4 chains on 4 devices on 2 cores ran
    the 500-cluster mediation in 23.0 s against 19.1 s on 2 devices with 2
    chains each."""
    usable = max(1, min(devices, cores, chains))
    return max(d for d in range(1, usable + 1) if chains % d == 0)


def chains_per_device(devices: int):
    """numpyro ``chain_method``: the chains split evenly over ``devices`` JAX
    devices (pmap), each device running its share one after another
    (``lax.map``). One compiled program runs all chains, and each chain keeps
    the random key it would get from ``chain_method="parallel"``."""
    import jax

    def chain_method(single_chain):
        def run(chain_args):
            chains = jax.tree.leaves(chain_args)[0].shape[0]
            by_device = jax.tree.map(lambda x: x.reshape(devices, chains // devices, *x.shape[1:]), chain_args)
            out = jax.pmap(lambda share: jax.lax.map(single_chain, share))(by_device)
            return jax.tree.map(lambda x: x.reshape(chains, *x.shape[2:]), out)

        return run

    chain_method.devices = devices  # read by the reused sampler (bayes_msem.reused_sampler)
    return chain_method
