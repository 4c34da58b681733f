"""Free parameters as PyMC random variables, and the vector ``theta`` of their
values on the parameter table's scale (variances, covariances), which every
engine feeds to :func:`bayes_msem.matrices.level_moments`.

Variances are sampled as standard deviations (or as variances where the prior
says ``[var]``); covariances as correlations, one matrix per block of
variables joined by free covariances (LKJ where every pair covaries, a
patterned matrix with exact zeros for a partial pattern), so every covariance
matrix is positive definite by construction.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.logprob.transforms import Transform

from bayes_msem.partable import parameter_key
from bayes_msem.priors import PATTERN_T_DF, PATTERN_T_SCALE, PriorSpec, constrained_correlation, patterned_correlation
from bayes_msem.spec import ModelSpec

__all__ = ["free_parameter_vector", "parameter_names", "Standardized", "sampling_transform"]


def parameter_names(spec: ModelSpec) -> list[str]:
    """lavaan-style name of each free parameter, with the level where needed:
    ``fw=~y2``, ``y1~~y1|between``."""
    return [parameter_key(row.lhs, row.op, row.rhs, spec.table.level_name(row.level))
            for row in spec.table.free_rows().itertuples()]


def _in_support(prior: PriorSpec, value: float) -> bool:
    if prior.family == "uniform":
        return prior.args[0] < value < prior.args[1]
    return value > 0 if prior.support == "positive" else np.isfinite(value)


class Standardized(Transform):
    """``value = (x - center) / scale``, applied after the distribution's own
    transform (the log, for positive parameters): NUTS moves every parameter
    in the units the data give it (:func:`~bayes_msem.spec.build_spec`'s
    ``units``: a slope in sd(y) / sd(x), an intercept in sd(y) around the
    mean, a standard deviation on the log scale relative to sd(y)).

    Rescaling a variable then leaves the sampler's target unchanged but for a
    constant (with the default priors, which scale with the data), so the mass
    matrix has nothing to adapt to. Sampled on the data's own scale, Demo.twolevel
    with an indicator times 1e6 reached R-hat 3.08 with 2 effective draws
    (issue 17). The random variable stays the parameter with its prior; only
    the coordinates NUTS moves in change, with their Jacobian."""

    name = "standardized"
    ndim_supp = 0

    def __init__(self, center: float, scale: float):
        self.center, self.scale = float(center), float(scale)

    def forward(self, value, *inputs):
        return (pt.as_tensor_variable(value) - self.center) / self.scale

    def backward(self, value, *inputs):
        return self.center + self.scale * pt.as_tensor_variable(value)

    def log_jac_det(self, value, *inputs):
        return pt.zeros_like(value) + np.log(self.scale)


def sampling_transform(prior: PriorSpec, center: float, unit: float, power: int = 1) -> Standardized | None:
    """The :class:`Standardized` coordinates of a parameter with this prior,
    measured in ``unit`` around ``center`` (``power`` 2 for a variance sampled
    as a variance). For a positive prior, after its log transform: the log
    relative to the unit. None for ``uniform``, whose interval transform has
    no units already."""
    if prior.family == "uniform":
        return None
    if prior.support == "positive":
        return Standardized(power * np.log(unit), 1.0)
    return Standardized(center, unit**power)


def _distribution(name: str, prior: PriorSpec, start: float, transform: Standardized | None = None):
    a = prior.args
    options = {"initval": float(start)} if _in_support(prior, start) else {}
    if transform is not None:
        options["transform"] = transform
    make = {
        "normal": lambda: pm.Normal(name, mu=a[0], sigma=a[1], **options),
        "student_t": lambda: pm.StudentT(name, nu=a[0], mu=a[1], sigma=a[2], **options),
        "cauchy": lambda: pm.Cauchy(name, alpha=a[0], beta=a[1], **options),
        "uniform": lambda: pm.Uniform(name, lower=a[0], upper=a[1], **options),
        "gamma": lambda: pm.Gamma(name, alpha=a[0], beta=a[1], **options),
        "exponential": lambda: pm.Exponential(name, lam=a[0], **options),
        "half_normal": lambda: pm.HalfNormal(name, sigma=a[0], **options),
        "half_cauchy": lambda: pm.HalfCauchy(name, beta=a[0], **options),
        "half_student_t": lambda: pm.HalfStudentT(name, nu=a[0], sigma=a[1], **options),
        "lognormal": lambda: pm.LogNormal(name, mu=a[0], sigma=a[1], **options),
        "inverse_gamma": lambda: pm.InverseGamma(name, alpha=a[0], beta=a[1], **options),
    }
    return make[prior.family]()


def free_parameter_vector(spec: ModelSpec) -> pt.TensorVariable:
    """Create one random variable per free parameter (inside a ``pm.Model``
    context) and return the vector of their values on the table's scale."""
    names = parameter_names(spec)
    kinds = spec.kinds
    values: list = [None] * len(names)
    ordered_vectors = _threshold_vectors(spec, values)
    for k, (name, kind, prior, start, (center, unit)) in enumerate(zip(names, kinds, spec.priors, spec.starts,
                                                                          spec.units)):
        if kind == "covariance" or values[k] is not None:
            continue
        if prior.on_sd(kind):
            rv = _distribution(f"sd[{name}]", prior, np.sqrt(max(start, 0.0)), sampling_transform(prior, 0.0, unit))
            values[k] = rv**2
        elif kind == "variance":
            values[k] = _distribution(f"var[{name}]", prior, start, sampling_transform(prior, 0.0, unit, power=2))
        else:
            values[k] = _distribution(name, prior, start, sampling_transform(prior, center, unit))
    for b, block in enumerate(spec.covariance_blocks):
        structure = spec.structure(block.level)
        variances = pt.diag(structure.S.fill(_partial_vector(values, structure)))
        n = len(block.nodes)
        name = f"corr[block{b}|{spec.table.level_name(block.level) or 'single'}]"
        sds = [pt.sqrt(variances[node]) for node in block.nodes]
        if block.constrained:
            corr = constrained_correlation_rv(name, block, sds, values)
        elif block.pattern is None:
            corr = lkj_correlation(name, n, block.eta)
        else:
            corr = patterned_correlation_rv(name, n, block.pattern, block.eta)
        for (i, j), free in block.free_index.items():
            if (i, j) not in block.followers:
                values[free - 1] = corr[i, j] * sds[i] * sds[j]
    _require_increasing_thresholds(spec, values, ordered_vectors)
    return pt.stack([pt.as_tensor_variable(v, dtype="float64") for v in values])


def _threshold_vectors(spec: ModelSpec, values: list) -> set[str]:
    """Sample each ordinal variable's thresholds as one increasing vector
    (PyMC's ordered transform) where all are free and its own; fill ``values``.
    Returns the variables so sampled; the others (a threshold fixed, or shared
    with another variable through a label) are sampled one by one and kept
    increasing by :func:`_require_increasing_thresholds`."""
    vectors = spec.table.ordered_threshold_vectors()
    for variable, free in vectors.items():
        priors = [spec.priors[f - 1] for f in free]
        starts = np.sort([spec.starts[f - 1] for f in free])
        starts = starts + 1e-3 * np.arange(len(starts))  # strictly increasing
        vector = pm.Normal(f"thresholds[{variable}]", mu=np.array([p.args[0] for p in priors]),
                           sigma=np.array([p.args[1] for p in priors]), shape=(len(free),),
                           transform=pm.distributions.transforms.ordered, initval=starts)
        for k, f in enumerate(free):
            values[f - 1] = vector[k]
    return set(vectors)


def _require_increasing_thresholds(spec: ModelSpec, values: list, ordered_vectors: set[str]) -> None:
    """Zero prior density where the thresholds of a variable not sampled as an
    ordered vector fail to increase."""
    for variable, thresholds in spec.table.thresholds().items():
        if variable in ordered_vectors or len(thresholds) < 2:
            continue
        cuts = pt.stack([values[f - 1] if f else pt.as_tensor_variable(np.float64(v)) for f, v in thresholds])
        pm.Potential(f"thresholds[{variable}]_increasing", pt.switch(pt.all(pt.diff(cuts) > 0), 0.0, -np.inf))


def lkj_cholesky(z, n: int):
    """Cholesky factor of a correlation matrix from ``n(n-1)/2`` unconstrained
    values, through canonical partial correlations tanh(z) (Lewandowski et al.
    2009; Stan's ``cholesky_factor_corr``), and the log-Jacobian of the map
    from ``z`` to the matrix's off-diagonal entries. Every ``z`` gives a
    positive definite matrix, so the sampler never meets a boundary (PyMC's
    LKJCorr bounds each correlation to (-1, 1) and rejects non-positive-definite
    matrices, which made NUTS diverge on blocks of 5 weakly identified ones)."""
    cpc = pt.tanh(z)
    log_jacobian = pt.sum(pt.log1p(-cpc**2))
    rows = [[pt.as_tensor_variable(np.float64(1.0))] + [pt.as_tensor_variable(np.float64(0.0))] * (n - 1)]
    log_diag = []
    k = 0
    for i in range(1, n):
        remaining = pt.as_tensor_variable(np.float64(1.0))
        row = []
        for _ in range(i):
            entry = cpc[k] * pt.sqrt(remaining)
            log_jacobian += 0.5 * pt.log(remaining)
            row.append(entry)
            remaining = remaining - entry**2
            k += 1
        row.append(pt.sqrt(remaining))
        log_diag.append(0.5 * pt.log(remaining))
        rows.append(row + [pt.as_tensor_variable(np.float64(0.0))] * (n - i - 1))
    # from L to C = L L' (lower-triangular entries): sum_i (n - i - 1) log L_ii
    log_jacobian += sum((n - i - 1) * d for i, d in zip(range(1, n), log_diag))
    L = pt.stack([pt.stack(r) for r in rows])
    return L, log_jacobian, sum(log_diag)


def lkj_correlation(name: str, n: int, eta: float) -> pt.TensorVariable:
    """An n x n correlation matrix with an LKJ(eta) prior, density
    proportional to det(C)^(eta - 1), sampled on an unconstrained scale."""
    z = pm.Flat(name, shape=(n * (n - 1) // 2,))
    L, log_jacobian, half_log_det = lkj_cholesky(z, n)
    pm.Potential(f"{name}_prior", (eta - 1.0) * 2.0 * half_log_det + log_jacobian)
    return L @ L.T


def patterned_correlation_rv(name: str, n: int, pattern, eta: float) -> pt.TensorVariable:
    """An n x n correlation matrix that is zero outside ``pattern`` (see
    :func:`bayes_msem.priors.patterned_correlation`): its free factor entries
    are t(2, 0, 1/sqrt(2)), times det(R)^(eta - 1) where eta is not 1."""
    x = pm.StudentT(f"{name}_factor", nu=PATTERN_T_DF, mu=0.0, sigma=PATTERN_T_SCALE, shape=(len(pattern),))
    corr, log_det = patterned_correlation(x, n, list(pattern), xp=pt)
    if eta != 1.0:
        pm.Potential(f"{name}_prior", (eta - 1.0) * log_det)
    return corr


def constrained_correlation_rv(name: str, block, sds: list, values: list) -> pt.TensorVariable:
    """The correlation matrix of a block with given covariances (see
    :func:`bayes_msem.priors.constrained_correlation`): its free partial
    correlations tanh(z) are uniform on (-1, 1), and draws where a given
    covariance does not fit into a positive definite matrix are rejected."""
    owners = block.owners()
    z = pm.Flat(f"{name}_cpc", shape=(len(owners),))
    cpc = pt.tanh(z)
    pm.Potential(f"{name}_prior", pt.sum(pt.log1p(-cpc**2)))  # uniform on cpc: the Jacobian of tanh
    corr, margins, _ = constrained_correlation(cpc, len(block.nodes), owners, block.targets(lambda f: values[f - 1]),
                                               sds, xp=pt)
    if margins:
        pm.Potential(f"{name}_positive_definite", pt.switch(pt.all(pt.stack(margins) > 0), 0.0, -np.inf))
    return corr


def _partial_vector(values: list, structure) -> pt.TensorVariable:
    """``theta`` with the not-yet-known covariances set to 0: enough to read the
    variances of a level from its S template."""
    return pt.stack([pt.as_tensor_variable(np.float64(0.0)) if v is None else pt.as_tensor_variable(v, dtype="float64")
                     for v in values])
