"""Cost and accuracy of one gradient of the two-level ordinal CFA (issue 15)
by the quadrature's nodes and Newton steps.

    python benchmarks/ordinal_cfa_gradient.py [clusters] [size]

Builds the latent engine's model of benchmarks/ordinal_data.py, takes a point
reached by 150 warm-up iterations of numpyro's NUTS, and prints for each rule
the log-density's and gradient's difference from a 31-node rule and the time of
one value-and-gradient inside a compiled loop (as the sampler calls it; a
single call from Python measures dispatch as well). Beware when timing JAX:
``MCMC.run`` returns before the draws are computed, so time it only after
``jax.block_until_ready`` on its samples.
"""

import sys
import time
import warnings

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS
from ordinal_data import ITEMS, ORDINAL_CFA, simulate_ordinal_cfa
from pymc.sampling.jax import get_jaxified_logp

import bayes_msem as bm
import bayes_msem.engines.ordinal as ordinal
from bayes_msem.engines import get_engine

RULES = [(31, 3), (9, 3), (7, 3), (5, 3), (9, 2), (5, 2)]  # (nodes, Newton steps); the library uses (9, 3)


def sampler_potential(model):
    """The latent engine's PyMC model, the sampler's potential (PyMC's, a list
    of arrays in value-variable order -> -log density) and the start values
    in that order."""
    pymc_model = get_engine(model.engine).build(model.spec, "numpyro")
    potential = get_jaxified_logp(pymc_model, negative_logp=False)
    initial = pymc_model.initial_point()
    return pymc_model, potential, [np.asarray(initial[v.name]) for v in pymc_model.value_vars]


def value_and_gradient(model):
    """The sampler's potential, its compiled value and gradient, and a start."""
    _, potential, start = sampler_potential(model)
    return potential, jax.jit(jax.value_and_grad(potential)), start


def ms_per_call(function, point, calls: int = 30) -> float:
    @jax.jit
    def loop(point):
        def body(i, total):  # move the point a little so that nothing is hoisted out of the loop
            return total + function(jax.tree.map(lambda x: x + 1e-9 * i, point))[0]
        return jax.lax.fori_loop(0, calls, body, 0.0)

    loop(point).block_until_ready()
    start = time.perf_counter()
    loop(point).block_until_ready()
    return (time.perf_counter() - start) / calls * 1000


def main(clusters: int = 60, size: int = 15) -> None:
    warnings.simplefilter("ignore")
    model = bm.Model(ORDINAL_CFA, simulate_ordinal_cfa(clusters, size), cluster="cluster", ordered=ITEMS)
    potential, _, start = value_and_gradient(model)
    mcmc = MCMC(NUTS(potential_fn=potential), num_warmup=150, num_samples=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(3), init_params=start)
    point = [values[-1] for values in mcmc.get_samples()]
    print(f"{clusters} clusters of {size}: | nodes | Newton steps | value error | largest gradient error | ms |")
    reference = None
    for nodes, steps in RULES:
        ordinal.QUADRATURE_NODES[1], ordinal.NEWTON_STEPS = nodes, steps
        _, function, _ = value_and_gradient(model)
        value, gradient = function(point)
        flat = np.concatenate([np.ravel(g) for g in gradient])
        reference = reference or (float(value), flat)
        print(f"| {nodes} | {steps} | {float(value) - reference[0]:+.1e} | {np.abs(flat - reference[1]).max():.1e} "
              f"(largest entry {np.abs(reference[1]).max():.0f}) | {ms_per_call(function, point):.2f} |", flush=True)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
