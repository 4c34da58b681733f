"""Stage 6, the sampler's start: an initial inverse mass matrix from the curvature.

numpyro's NUTS begins warm-up with the identity as its (diagonal) inverse mass
matrix and keeps it for the first 75 iterations. Where the posterior's scales
differ much from 1, as the items' thresholds and between SDs of a two-level
ordinal CFA do, those iterations take the longest trajectories of the whole
run: at 60 clusters of 15, two thirds of the warm-up's gradients
(benchmarks/README.md, "The start of warm-up").

:func:`curvature_inverse_mass` gives the sampler a better first guess: one over
the diagonal of the potential's Hessian, capped at 1 (the identity's scale).
It is taken at the start values with the cluster innovations drawn from their
N(0, 1) prior: at the start they are 0, and there the likelihood does not
depend on the between SDs, whose curvature would then be the prior's alone.
Warm-up then adapts the mass matrix from the draws as before.

The diagonal costs a few Hessian-vector products, not one per coordinate: the
units of an innovation block (value variables named ``*_innovations``, shaped
units x innovations) do not interact in the log density, so one product with a
whole column set to 1 reads that column's diagonal for every unit at once
(:func:`diagonal_probes`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["diagonal_probes", "hessian_vector_product", "hessian_diagonal", "curvature_inverse_mass"]

INNOVATIONS_SUFFIX = "_innovations"
LARGEST_INVERSE_MASS = 1.0  # the identity's: the curvature only ever shrinks a coordinate's scale


def diagonal_probes(blocks: list[tuple[str, tuple[int, ...]]]) -> tuple[np.ndarray, np.ndarray]:
    """Probe vectors whose Hessian-vector products hold the Hessian's diagonal.

    ``blocks`` are the value variables' names and shapes, in the order of the
    flattened vector. Returns ``probes`` (probes x coordinates) and ``reader``
    (coordinates,): coordinate i's diagonal entry is entry i of the product
    with probe ``reader[i]``. An innovation block (``*_innovations``, units x
    innovations) takes one probe per column, every other coordinate one of
    its own."""
    sizes = [int(np.prod(shape)) for _, shape in blocks]
    reader = np.empty(sum(sizes), dtype=int)
    columns: list[np.ndarray] = []  # the coordinates each probe sets to 1
    offset = 0
    for (name, shape), size in zip(blocks, sizes):
        coordinates = offset + np.arange(size)
        if name.endswith(INNOVATIONS_SUFFIX) and len(shape) == 2:
            groups = coordinates.reshape(shape).T  # one group per innovation column: every unit's entry
        else:
            groups = coordinates[:, None]
        for group in groups:
            reader[group] = len(columns)
            columns.append(group)
        offset += size
    probes = np.zeros((len(columns), reader.size))
    for row, group in enumerate(columns):
        probes[row, group] = 1.0
    return probes, reader


def hessian_vector_product(potential, values: list[np.ndarray]):
    """The compiled function v -> H v, H the Hessian of ``potential`` (a function
    of a list of arrays) at ``values``, v and H v flattened in the list's order."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree([jnp.asarray(v) for v in values])
    gradient = jax.grad(lambda x: potential(unravel(x)))
    return jax.jit(lambda v: jax.jvp(gradient, (flat,), (v,))[1])


def hessian_diagonal(product, blocks: list[tuple[str, tuple[int, ...]]]) -> np.ndarray:
    """The Hessian's diagonal from its products with the probes of
    :func:`diagonal_probes` (``product`` from :func:`hessian_vector_product`)."""
    probes, reader = diagonal_probes(blocks)
    products = np.stack([np.asarray(product(probe)) for probe in probes])
    return products[reader, np.arange(reader.size)]


def curvature_inverse_mass(model, start: dict, random_seed: int | None) -> np.ndarray:
    """The initial inverse mass matrix (diagonal, flattened in the order of
    ``model.value_vars``) for a PyMC ``model`` started at ``start`` (values by
    random variable, as PyMC's ``initvals``): one over the potential's Hessian
    diagonal, at most 1, with the innovations drawn from N(0, 1); 1 where the
    curvature is not positive."""
    from pymc.initial_point import make_initial_point_fn
    from pymc.sampling.jax import get_jaxified_logp

    point = make_initial_point_fn(model=model, overrides=start, jitter_rvs=set(), return_transformed=True)(0)
    rng = np.random.default_rng(random_seed)
    blocks, values = [], []
    for var in model.value_vars:
        value = np.asarray(point[var.name], dtype=float)
        if var.name.endswith(INNOVATIONS_SUFFIX):
            value = rng.normal(size=value.shape)
        blocks.append((var.name, value.shape))
        values.append(value)
    potential = get_jaxified_logp(model, negative_logp=False)  # PyMC's naming: False gives minus the log density
    diagonal = hessian_diagonal(hessian_vector_product(potential, values), blocks)
    positive = diagonal > 0
    return np.where(positive, np.minimum(1 / np.where(positive, diagonal, 1.0), LARGEST_INVERSE_MASS), 1.0)
