"""Stage 6: NUTS through PyMC with the fastest backend that is installed.

``sampler="auto"`` uses numpyro (JAX) when it can be imported and PyMC's own
NUTS otherwise. numpyro runs the chains vectorized (vmap) on one device, or, for
models with random slopes, one after another (latent engine) or in parallel on
one device per chain (collapsed engine); see run_nuts.
Heavy modules are imported here, inside functions, so that importing
bayes_msem and its command line stay fast.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np

__all__ = ["SAMPLERS", "choose_sampler", "run_nuts"]

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
    Holzinger-Swineford model: R-hat 1.5)."""
    import numpy as np

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
            elif model.rvs_to_transforms.get(rv) is None:  # unbounded, no start: around PyMC's default 0
                point[rv.name] = jitter
        starts.append(point)
    return starts


def run_nuts(model, *, draws: int, tune: int, chains: int, random_seed: int | None, sampler: str,
             target_accept: float, progressbar: bool, var_names: list[str], batched_linalg: bool = False,
             parallel_chains: bool = False):
    """Run NUTS on ``model`` and return ArviZ InferenceData with ``var_names`` in the posterior.

    ``batched_linalg``: the log-density factors one small matrix per cluster
    (random slopes). vmapping such a gradient over 4 chains cost 3.5 ms against
    0.6 ms for one chain (500 clusters), so numpyro runs these chains one after
    another or, with ``parallel_chains``, in parallel, one JAX device per chain
    (:func:`_numpyro_in_parallel`). Parallel chains help the collapsed engine
    (random-slope mediation at 100 x 20: 38.3 -> 26.7 s) and hurt the latent
    one, whose per-row operations XLA already spreads over the cores (500 x 20:
    72.5 -> 144.8 s). For models without random slopes vmap over chains is the
    faster choice (Demo.twolevel: 24 s vectorized, 30 s sequential)."""
    import pymc as pm

    backend = choose_sampler(sampler)
    kwargs = dict(draws=draws, tune=tune, chains=chains, random_seed=random_seed, progressbar=progressbar,
                  target_accept=target_accept, model=model, var_names=var_names,
                  compute_convergence_checks=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*arviz.*migration.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        if backend == "numpyro":
            devices = _host_devices(chains)  # asked for at every fit: JAX fixes the count when it starts
            if batched_linalg and parallel_chains and chains > 1 and devices > 1:
                return _numpyro_in_parallel(model, draws=draws, tune=tune, chains=chains, random_seed=random_seed,
                                            target_accept=target_accept, progressbar=progressbar,
                                            var_names=var_names, devices=devices)
            return _numpyro(model, draws=draws, tune=tune, chains=chains, random_seed=random_seed,
                            target_accept=target_accept, progressbar=progressbar, var_names=var_names,
                            chain_method="sequential" if batched_linalg else "vectorized",
                            starts=jittered_starts(model, chains, random_seed))
        if backend == "nutpie":
            return pm.sample(nuts_sampler="nutpie", **kwargs)
        return pm.sample(cores=min(chains, os.cpu_count() or 1), **kwargs)


def _numpyro(model, *, draws, tune, chains, random_seed, target_accept, progressbar, var_names, chain_method, starts):
    # Called directly rather than through pm.sample, which first builds PyMC's
    # own step methods (compiling C gradients: 39 s of a 99 s random-slope fit)
    # and then discards them.
    from pymc.sampling.jax import sample_numpyro_nuts

    return sample_numpyro_nuts(draws=draws, tune=tune, chains=chains, target_accept=target_accept,
                               random_seed=random_seed, model=model, var_names=var_names, initvals=starts,
                               jitter=False, progressbar=progressbar, chain_method=chain_method,
                               compute_convergence_checks=False, idata_kwargs={"log_likelihood": False})


def _host_devices(chains: int) -> int:
    """CPU devices JAX has for parallel chains. Before JAX starts, ask XLA for
    one per chain (at least one per core), as ``numpyro.set_host_device_count``
    does; once JAX has started, the count it started with stays.

    One device per chain, even beyond the cores, runs all chains in one group,
    so the sampler is compiled once: 4 chains of the 500-cluster mediation on 2
    cores took 23.5 s as one group of 4 against 28.8 s as two groups of 2 (each
    group compiled its own sampler); at 5000 clusters both took 133 s."""
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        import numpyro

        numpyro.set_host_device_count(max(chains, os.cpu_count() or 1))
    import jax

    return jax.local_device_count()


def _numpyro_in_parallel(model, *, draws, tune, chains, random_seed, target_accept, progressbar, var_names,
                         devices: int):
    """Chains on several cores: groups of ``devices`` chains, each group run in
    parallel (pmap), the groups one after another, joined along ``chain``.
    For models whose gradient factors one small matrix per cluster, where
    vmapping over chains is slow (see :func:`run_nuts`): 2 chains of the 500-
    cluster mediation took 18.7 s in parallel against 30.0 s one after another."""
    import xarray as xr

    from bayes_msem.results import _import_arviz

    starts = jittered_starts(model, chains, random_seed)
    parts = []
    for group, first in enumerate(range(0, chains, devices)):
        size = min(devices, chains - first)
        seed = None if random_seed is None else random_seed + group
        parts.append(_numpyro(model, draws=draws, tune=tune, chains=size, random_seed=seed,
                              target_accept=target_accept, progressbar=progressbar, var_names=var_names,
                              chain_method="parallel" if size > 1 else "sequential",
                              starts=starts[first:first + size]))
    groups = {}
    for name in parts[0].groups():
        datasets = [part[name] for part in parts]
        if "chain" in datasets[0].dims:
            groups[name] = xr.concat(datasets, dim="chain").assign_coords(chain=np.arange(chains))
        else:
            groups[name] = datasets[0]
    return _import_arviz().InferenceData(**groups)
