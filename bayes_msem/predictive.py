"""Posterior predictive checks: the posterior predictive p-value (PPP) of the
likelihood-ratio chi-square, as Mplus and blavaan compute it, and predictive
checks of the within and between covariances.

For a subset of posterior draws theta_s a data set Y_rep is replicated from the
model at theta_s, with the covariates kept as observed. The discrepancy is the
likelihood-ratio chi-square against the saturated model,

    T(Y, theta) = 2 [log p(Y | saturated ML estimate for Y) - log p(Y | theta)],

and PPP = Pr(T(Y_rep, theta) >= T(Y, theta)): near 0.5 when the model
reproduces the data as well as it reproduces its own replicates, near 0 when it
does not. Both log-likelihoods go through the same function as the sampler's
(:func:`~bayes_msem.engines.collapsed.two_level_logp`), so their constants agree.

The saturated two-level model is lavaan's unrestricted ("h1") model:
regressions of the level-1 outcomes on the level-1 covariates with a free
within covariance, and of the between parts and level-2 outcomes on the
level-2 covariates with a free between covariance; variables without a between
part get none. It has no closed form for unequal cluster sizes and is fitted by
EM, as lavaan does (``lav_mvnorm_cluster_em_sat``), for all replicates at once.
A single-level model is the one-cluster case, where EM stops after one step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np
import pandas as pd

from bayes_msem.data import ClusterData, cluster_mean_statistics, within_cross_products
from bayes_msem.engines.collapsed import two_level_logp
from bayes_msem.layout import Placement
from bayes_msem.matrices import NUMPY_BACKEND, level_moments
from bayes_msem.simulate import draw_outcomes

__all__ = ["PredictiveCheck", "posterior_predictive_check", "saturated_loglik", "saturated_parameter_count"]


@dataclass(frozen=True)
class PredictiveCheck:
    """Result of :func:`posterior_predictive_check`."""

    ppp: float
    chi2_observed: np.ndarray  # (checked draws,): T(Y, theta_s)
    chi2_replicated: np.ndarray  # (checked draws,): T(Y_rep_s, theta_s)
    df: int  # saturated minus model parameters, as lavaan counts them (-1: no degrees of freedom)
    covariances: pd.DataFrame  # one row per within / between covariance element (or category cell)
    statistic: str = "chi-square"

    def __str__(self) -> str:
        df = f", df {self.df}" if self.df >= 0 else ""
        return (f"Posterior predictive p-value (PPP) {self.ppp:.3f}: {self.statistic} "
                f"{np.median(self.chi2_observed):.2f} (median over draws){df}, {len(self.chi2_observed)} draws")


class _Design:
    """What the saturated model needs from the data that replicates do not change:
    the level-1 design (1, x), the level-2 design (1, w), cluster sizes and the
    coefficient mask of the between regressions (split variables get no
    between intercept: their mean is the within intercept)."""

    def __init__(self, data: ClusterData, layout: Placement):
        b_b, z_b, place = layout
        self.layout = layout
        self.n = data.cluster_sizes.astype(float)
        stats = data.stats  # (1, x)'(1, x) and per-cluster sums of (1, x) from the cross-products
        sum_x = stats["sum_x"].sum(axis=0)
        self.DtD = np.block([[np.array([[self.n.sum()]]), sum_x[None, :]], [sum_x[:, None], stats["xx"]]])
        self.design_sum = np.column_stack([self.n, stats["sum_x"]])
        self.U = np.column_stack([np.ones(data.n_clusters), data.between_covariates])
        self.UtU = self.U.T @ self.U
        self.H = np.zeros((place.shape[0] + len(z_b), len(b_b) + len(z_b)))
        self.H[: place.shape[0], : len(b_b)] = place
        self.H[place.shape[0]:, len(b_b):] = np.eye(len(z_b))
        mask = np.ones((len(b_b) + len(z_b), self.U.shape[1]), dtype=bool)
        mask[: len(b_b), 0] = False
        self.free = np.flatnonzero(mask.ravel())
        self.sizes, self.size_index = np.unique(self.n, return_inverse=True)
        self.groups = [np.flatnonzero(self.size_index == g) for g in range(len(self.sizes))]

    @property
    def n_b(self) -> int:
        return len(self.layout[0])

    def statistics(self, datasets: list[ClusterData]) -> dict:
        """Statistics of R data sets, stacked, read from the cross-products each
        already has (:attr:`ClusterData.stats`): Y'Y, (1, x)'Y, per-cluster sums
        of Y and the level-2 outcomes Z."""
        stats = [d.stats for d in datasets]
        return {"YtY": np.stack([s["yy"] for s in stats]),
                "DtY": np.stack([np.vstack([s["sum_y"].sum(axis=0), s["yx"].T]) for s in stats]),
                "ysum": np.stack([s["sum_y"] for s in stats]), "Z": np.stack([d.between_outcomes for d in datasets])}

    @property
    def parameter_count(self) -> int:
        """Free parameters of the saturated model (intercepts, regressions on
        covariates, covariances), the way lavaan counts them for ``df``."""
        p, d, k = self.layout[2].shape[0], self.DtD.shape[0], self.H.shape[1]
        return p * d + p * (p + 1) // 2 + len(self.free) + k * (k + 1) // 2


def _em_start(design: _Design, stats: dict) -> dict:
    """Crude start: pooled regressions and the spread of the cluster means."""
    R = stats["YtY"].shape[0]
    BW = np.swapaxes(np.linalg.solve(design.DtD, stats["DtY"]), 1, 2)
    SW = (stats["YtY"] - BW @ design.DtD @ np.swapaxes(BW, 1, 2)) / design.n.sum()
    ybar = stats["ysum"] / design.n[None, :, None]
    observed = np.concatenate([ybar[:, :, design.layout[2].argmax(axis=0)] if design.n_b else ybar[:, :, :0],
                               stats["Z"]], axis=2)
    k = observed.shape[2]
    SB = np.zeros((R, k, k))
    SB[:, np.arange(k), np.arange(k)] = observed.var(axis=1) + 1e-6
    M = np.zeros((R, k, design.U.shape[1]))
    M[:, design.n_b:, 0] = stats["Z"].mean(axis=1)
    return {"BW": BW, "SW": SW, "M": M, "SB": SB}


def _em_step(design: _Design, stats: dict, params: dict) -> dict:
    """One EM iteration (the between regression by one GLS step, i.e. ECM)."""
    BW, SW, M, SB = params["BW"], params["SW"], params["M"], params["SB"]
    H, n, n_b = design.H, design.n, design.n_b
    R, p = SW.shape[0], SW.shape[1]
    N, J = n.sum(), len(n)
    # E-step: the between vector v_j = (b_j, z_j) given the cluster's means
    dbar = stats["ysum"] / n[None, :, None] - np.einsum("rpd,jd->rjp", BW, design.design_sum / n[:, None])
    observation = np.concatenate([dbar, stats["Z"]], axis=2)
    prior_mean = np.einsum("rkc,jc->rjk", M, design.U)
    residual = observation - prior_mean @ H.T
    SB_Ht = SB @ H.T
    HSBHt = H @ SB_Ht
    m = np.empty_like(prior_mean)
    V_sum = np.zeros_like(SB)  # sum over clusters of the conditional covariances
    within_V = np.zeros_like(SW)  # sum over clusters of n_j P V_j,bb P'
    place = design.layout[2]
    for size, members in zip(design.sizes, design.groups):
        C = HSBHt.copy()
        C[:, :p, :p] += SW / size
        gain = np.swapaxes(np.linalg.solve(C, np.swapaxes(SB_Ht, 1, 2)), 1, 2)  # SB H' C^-1: (R, k, K)
        m[:, members] = prior_mean[:, members] + np.einsum("rkK,rjK->rjk", gain, residual[:, members])
        V = SB - gain @ np.swapaxes(SB_Ht, 1, 2)
        V_sum += len(members) * V
        within_V += len(members) * size * place @ V[:, :n_b, :n_b] @ place.T
    # M-step, within: regress Y - P b on (1, x)
    Pm = m[:, :, :n_b] @ place.T
    DtEr = stats["DtY"] - np.einsum("jd,rjp->rdp", design.design_sum, Pm)
    BW = np.swapaxes(np.linalg.solve(design.DtD, DtEr), 1, 2)
    cross = np.einsum("rjp,rjq->rpq", stats["ysum"], Pm)
    ErEr = stats["YtY"] - cross - np.swapaxes(cross, 1, 2) + np.einsum("j,rjp,rjq->rpq", n, Pm, Pm)
    SW = (ErEr - BW @ design.DtD @ np.swapaxes(BW, 1, 2) + within_V) / N
    # M-step, between: GLS of E v_j on (1, w_j) given the current SB, then SB
    omega = np.linalg.inv(SB)
    k, c = M.shape[1], M.shape[2]
    normal = np.einsum("rab,cd->racbd", omega, design.UtU).reshape(R, k * c, k * c)
    rhs = (omega @ np.einsum("rjk,jc->rkc", m, design.U)).reshape(R, k * c)
    free = design.free
    M = np.zeros((R, k * c))
    if len(free):
        M[:, free] = np.linalg.solve(normal[:, free][:, :, free], rhs[:, free][..., None])[..., 0]
    M = M.reshape(R, k, c)
    resid = m - np.einsum("rkc,jc->rjk", M, design.U)
    SB = (np.einsum("rjk,rjl->rkl", resid, resid) + V_sum) / J
    return {"BW": BW, "SW": (SW + np.swapaxes(SW, 1, 2)) / 2, "M": M, "SB": (SB + np.swapaxes(SB, 1, 2)) / 2}


def _fit_saturated(design: _Design, stats: dict, start: dict | None, max_iter: int = 2000, tol: float = 1e-8) -> dict:
    """EM for the saturated model of R data sets at once, until no covariance
    entry moves by more than ``tol`` (relative) in an iteration."""
    params = _em_start(design, stats) if start is None else start
    if design.H.shape[1] == 0:  # no between part: one regression is the ML estimate
        return _em_step(design, stats, params)
    for _ in range(max_iter):
        new = _em_step(design, stats, params)
        change = max(np.max(np.abs(new[key] - params[key]) / (np.abs(params[key]) + 1e-3)) for key in ("SW", "SB"))
        params = new
        if change < tol:
            break
    return params


def _moments(design: _Design, params: dict, r: int, n_between_observed: int):
    """Replicate r's saturated estimates as the two levels' mean, Pi and Sigma."""
    b_b, z_b, _ = design.layout
    BW, M, SB = params["BW"][r], params["M"][r], params["SB"][r]
    within = SimpleNamespace(mean=BW[:, 0], Pi=BW[:, 1:], Sigma=params["SW"][r])
    order = np.concatenate([b_b, z_b])
    mean = np.zeros(n_between_observed)
    Pi = np.zeros((n_between_observed, M.shape[1] - 1))
    Sigma = np.zeros((n_between_observed, n_between_observed))
    mean[order], Pi[order] = M[:, 0], M[:, 1:]
    Sigma[np.ix_(order, order)] = SB
    return within, SimpleNamespace(mean=mean, Pi=Pi, Sigma=Sigma)


def _with_outcomes(data: ClusterData, Y: np.ndarray, Z: np.ndarray) -> ClusterData:
    """The data with replicated outcomes (covariates and clusters unchanged)."""
    new = replace(data, within_outcomes=Y, between_outcomes=Z)
    object.__setattr__(new, "stats", within_cross_products(new))
    return new


def _loglik(data: ClusterData, stats: dict, layout, within, between) -> float:
    """log p(Y, z) at the given moments; ``stats`` is :func:`cluster_mean_statistics` of ``data``."""
    return float(two_level_logp(data, stats, within, between, layout, NUMPY_BACKEND))


def _observed_saturated(spec):
    """The saturated model fitted to the data of ``spec``: layout, design, EM
    estimates, the data's cluster statistics and the maximized log-likelihood."""
    data = spec.data
    layout = spec.layout.placement
    design = _Design(data, layout)
    fit = _fit_saturated(design, design.statistics([data]), None)
    stats = cluster_mean_statistics(data)
    return layout, design, fit, stats, _loglik(data, stats, layout, *_moments(design, fit, 0, _n_between_observed(spec)))


def saturated_loglik(spec) -> float:
    """Maximized log-likelihood of the saturated (unrestricted) model for the
    data of ``spec``, conditional on the covariates (lavaan's ``unrestricted.logl``
    of a model with ``conditional.x = TRUE``); with missing values the
    observed-data maximum (:mod:`bayes_msem.saturated_missing`)."""
    if spec.data.has_missing:
        from bayes_msem.saturated_missing import MissingSaturated

        return MissingSaturated(spec).fit(spec.data).loglik
    return _observed_saturated(spec)[-1]


def saturated_parameter_count(spec) -> int:
    """Free parameters of the saturated model, the way lavaan counts them for ``df``."""
    return _Design(spec.data, spec.layout.placement).parameter_count


def _n_between_observed(spec) -> int:
    return spec.between.n_observed if spec.between is not None else 0


def posterior_predictive_check(spec, theta_draws: np.ndarray, *, n_draws: int = 500,
                               seed: int | None = None) -> PredictiveCheck:
    """PPP of the likelihood-ratio chi-square and predictive checks of the
    within and between covariances, from ``n_draws`` posterior draws
    (``theta_draws``: (chains, draws, free parameters)) picked at random.
    With ordinal variables: the check of category counts of
    :mod:`bayes_msem.predictive_ordinal` (random slopes allowed there)."""
    spec.layout.refuse_beyond_two_levels("the posterior predictive check (ppp)")
    if spec.table.ordinal:
        from bayes_msem.predictive_ordinal import ordinal_predictive_check

        return ordinal_predictive_check(spec, theta_draws, n_draws=n_draws, seed=seed)
    if spec.within.slopes:
        raise ValueError("the PPP needs a saturated model, which a model with random slopes does not have (Mplus "
                         "reports no chi-square for such models either); compare models with result.loo() instead")
    rng = np.random.default_rng(seed)
    theta = theta_draws.reshape(-1, theta_draws.shape[-1])
    picked = np.sort(rng.choice(len(theta), size=min(n_draws, len(theta)), replace=False))
    if spec.data.has_missing:
        return _check_with_missing_values(spec, theta[picked], rng)
    data, between_structure = spec.data, spec.between
    layout, design, observed_fit, observed_stats, saturated_observed = _observed_saturated(spec)
    n_between = _n_between_observed(spec)
    chi2_obs, chi2_rep, rep_covariances = [], [], []
    batch = max(1, int(2e7 // max(1, data.within_outcomes.size)))
    for start in range(0, len(picked), batch):
        replicates, model_logliks = [], []
        for s in picked[start:start + batch]:
            within = level_moments(theta[s], spec.within)
            between = level_moments(theta[s], between_structure) if between_structure is not None else _EMPTY_BETWEEN
            Y, Z, _ = draw_outcomes(rng, theta[s], spec.layout, data.within_covariates, data.between_covariates,
                                 data.cluster_index)
            replicate = _with_outcomes(data, Y, Z)
            stats = cluster_mean_statistics(replicate)
            chi2_obs.append(2 * (saturated_observed - _loglik(data, observed_stats, layout, within, between)))
            replicates.append((replicate, stats))
            model_logliks.append(_loglik(replicate, stats, layout, within, between))
            rep_covariances.append(_covariance_statistics(replicate, stats, design))
        warm = {key: np.broadcast_to(value, (len(replicates),) + value.shape[1:]).copy()
                for key, value in observed_fit.items()}
        fit = _fit_saturated(design, design.statistics([r for r, _ in replicates]), warm)
        for r, ((replicate, stats), model_loglik) in enumerate(zip(replicates, model_logliks)):
            saturated = _loglik(replicate, stats, layout, *_moments(design, fit, r, n_between))
            chi2_rep.append(2 * (max(saturated, model_loglik) - model_loglik))
    chi2_obs, chi2_rep = np.array(chi2_obs), np.array(chi2_rep)
    covariances = _covariance_table(spec, _covariance_statistics(data, observed_stats, design),
                                    np.array(rep_covariances))
    return PredictiveCheck(ppp=float(np.mean(chi2_rep >= chi2_obs)), chi2_observed=chi2_obs, chi2_replicated=chi2_rep,
                           df=design.parameter_count - len(spec.priors), covariances=covariances)


def _check_with_missing_values(spec, theta: np.ndarray, rng: np.random.Generator) -> PredictiveCheck:
    """The check where values are missing: each replicate keeps the data's holes,
    both log-likelihoods are the observed-data ones, the saturated model is fitted
    by maximum likelihood (:mod:`bayes_msem.saturated_missing`), and the checked
    covariances are the saturated model's estimates (what the data say about the
    within and between covariances, with every observed value used)."""
    from bayes_msem.engines.missing import missing_logp, missing_statistics
    from bayes_msem.saturated_missing import MissingSaturated

    data = spec.data
    saturated = MissingSaturated(spec)
    observed_stats = missing_statistics(spec)
    observed_fit = saturated.fit(data, stats=observed_stats)
    holes_y, holes_z = np.isnan(data.within_outcomes), np.isnan(data.between_outcomes)
    chi2_obs, chi2_rep, rep_covariances = [], [], []
    for values in theta:
        Y, Z, _ = draw_outcomes(rng, values, spec.layout, data.within_covariates, data.between_covariates,
                             data.cluster_index)
        replicate = replace(data, within_outcomes=np.where(holes_y, np.nan, Y),
                            between_outcomes=np.where(holes_z, np.nan, Z))
        replicate_stats = missing_statistics(spec, replicate)  # one pass over the rows serves both fits
        model_observed = float(missing_logp(spec, values, NUMPY_BACKEND, observed_stats))
        model_replicate = float(missing_logp(spec, values, NUMPY_BACKEND, replicate_stats))
        fit = saturated.fit(replicate, start=observed_fit.vector, stats=replicate_stats)
        chi2_obs.append(2 * (observed_fit.loglik - model_observed))
        chi2_rep.append(2 * (max(fit.loglik, model_replicate) - model_replicate))
        rep_covariances.append(fit.covariances)
    chi2_obs, chi2_rep = np.array(chi2_obs), np.array(chi2_rep)
    return PredictiveCheck(ppp=float(np.mean(chi2_rep >= chi2_obs)), chi2_observed=chi2_obs, chi2_replicated=chi2_rep,
                           df=saturated_parameter_count(spec) - len(spec.priors),
                           covariances=_covariance_table(spec, observed_fit.covariances, np.array(rep_covariances)))


_EMPTY_BETWEEN = SimpleNamespace(mean=np.zeros(0), Pi=np.zeros((0, 0)), Sigma=np.zeros((0, 0)))


def _covariance_statistics(data: ClusterData, stats: dict, design: _Design) -> np.ndarray:
    """The checked statistics of one data set: the pooled within-cluster
    covariance of the level-1 outcomes and the covariance over clusters of the
    cluster means of split variables and of the level-2 outcomes (in a
    single-level model, the covariance of the outcomes), lower triangles
    stacked. ``stats`` is :func:`cluster_mean_statistics` of ``data``."""
    if design.H.shape[1] == 0:
        within = np.cov(data.within_outcomes, rowvar=False).reshape(data.within_outcomes.shape[1], -1)
        return within[np.tril_indices(len(within))]
    within = stats["yy_within"] / (data.n_rows - data.n_clusters)
    b_b, z_b, place = design.layout
    means = np.concatenate([stats["mean_y"] @ place, data.between_outcomes], axis=1)
    between = np.cov(means, rowvar=False).reshape(means.shape[1], -1)
    return np.concatenate([within[np.tril_indices(len(within))], between[np.tril_indices(len(between))]])


def _covariance_table(spec, observed: np.ndarray, replicated: np.ndarray) -> pd.DataFrame:
    """Observed statistic, its posterior predictive median and 95% interval, and
    Pr(replicated >= observed): near 0 or 1 means the model misses it."""
    rows_level, *upper = spec.layout.levels
    names = [(rows_level.name, list(rows_level.structure.observed))]
    names += [(level.name, list(level.split + level.outcomes)) for level in upper]
    rows = []
    for level, variables in names:
        for i, j in zip(*np.tril_indices(len(variables))):
            rows.append({"level": level, "lhs": variables[i], "op": "~~", "rhs": variables[j]})
    table = pd.DataFrame(rows)
    table["observed"] = observed
    table["predicted"] = np.median(replicated, axis=0)
    table["lower"], table["upper"] = np.quantile(replicated, [0.025, 0.975], axis=0)
    table["p"] = np.mean(replicated >= observed[None, :], axis=0)
    return table


def check_to_dataset(check: PredictiveCheck):
    """The check as an xarray Dataset, stored in the InferenceData group
    ``predictive_check`` so that saved results keep it."""
    import xarray as xr

    table = check.covariances
    variables = {"chi2_observed": ("check_draw", check.chi2_observed),
                 "chi2_replicated": ("check_draw", check.chi2_replicated)}
    variables.update({f"covariance_{column}": ("statistic", table[column].to_numpy()) for column in table.columns})
    return xr.Dataset(variables, attrs={"ppp": check.ppp, "df": check.df, "statistic": check.statistic})


def check_from_dataset(dataset) -> PredictiveCheck:
    """Inverse of :func:`check_to_dataset`."""
    prefix = "covariance_"
    table = pd.DataFrame({name[len(prefix):]: dataset[name].values for name in dataset.data_vars
                          if name.startswith(prefix)})
    for column in ("level", "lhs", "op", "rhs"):
        table[column] = table[column].astype(str)
    return PredictiveCheck(ppp=float(dataset.attrs["ppp"]), chi2_observed=dataset["chi2_observed"].values,
                           chi2_replicated=dataset["chi2_replicated"].values, df=int(dataset.attrs["df"]),
                           covariances=table, statistic=str(dataset.attrs.get("statistic", "chi-square")))
