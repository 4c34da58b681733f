"""Stage 6: NUTS through PyMC with the fastest backend that is installed.

``sampler="auto"`` uses numpyro (JAX) when it can be imported and PyMC's own
NUTS otherwise. numpyro runs chains in parallel (one XLA host device per core)
when there is a core per chain, and vectorized (vmap) otherwise.
Heavy modules are imported here, inside functions, so that importing
bayes_msem and its command line stay fast.
"""

from __future__ import annotations

import importlib.util
import os
import sys
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


def _enable_parallel_jax_chains() -> None:
    """Give JAX one CPU device per core so numpyro can run chains in parallel.
    Only possible before JAX is first imported. More devices than cores was
    seen to deadlock here (pmap on 4 devices, 2 cores), so never more."""
    if "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={os.cpu_count() or 1}".strip()


def run_nuts(model, *, draws: int, tune: int, chains: int, random_seed: int | None, sampler: str,
             target_accept: float, progressbar: bool, var_names: list[str]):
    """Run NUTS on ``model`` and return ArviZ InferenceData with ``var_names`` in the posterior."""
    import pymc as pm

    backend = choose_sampler(sampler)
    kwargs = dict(draws=draws, tune=tune, chains=chains, random_seed=random_seed, progressbar=progressbar,
                  target_accept=target_accept, model=model, var_names=var_names,
                  compute_convergence_checks=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*arviz.*migration.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        if backend == "numpyro":
            _enable_parallel_jax_chains()
            import jax

            # parallel needs a device (core) per chain; otherwise vmap the chains on one device
            method = "parallel" if jax.local_device_count() >= chains else "vectorized"
            return pm.sample(nuts_sampler="numpyro", nuts_sampler_kwargs={"chain_method": method}, **kwargs)
        if backend == "nutpie":
            return pm.sample(nuts_sampler="nutpie", **kwargs)
        return pm.sample(cores=min(chains, os.cpu_count() or 1), **kwargs)
