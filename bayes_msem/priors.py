"""Prior specifications: parsing the strings written in ``prior("...")`` and
choosing weakly informative defaults on the data's scale (as blavaan's
``dpriors()`` does per matrix type).

A prior is a small frozen object, :class:`PriorSpec`, that the engine turns into
a PyMC distribution. Variances and covariances are sampled as standard
deviations and correlations: a prior on a variance row applies to its standard
deviation unless the string ends in ``[var]``.

Example
-------
>>> parse_prior("normal(0, 2.5)")
PriorSpec(family='normal', args=(0.0, 2.5), scale='')
>>> parse_prior("gamma(2, 1)[var]").scale
'var'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["PriorSpec", "parse_prior", "DefaultPriors", "PRIOR_FAMILIES", "lkj_logpdf", "lkj_draw",
           "patterned_correlation", "patterned_logpdf", "patterned_draw", "constrained_correlation"]

# family -> (number of arguments, support) ; support "real", "positive", "unit", "corr"
PRIOR_FAMILIES: dict[str, tuple[int, str]] = {
    "normal": (2, "real"),
    "student_t": (3, "real"),
    "cauchy": (2, "real"),
    "uniform": (2, "real"),
    "gamma": (2, "positive"),
    "exponential": (1, "positive"),
    "half_normal": (1, "positive"),
    "half_cauchy": (1, "positive"),
    "half_student_t": (2, "positive"),
    "lognormal": (2, "positive"),
    "inverse_gamma": (2, "positive"),
    "lkj": (1, "corr"),
}
_PRIOR_RE = re.compile(r"^\s*([a-z_]+)\s*\(([^()]*)\)\s*(?:\[\s*(sd|var)\s*\])?\s*$")


@dataclass(frozen=True)
class PriorSpec:
    """A prior family with numeric arguments; ``scale`` is ``"sd"``, ``"var"``
    or empty (for parameters that are not variances)."""

    family: str
    args: tuple[float, ...]
    scale: str = ""

    def __str__(self) -> str:
        args = ", ".join(f"{a:.4g}" for a in self.args)
        suffix = f"[{self.scale}]" if self.scale else ""
        return f"{self.family}({args}){suffix}"

    @property
    def support(self) -> str:
        return PRIOR_FAMILIES[self.family][1]

    def on_sd(self, kind: str) -> bool:
        """Whether this prior, on a parameter of type ``kind``, is placed on a
        standard deviation (a variance's prior is, unless written ``[var]``)."""
        return kind == "variance" and self.scale != "var"

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at ``x`` (the same parameterization as the PyMC
        distribution the engines build; not for ``lkj``, see :func:`lkj_logpdf`)."""
        from scipy import stats  # lazily: keeps `import bayes_msem` light

        x = np.asarray(x, dtype=float)
        if self.family == "half_student_t":  # a Student t folded at zero
            nu, sigma = self.args
            return np.where(x >= 0, np.log(2.0) + stats.t(nu, scale=sigma).logpdf(x), -np.inf)
        return _scipy_distribution(self).logpdf(x)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` independent draws (not for ``lkj``, see :func:`lkj_draw`)."""
        from scipy import stats

        if self.family == "half_student_t":
            nu, sigma = self.args
            return np.abs(stats.t(nu, scale=sigma).rvs(size=size, random_state=rng))
        return _scipy_distribution(self).rvs(size=size, random_state=rng)


def _scipy_distribution(prior: PriorSpec):
    from scipy import stats

    a = prior.args
    make = {
        "normal": lambda: stats.norm(a[0], a[1]),
        "student_t": lambda: stats.t(a[0], loc=a[1], scale=a[2]),
        "cauchy": lambda: stats.cauchy(a[0], a[1]),
        "uniform": lambda: stats.uniform(a[0], a[1] - a[0]),
        "gamma": lambda: stats.gamma(a[0], scale=1.0 / a[1]),  # shape, rate
        "exponential": lambda: stats.expon(scale=1.0 / a[0]),  # rate
        "half_normal": lambda: stats.halfnorm(scale=a[0]),
        "half_cauchy": lambda: stats.halfcauchy(scale=a[0]),
        "lognormal": lambda: stats.lognorm(a[1], scale=np.exp(a[0])),
        "inverse_gamma": lambda: stats.invgamma(a[0], scale=a[1]),
    }
    if prior.family not in make:
        raise ValueError(f"{prior.family} is a prior on correlation matrices; use lkj_logpdf / lkj_draw")
    return make[prior.family]()


def lkj_logpdf(corr: np.ndarray, eta: float) -> np.ndarray:
    """Unnormalized LKJ(eta) log density, (eta - 1) log det C, of correlation
    matrices (..., n, n)."""
    return (eta - 1.0) * np.linalg.slogdet(corr)[1]


def lkj_draw(rng: np.random.Generator, n: int, eta: float, size: int) -> np.ndarray:
    """``size`` n x n correlation matrices from LKJ(eta), through independent
    canonical partial correlations (the vine method of Lewandowski et al. 2009):
    the one between variables i and j > i given the first i variables is
    Beta(b, b) on (-1, 1) with b = eta + (n - 2 - i) / 2."""
    L = np.zeros((size, n, n))
    L[:, 0, 0] = 1.0
    for row in range(1, n):
        remaining = np.ones(size)
        for col in range(row):
            b = eta + (n - 2 - col) / 2.0
            cpc = 2.0 * rng.beta(b, b, size=size) - 1.0
            L[:, row, col] = cpc * np.sqrt(remaining)
            remaining = remaining - L[:, row, col] ** 2
        L[:, row, row] = np.sqrt(remaining)
    return L @ np.swapaxes(L, 1, 2)


# A patterned block's free factor entries are t(2, 0, 1/sqrt(2)): a lone correlation r = x / sqrt(1 + x^2)
# is then uniform on (-1, 1), as under LKJ(1).
PATTERN_T_DF, PATTERN_T_SCALE = 2.0, 1.0 / math.sqrt(2.0)


def patterned_correlation(x, n: int, free: list[tuple[int, int]], xp=np):
    """A correlation matrix with zeros outside ``free``, from unconstrained values.

    ``free`` lists the pairs (i, j), i > j, whose correlation is free, in
    row-major order; ``x`` (..., len(free)) are their values in a unit
    lower-triangular factor B. Every other entry of B is set so that
    (B B')_ij = 0, which needs only earlier entries:
    B_ij = -sum_{k<j} B_ik B_jk. Then R = D^-1/2 B B' D^-1/2 with D = diag(B B')
    has exactly the required zeros and is positive definite for every ``x``,
    and every such R comes from one ``x`` (B is its Cholesky factor with rows
    scaled to a unit diagonal): a bijection, so no boundary for the sampler.
    Returns R and log det R = -sum_i log D_ii (det B B' = 1).
    ``xp`` is NumPy or PyTensor's tensor module.
    """
    position = {pair: k for k, pair in enumerate(free)}
    one, zero = xp.ones_like(x[..., 0]), xp.zeros_like(x[..., 0])
    B = [[one if i == j else zero for j in range(n)] for i in range(n)]
    for i in range(n):
        for j in range(i):
            if (i, j) in position:
                B[i][j] = x[..., position[(i, j)]]
            elif j > 0:
                B[i][j] = -sum(B[i][k] * B[j][k] for k in range(j))
    gram = [[sum(B[i][k] * B[j][k] for k in range(min(i, j) + 1)) for j in range(n)] for i in range(n)]
    scale = [1.0 / xp.sqrt(gram[i][i]) for i in range(n)]
    R = xp.stack([xp.stack([gram[i][j] * scale[i] * scale[j] for j in range(n)], axis=-1) for i in range(n)], axis=-2)
    log_det = -sum(xp.log(gram[i][i]) for i in range(n))
    return R, log_det


def patterned_factor_values(corr: np.ndarray, free: list[tuple[int, int]]) -> np.ndarray:
    """The inverse of :func:`patterned_correlation`: the free factor entries of
    correlation matrices (..., n, n)."""
    chol = np.linalg.cholesky(corr)
    unit = chol / np.diagonal(chol, axis1=-2, axis2=-1)[..., :, None]
    return np.stack([unit[..., i, j] for i, j in free], axis=-1)


def patterned_logpdf(corr: np.ndarray, free: list[tuple[int, int]], eta: float) -> np.ndarray:
    """Log prior of patterned correlation matrices on the scale it is placed on:
    independent t(2, 0, 1/sqrt(2)) factor entries, times det(R)^(eta - 1)."""
    from scipy import stats

    x = patterned_factor_values(corr, free)
    t = stats.t(PATTERN_T_DF, scale=PATTERN_T_SCALE).logpdf(x).sum(axis=-1)
    return t + (eta - 1.0) * np.linalg.slogdet(corr)[1]


def patterned_draw(rng: np.random.Generator, n: int, free: list[tuple[int, int]], eta: float,
                   size: int) -> np.ndarray:
    """``size`` draws from the patterned prior; for eta > 1 by rejection, as
    det(R)^(eta - 1) <= 1."""
    kept: list[np.ndarray] = []
    while sum(len(k) for k in kept) < size:
        x = PATTERN_T_SCALE * rng.standard_t(PATTERN_T_DF, size=(size, len(free)))
        corr, log_det = patterned_correlation(x, n, free)
        accept = np.log(rng.uniform(size=size)) < (eta - 1.0) * log_det
        kept.append(corr[accept])
    return np.concatenate(kept)[:size]


def constrained_correlation(cpc, n: int, owners: list[tuple[int, int]], targets: dict, sd: list, xp=np):
    """A correlation matrix with some covariances given: fixed at a value or
    equal to another covariance (lavaan's ``y1 ~~ 0.3*y2``, ``y1 ~~ c*y2``).

    Built row by row through canonical partial correlations (Lewandowski et
    al. 2009): a free pair ``(i, j)``, i > j, in ``owners`` (row-major) takes
    the next value of ``cpc`` (..., len(owners)) in (-1, 1); a pair in
    ``targets`` gets the Cholesky entry that makes its covariance equal to
    ``targets[(i, j)](covariances so far)``, a function of the covariances
    built so far (by free index) that returns the target covariance; any
    other pair is 0. ``sd`` are the block's standard deviations.

    Returns R, the feasibility margins (one per target: positive where the
    target fits into a positive definite matrix, as a covariance must also
    satisfy |cov| < sd_i sd_j and more), and the owners' covariances in order.
    """
    position = {pair: k for k, pair in enumerate(owners)}
    zero = xp.zeros_like(sd[0])
    C = [[zero] * n for _ in range(n)]
    C[0][0] = zero + 1.0
    margins, covariances = [], []
    for i in range(1, n):
        remaining = zero + 1.0
        for j in range(i):
            earlier = sum((C[i][k] * C[j][k] for k in range(j)), zero)
            if (i, j) in position:
                C[i][j] = cpc[..., position[(i, j)]] * xp.sqrt(xp.maximum(remaining, 1e-12))
                covariances.append((earlier + C[i][j] * C[j][j]) * sd[i] * sd[j])
            elif (i, j) in targets:
                C[i][j] = (targets[(i, j)](covariances) / (sd[i] * sd[j]) - earlier) / C[j][j]
                margins.append(remaining - C[i][j] ** 2)
            else:
                C[i][j] = -earlier / C[j][j]
                margins.append(remaining - C[i][j] ** 2)
            remaining = remaining - C[i][j] ** 2
        C[i][i] = xp.sqrt(xp.maximum(remaining, 1e-12))
    rows = [xp.stack(row, axis=-1) for row in C]
    L = xp.stack(rows, axis=-2)
    return L @ xp.swapaxes(L, -1, -2), margins, covariances


def parse_prior(text: str) -> PriorSpec:
    """Parse ``family(arg, ...)[sd|var]``; raise ValueError with the valid families."""
    match = _PRIOR_RE.match(text)
    families = ", ".join(PRIOR_FAMILIES)
    if match is None:
        raise ValueError(f"cannot read the prior {text!r}; write it as family(arguments), e.g. normal(0, 1)")
    family, arg_text, scale = match.group(1), match.group(2), match.group(3) or ""
    if family not in PRIOR_FAMILIES:
        raise ValueError(f"unknown prior family {family!r}; use one of: {families}")
    try:
        args = tuple(float(a) for a in arg_text.split(",")) if arg_text.strip() else ()
    except ValueError as err:
        raise ValueError(f"prior arguments must be numbers in {text!r}") from err
    n_args = PRIOR_FAMILIES[family][0]
    if len(args) != n_args:
        raise ValueError(f"{family}() takes {n_args} argument(s), got {len(args)} in {text!r}")
    if family == "uniform" and not args[0] < args[1]:
        raise ValueError(f"uniform(lower, upper) needs lower < upper in {text!r}")
    scale_args = {"normal": [1], "student_t": [0, 2], "cauchy": [1], "gamma": [0, 1], "exponential": [0],
                  "half_normal": [0], "half_cauchy": [0], "half_student_t": [0, 1], "lognormal": [1],
                  "inverse_gamma": [0, 1], "lkj": [0], "uniform": []}[family]
    if any(not (args[i] > 0 and math.isfinite(args[i])) for i in scale_args):
        raise ValueError(f"scale and shape arguments must be positive in {text!r}")
    return PriorSpec(family, args, scale)


@dataclass(frozen=True)
class DefaultPriors:
    """Default priors by parameter type, on the data's scale.

    Each multiplier is applied to the scale of the variables involved: the
    sample standard deviation of an observed variable, or of the marker
    indicator for a latent variable. With ``s_y`` and ``s_x`` these scales:

    - loadings and regressions: ``normal(0, slope_sd * s_y / s_x)``
    - intercepts: ``normal(mean_y, intercept_sd * s_y)``
    - standard deviations: ``gamma(2, 1 / (sd_scale * s_y))``, which is zero at
      zero (keeps variance components off the boundary, Chung et al. 2013)
      with mean ``2 * sd_scale * s_y``
    - correlations: ``lkj(correlation_eta)`` per block of correlated variables
    - thresholds of an ordinal variable: ``normal(0, threshold_sd)`` each, on
      the latent response's scale (its level-1 residual SD is 1), restricted
      to increasing values

    Pass ``priors=DefaultPriors(slope_sd=1.0)`` or a dict with these keys to
    :class:`bayes_msem.Model` to change them.
    """

    slope_sd: float = 5.0
    intercept_sd: float = 10.0
    sd_scale: float = 1.0
    correlation_eta: float = 1.0
    threshold_sd: float = 5.0

    @classmethod
    def from_user(cls, value: DefaultPriors | dict | None) -> DefaultPriors:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise ValueError(f"unknown default-prior keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
            return replace(cls(), **{k: float(v) for k, v in value.items()})
        raise TypeError("priors= takes a DefaultPriors or a dict")

    def changed(self) -> dict[str, float]:
        """The settings that differ from the defaults (shown in the summary header)."""
        default = DefaultPriors()
        return {name: getattr(self, name) for name in self.__dataclass_fields__
                if getattr(self, name) != getattr(default, name)}

    def for_parameter(self, kind: str, lhs_scale: float, rhs_scale: float, lhs_mean: float) -> PriorSpec:
        """The default prior of a parameter of type ``kind``."""
        if kind in ("loading", "regression"):
            return PriorSpec("normal", (0.0, self.slope_sd * lhs_scale / rhs_scale))
        if kind == "intercept":
            return PriorSpec("normal", (lhs_mean, self.intercept_sd * lhs_scale))
        if kind == "variance":
            return PriorSpec("gamma", (2.0, 1.0 / (self.sd_scale * lhs_scale)), "sd")
        if kind == "covariance":
            return PriorSpec("lkj", (self.correlation_eta,))
        if kind == "threshold":
            return PriorSpec("normal", (0.0, self.threshold_sd))
        raise ValueError(f"no default prior for {kind!r}")
