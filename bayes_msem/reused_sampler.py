"""NUTS compiled once per model shape and reused across data sets (Monte Carlo studies).

PyMC's numpyro path bakes the data into the compiled sampler as constants, so
every replication of a study compiles the sampler again: three quarters of a
small fit (benchmarks/README.md, "Monte Carlo studies"). Here the model's
log-density is traced to a jaxpr whose constants (the data, the data's
statistics, and the scalars the default priors and sampling units take from
the data) become *arguments* of the compiled program. Two data sets of one
design then give the same program with other arguments: the first fit in a
process compiles it, later fits call the compiled program kept in
``_COMPILED``.

The sampler is numpyro's own NUTS kernel (``numpyro.infer.hmc.hmc``) with the
settings ``numpyro.infer.NUTS`` uses by default, run warm-up then draws in
``lax.scan``; its output has the layout PyMC's ``_sample_numpyro_nuts`` returns,
so PyMC turns it into InferenceData as usual (:func:`lifted_numpyro_nuts` takes
that function's place, see :func:`bayes_msem.sampling.run_nuts`'s
``reuse_compiled``). Draws differ from PyMC's path (other random keys) but
follow the same target; a test checks both on one model.

What the key cannot see: a custom derivative rule (``jax.custom_jvp``) keeps
the function it was traced with, so one that closed over data would carry the
first data set's values into later fits. None of the library's densities
defines one; JAX's own (``log_ndtr`` in the probit models) close over nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import jax
import jax.extend.core as jex
import numpy as np

__all__ = ["LiftedDensity", "lift_density", "lifted_numpyro_nuts", "compiled_programs"]

# compiled samplers by program (structure, shapes, settings); the oldest goes when a study holds more designs
_COMPILED: OrderedDict = OrderedDict()
MAX_PROGRAMS = 8


class LiftedDensity:
    """A traced log-density whose constants are arguments: ``evaluate(consts, z)``.

    ``key`` names the program without the constants' values: equal for two
    data sets of one design (same shapes), different when the structure is."""

    def __init__(self, jaxpr, consts: list):
        self.jaxpr = jaxpr
        self.consts = consts
        shapes = tuple((np.shape(c), np.result_type(c).str) for c in consts)
        self.key = (str(jaxpr), shapes)

    def evaluate(self, consts: list, z: list):
        """The density at ``z`` (a list of arrays, one per value variable)."""
        return jex.jaxpr_as_fun(jex.ClosedJaxpr(self.jaxpr, []))(*consts, *z)[0]


def lift_density(function: Callable, example: list) -> LiftedDensity:
    """Trace ``function`` (a list of arrays -> scalar) at ``example`` and turn
    its constants into arguments: the arrays it closes over (jaxpr constants)
    and the floating-point scalars written into its top-level equations
    (where PyMC's graph puts the priors' data-scaled arguments). Scalars
    inside nested calls stay: they are the library's own constants."""
    closed = jax.make_jaxpr(lambda *z: function(list(z)))(*example)
    jaxpr = closed.jaxpr
    lifted_vars, lifted_values, eqns = [], [], []
    for eqn in jaxpr.eqns:
        if any(True for _ in jex.jaxprs_in_params(eqn.params)):  # a call (jit, custom derivative): its inputs keep their types
            eqns.append(eqn)
            continue
        invars = []
        for atom in eqn.invars:
            if isinstance(atom, jex.Literal) and np.issubdtype(atom.aval.dtype, np.floating):
                var = jex.Var(atom.aval)
                lifted_vars.append(var)
                lifted_values.append(np.asarray(atom.val, dtype=atom.aval.dtype))
                atom = var
            invars.append(atom)
        eqns.append(eqn.replace(invars=invars))
    # constants first among the inputs: the function of (constants..., values...) that gets compiled
    lifted = jaxpr.replace(constvars=[], invars=[*jaxpr.constvars, *lifted_vars, *jaxpr.invars], eqns=eqns,
                           debug_info=None)
    return LiftedDensity(lifted, [*closed.consts, *lifted_values])


def _one_chain(density: LiftedDensity, tune: int, draws: int, target_accept: float):
    """(key, start, consts) -> one chain's draws and statistics after ``tune`` warm-up steps."""
    from numpyro.infer.hmc import hmc

    def potential_from(consts):
        return lambda z: density.evaluate(consts, z)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_from, algo="NUTS")

    def run(key, start, consts, inverse_mass):
        key, _ = jax.random.split(key)  # as numpyro's MCMC: one key for the kernel, one for model init
        state = init_kernel(start, num_warmup=tune, target_accept_prob=target_accept, model_args=(consts,),
                            rng_key=key, inverse_mass_matrix=inverse_mass)

        def step(state, _):
            return sample_kernel(state, model_args=(consts,)), None

        def draw(state, _):
            state = sample_kernel(state, model_args=(consts,))
            return state, (state.z, state.diverging, state.num_steps, state.potential_energy, state.energy,
                           state.adapt_state.step_size, state.accept_prob)

        state, _ = jax.lax.scan(step, state, None, length=tune)
        return jax.lax.scan(draw, state, None, length=draws)[1]

    return run


def _all_chains(run: Callable, chains: int, devices: int):
    """(seed, starts, consts, inverse_mass) -> every chain, each with its key from
    ``split(PRNGKey(seed), chains)`` (as PyMC's numpyro path), computed inside
    the program: on one device one after another, else split evenly over
    ``devices`` (each running its share in turn). Every chain starts warm-up
    from the diagonal ``inverse_mass``."""
    def sequential(keys, starts, consts, inverse_mass):
        return jax.lax.map(lambda chain: run(chain[0], chain[1], consts, inverse_mass), (keys, starts))

    def keys_of(seed):
        return jax.random.split(jax.random.PRNGKey(seed), chains)

    if devices == 1:
        return jax.jit(lambda seed, starts, consts, inverse_mass: sequential(keys_of(seed), starts, consts,
                                                                             inverse_mass))

    def by_device(seed, starts, consts, inverse_mass):
        split = jax.tree.map(lambda x: x.reshape(devices, -1, *x.shape[1:]), (keys_of(seed), starts))
        out = jax.pmap(sequential, in_axes=(0, 0, None, None))(*split, consts, inverse_mass)
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)

    return by_device


def compiled_programs() -> int:
    """How many compiled samplers this process holds."""
    return len(_COMPILED)


def _devices(chain_method, chains: int) -> int:
    if chain_method == "parallel":
        return chains
    return getattr(chain_method, "devices", 1) if callable(chain_method) else 1


def lifted_numpyro_nuts(model, target_accept: float, tune: int, draws: int, chains: int, chain_method,
                        progressbar: bool, random_seed: int, initial_points, nuts_kwargs: dict,
                        logp_fn: Callable):
    """Stands in for ``pymc.sampling.jax._sample_numpyro_nuts`` (same arguments
    and returns): NUTS on ``logp_fn`` (the potential, minus the log density)
    with its constants as arguments, compiled once per program and process.
    ``nuts_kwargs`` may hold only ``inverse_mass_matrix`` (diagonal, the
    start of warm-up; an argument of the program, the identity where not
    given): otherwise numpyro's defaults. No progress bar."""
    import numpyro

    unknown = sorted(set(nuts_kwargs) - {"inverse_mass_matrix"})
    if unknown:
        raise ValueError(f"reuse_compiled takes numpyro's default NUTS settings, not {unknown}")
    starts = [np.asarray(x) for x in initial_points]
    if chains == 1:
        starts = [x[None] for x in starts]
    size = sum(int(np.prod(x.shape[1:])) for x in starts)
    inverse_mass = np.asarray(nuts_kwargs.get("inverse_mass_matrix", np.ones(size)), dtype=starts[0].dtype)
    density = lift_density(logp_fn, [x[0] for x in starts])
    devices = _devices(chain_method, chains)
    seed = np.int64(random_seed)
    key = (density.key, tune, draws, chains, devices, float(target_accept))
    program = _COMPILED.pop(key, None)
    if program is None:
        run = _all_chains(_one_chain(density, tune, draws, target_accept), chains, devices)
        program = run if devices > 1 else run.lower(seed, starts, density.consts, inverse_mass).compile()
    _COMPILED[key] = program
    while len(_COMPILED) > MAX_PROGRAMS:
        _COMPILED.popitem(last=False)
    z, diverging, steps, potential, energy, step_size, accept = program(seed, starts, density.consts, inverse_mass)
    steps = np.asarray(steps)
    stats = {"diverging": np.asarray(diverging), "n_steps": steps, "tree_depth": np.log2(steps).astype(int) + 1,
             "lp": np.asarray(potential), "energy": np.asarray(energy), "step_size": np.asarray(step_size),
             "acceptance_rate": np.asarray(accept)}
    return list(z), stats, numpyro
