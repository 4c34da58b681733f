"""Stage 6: NUTS through PyMC with the fastest backend that is installed.

``sampler="auto"`` uses numpyro (JAX) when it can be imported and PyMC's own
NUTS otherwise. numpyro runs the chains vectorized (vmap) on one device, or one
after another for models with random slopes (see run_nuts).
Heavy modules are imported here, inside functions, so that importing
bayes_msem and its command line stay fast.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

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
             target_accept: float, progressbar: bool, var_names: list[str], batched_linalg: bool = False):
    """Run NUTS on ``model`` and return ArviZ InferenceData with ``var_names`` in the posterior.

    ``batched_linalg``: the log-density factors one small matrix per cluster
    (random slopes). numpyro then runs the chains one after another: vmapping
    such a gradient over 4 chains cost 3.5 ms against 0.6 ms for one chain
    (500 clusters), while for the other models vmap is the faster choice
    (Demo.twolevel: 24 s vectorized, 30 s sequential)."""
    import pymc as pm

    backend = choose_sampler(sampler)
    kwargs = dict(draws=draws, tune=tune, chains=chains, random_seed=random_seed, progressbar=progressbar,
                  target_accept=target_accept, model=model, var_names=var_names,
                  compute_convergence_checks=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*arviz.*migration.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        if backend == "numpyro":
            # Called directly rather than through pm.sample, which first builds
            # PyMC's own step methods (compiling C gradients: 39 s of a 99 s
            # random-slope fit) and then discards them.
            # "vectorized" (vmap over chains on one device) rather than "parallel":
            # pmap over several XLA host devices hung here in PyMC's post-processing,
            # with 4 devices on 2 cores and with 2 on 2 (pymc 5.28, jax 0.10).
            from pymc.sampling.jax import sample_numpyro_nuts

            return sample_numpyro_nuts(draws=draws, tune=tune, chains=chains, target_accept=target_accept,
                                       random_seed=random_seed, model=model, var_names=var_names,
                                       initvals=jittered_starts(model, chains, random_seed), jitter=False,
                                       progressbar=progressbar,
                                       chain_method="sequential" if batched_linalg else "vectorized",
                                       compute_convergence_checks=False, idata_kwargs={"log_likelihood": False})
        if backend == "nutpie":
            return pm.sample(nuts_sampler="nutpie", **kwargs)
        return pm.sample(cores=min(chains, os.cpu_count() or 1), **kwargs)
