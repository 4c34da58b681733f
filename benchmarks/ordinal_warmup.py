"""Warm-up cost of the two-level ordinal CFA by initial inverse mass matrix (issue 15).

    python benchmarks/ordinal_warmup.py CLUSTERS SIZE WARMUP DRAWS START [SEED]

START is one of
    identity        numpyro's default (what the library uses today)
    oracle          the posterior variances saved by an earlier ``identity`` run of the same data
    hessian         1 / the diagonal of the potential's Hessian at the start values, capped at 1
    hessian_drawn   the same with the cluster innovations drawn from N(0, 1): at the start
                    they are 0, and the likelihood then does not depend on the between SDs
                    (the library's start since session 25, bayes_msem.mass_matrix; its
                    innovations are drawn with another seed)

Runs numpyro's NUTS (one chain) on the latent engine's potential from the
model's start values and prints the warm-up's gradients per 50 iterations, the
smallest bulk ESS of the global parameters and the times. Set BUFFER=25,25 in
the environment to shorten numpyro's first adaptation buffer and window
(numpyro has no option for it: its schedule function is replaced). Results:
benchmarks/README.md, "The start of warm-up" (session 24).
"""

import json
import os
import sys
import time
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.infer.hmc_util as hmc_util
from jax.flatten_util import ravel_pytree
from numpyro.infer import MCMC, NUTS
from ordinal_cfa_gradient import sampler_potential
from ordinal_data import ITEMS, ORDINAL_CFA, simulate_ordinal_cfa

import bayes_msem as bm
from bayes_msem.mass_matrix import hessian_diagonal, hessian_vector_product


def shortened_schedule(first: int, window: int):
    """numpyro's adaptation schedule with a first buffer of ``first`` and a first window of ``window`` iterations."""
    def schedule(num_steps):
        windows, end_start, size, start = [hmc_util.AdaptWindow(0, first - 1)], num_steps - 50, window, first
        while start < end_start:
            current = size if 3 * size <= end_start - start else end_start - start
            size = 2 * size if current == size else size
            windows.append(hmc_util.AdaptWindow(start, start + current - 1))
            start += current
        return windows + [hmc_util.AdaptWindow(end_start, num_steps - 1)]
    return schedule


def main(clusters: int, size: int, warmup: int, draws: int, start: str, seed: int = 3) -> None:
    warnings.simplefilter("ignore")
    jax.config.update("jax_enable_x64", True)
    if os.environ.get("BUFFER"):
        hmc_util.build_adaptation_schedule = shortened_schedule(*map(int, os.environ["BUFFER"].split(",")))
    model = bm.Model(ORDINAL_CFA, simulate_ordinal_cfa(clusters, size, seed=seed), cluster="cluster", ordered=ITEMS)
    pymc_model, potential, start_values = sampler_potential(model)
    names = [v.name for v in pymc_model.value_vars]
    init = [jnp.asarray(value) for value in start_values]
    saved = f"warmup_variances_{clusters}_{size}_{seed}.npy"
    options = {}
    if start == "oracle":
        options["inverse_mass_matrix"] = jnp.asarray(np.load(saved))
    elif start in ("hessian", "hessian_drawn"):
        at = list(init)
        if start == "hessian_drawn":
            k = names.index("cluster_innovations")
            at[k] = jnp.asarray(np.random.default_rng(0).normal(size=init[k].shape))
        blocks = [(name, np.shape(value)) for name, value in zip(names, at)]
        diagonal = hessian_diagonal(hessian_vector_product(potential, at), blocks)
        options["inverse_mass_matrix"] = jnp.asarray(np.where(diagonal > 0, np.minimum(1 / diagonal, 1.0), 1.0))
    mcmc = MCMC(NUTS(potential_fn=potential, target_accept_prob=0.8, **options), num_warmup=warmup,
                num_samples=draws, num_chains=1, progress_bar=False)
    began = time.perf_counter()
    mcmc.warmup(jax.random.PRNGKey(1), init_params=init, extra_fields=("num_steps",), collect_warmup=True)
    steps = np.asarray(mcmc.get_extra_fields()["num_steps"])  # blocks until warm-up has run
    warm_seconds = time.perf_counter() - began
    mcmc.run(jax.random.PRNGKey(2), init_params=None, extra_fields=("num_steps",))
    samples = jax.block_until_ready(mcmc.get_samples())  # MCMC.run returns before the draws are computed
    seconds = time.perf_counter() - began
    draws_flat = np.asarray(jax.vmap(lambda z: ravel_pytree(z)[0])(samples))
    if start == "identity":
        np.save(saved, draws_flat.var(axis=0))
    ess = {names[i]: min(float(az.ess(np.asarray(samples[i]).reshape(draws, -1)[None, :, j]))
                         for j in range(int(np.prod(init[i].shape)) or 1))
           for i in range(len(names)) if "cluster" not in names[i]}
    print("warm-up gradients per 50 iterations:", [int(x) for x in steps.reshape(-1, 50).sum(axis=1)]
          if warmup % 50 == 0 else int(steps.sum()))
    print("worst:", sorted(ess.items(), key=lambda item: item[1])[:4])
    print(json.dumps({"start": start, "buffer": os.environ.get("BUFFER"), "seed": seed,
                      "warmup_gradients": int(steps.sum()),
                      "sampling_gradients": int(mcmc.get_extra_fields()["num_steps"].sum()),
                      "warmup_s": round(warm_seconds, 1), "total_s": round(seconds, 1),
                      "min_ess": round(min(ess.values()), 1)}))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:5]), sys.argv[5], *map(int, sys.argv[6:7]))
