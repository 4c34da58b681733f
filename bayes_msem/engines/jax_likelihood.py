"""A log-likelihood written in JAX, carried through a PyMC model as one PyTensor Op.

PyMC's JAX samplers (numpyro) translate the whole PyTensor graph of a model into
JAX. For the collapsed engine's likelihood that translation ran 2.3x slower than
the same function (:func:`~bayes_msem.engines.collapsed_slopes.cluster_marginal_logp`)
traced by JAX directly: value and gradient 6.6 ms against 2.9 ms for the
random-slope mediation at 5000 clusters. :class:`JaxLogLikelihood` holds the JAX
function; the translation hands it to JAX unchanged (``jax_funcify``), and the
other PyTensor backends evaluate it and its gradient by calling JAX (``perform``),
so a model built with it still works everywhere, only slower there.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.jax.dispatch import jax_funcify

__all__ = ["JaxLogLikelihood"]


class JaxLogLikelihood(Op):
    """``theta`` (a float64 vector) -> the scalar ``function(theta)``, where
    ``function`` is traceable by JAX. Two instances are never merged: equality
    is identity, as each carries its own data."""

    def __init__(self, function: Callable):
        self.function = function
        self._value = jax.jit(function)
        self.gradient = _JaxGradient(function)

    def make_node(self, theta) -> Apply:
        theta = pt.as_tensor_variable(theta)
        return Apply(self, [theta], [pt.dscalar()])

    def perform(self, node, inputs, outputs) -> None:
        outputs[0][0] = np.asarray(self._value(inputs[0]), dtype="float64")

    def grad(self, inputs, output_gradients):
        return [output_gradients[0] * self.gradient(inputs[0])]


class _JaxGradient(Op):
    """The gradient of a :class:`JaxLogLikelihood`, for PyTensor's own samplers."""

    def __init__(self, function: Callable):
        self.function = jax.grad(function)
        self._value = jax.jit(self.function)

    def make_node(self, theta) -> Apply:
        theta = pt.as_tensor_variable(theta)
        return Apply(self, [theta], [theta.type()])

    def perform(self, node, inputs, outputs) -> None:
        outputs[0][0] = np.asarray(self._value(inputs[0]), dtype="float64")


@jax_funcify.register(JaxLogLikelihood)
@jax_funcify.register(_JaxGradient)
def _as_jax(op, **kwargs):
    return op.function
