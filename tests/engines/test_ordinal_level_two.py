"""Level-2-only ordinal variables (a school-level outcome cut at thresholds),
on data as users bring them: shuffled rows, string cluster labels out of
order, unequal clusters (singletons too), categories as an ordered
categorical of text.

- The latent engine's level-2 term against the density written out from the
  model's definition (a bivariate normal integrated over the ordinal
  outcome's cell by SciPy's quadrature), with a continuous level-2 outcome
  whose residual covaries with the ordinal one or that predicts it; by
  cluster label, with schools missing either outcome or both (the observed
  one's marginal density or cell).
- The sampler's level-2 term (PyTensor, with and without holes) against the
  NumPy one.
- A fit against maximum likelihood of the same model: the likelihood in closed form (the model is
  jointly normal in the rows, the cluster effect and the ordinal outcome's
  latent response, so each cluster's probability is a normal density times a
  probit cell), maximized by SciPy.
- The fit's per-cluster log-likelihood (LOO's unit: the cluster effect
  integrated out by importance sampling) against the same closed form."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, special, stats

import bayes_msem as bm
from bayes_msem.engines.latent import between_outcomes_logp, build_latent_model
from bayes_msem.engines.parameters import parameter_names
from bayes_msem.matrices import NUMPY_BACKEND, level_moments

from .test_latent import evaluate, random_point

pytestmark = pytest.mark.filterwarnings("ignore:only \\d+ clusters", "ignore:ordinal variable 'z'. no row")

CATEGORIES = ["low", "mid", "high"]

# z: an ordinal school-level outcome of the schools' latent mean of y and of w;
# v: a continuous one whose residual covaries with z's (added by default)
WITH_CONTINUOUS = """level: 1
  y ~ x
level: 2
  y ~ w
  z ~ y + w
  v ~ w"""

# v predicts z: with v missing, z's cell comes from the reduced form
ON_CONTINUOUS = """level: 1
  y ~ x
level: 2
  y ~ w
  z ~ y + w + v
  v ~ w"""

REGRESSION = """level: 1
  y ~ x
level: 2
  y ~ w
  z ~ y + w"""


def user_data(seed: int, n_clusters: int, max_size: int = 6, holes: float = 0.0) -> pd.DataFrame:
    """y* within, a school effect on y, z cut at -0.4 and 0.6 into text
    categories; with ``holes``, that share of the schools miss z (and,
    drawn apart, v) in all their rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_size + 1, size=n_clusters)
    if sizes.max() == 1:  # every school of one row is refused (nothing varies within), not what this tests
        sizes[0] = 2
    cluster = np.repeat(np.arange(n_clusters), sizes)
    w = rng.standard_normal(n_clusters)
    y_between = 0.3 + 0.5 * w + np.sqrt(0.5) * rng.standard_normal(n_clusters)
    x = rng.standard_normal(len(cluster))
    residual_z, residual_v = rng.multivariate_normal([0, 0], [[1, 0.3], [0.3, 0.5]], size=n_clusters).T
    z = np.digitize(0.8 * y_between + 0.3 * w + residual_z, [-0.4, 0.6])
    frame = pd.DataFrame({
        "cluster": [f"school {(7 * c) % 1009}" for c in cluster], "x": x, "w": w[cluster],
        "y": y_between[cluster] + 0.6 * x + rng.standard_normal(len(cluster)),
        "v": (0.2 + 0.4 * w + residual_v)[cluster],
        "z": pd.Categorical(np.array(CATEGORIES)[z[cluster]], categories=CATEGORIES, ordered=True)})
    for column in ("z", "v"):
        frame.loc[(rng.uniform(size=n_clusters) < holes)[cluster], column] = np.nan
    return frame.iloc[rng.permutation(len(frame))]


def test_the_table_fixes_the_latent_response_at_level_two():
    table = bm.Model(REGRESSION, user_data(1, 30), cluster="cluster", ordered=["z"]).partable()
    z = table[table.lhs == "z"].set_index(["op", "rhs"])
    assert z.loc[("~~", "z"), "ustart"] == 1.0 and z.loc[("~~", "z"), "free"] == 0
    assert z.loc[("~1", ""), "ustart"] == 0.0 and z.loc[("~1", ""), "free"] == 0
    assert (z.loc[("|", "t1"), "level"], z.loc[("|", "t2"), "level"]) == ("between", "between")
    assert z.loc[("|", "t1"), "free"] > 0


@pytest.mark.parametrize("syntax, error, words", [
    (REGRESSION + "\n  z ~~ z", bm.ModelSyntaxError, "the residual variance of the ordinal z is fixed at 1"),
    (REGRESSION + "\n  v ~ z", bm.ModelSyntaxError, "the level-2 ordinal z predicts v"),
    (REGRESSION + "\n  q ~ w", ValueError, "no engine fits this model.*the ordinal variables q and z stay correlated"),
])
def test_unsupported_level_two_ordinal_models_are_refused_with_the_reason(syntax, error, words):
    data = user_data(2, 30).assign(v=lambda d: d.w, q=lambda d: d.z)
    with pytest.raises(error, match=words):
        model = bm.Model(syntax, data, cluster="cluster", ordered=["z", "q"] if "q ~" in syntax else ["z"])
        build_latent_model(model.spec)


def bivariate_cell_logp(frame: pd.DataFrame, p: dict, effects: pd.Series) -> pd.Series:
    """log p(z_j, v_j | school effect y_j) per school from the model's
    definition: v = a_v + b_vw w + e_v, z* = b_zy y_j + b_zw w + b_zv v + e_z,
    var(e_z) = 1, cov(e_z, e_v) = c. The normal density of (z*, v) integrated
    over z's cell by quadrature; a school missing v: z*'s cell alone, missing z:
    v's density alone, missing both: 0. Categories no school has are merged
    (the model has one threshold fewer)."""
    used = [c for c in CATEGORIES if (frame["z"] == c).any()]
    cuts = [-np.inf] + [p[f"z|t{k}"] for k in range(1, len(used))] + [np.inf]
    b_zv, c, s_v = p.get("z~v|between", 0.0), p.get("z~~v|between", 0.0), p["v~~v|between"]
    cov = np.array([[1.0 + 2 * b_zv * c + b_zv**2 * s_v, c + b_zv * s_v], [c + b_zv * s_v, s_v]])
    out = {}
    for label, school in frame.groupby("cluster", observed=True):
        z, v, w = school["z"].iloc[0], school["v"].iloc[0], school["w"].iloc[0]
        mean_v = p["v~1|between"] + p["v~w|between"] * w
        mean = [p["z~y|between"] * effects[label] + p["z~w|between"] * w + b_zv * mean_v, mean_v]
        if pd.isna(z):
            out[label] = 0.0 if np.isnan(v) else stats.norm(mean[1], np.sqrt(s_v)).logpdf(v)
            continue
        k = used.index(z)
        if np.isnan(v):
            out[label] = np.log(np.diff(stats.norm(mean[0], np.sqrt(cov[0, 0])).cdf(cuts[k:k + 2]))[0])
            continue
        density = stats.multivariate_normal(mean, cov)
        cell = integrate.quad(lambda t, v=v, density=density: density.pdf([t, v]), cuts[k], cuts[k + 1],
                              epsabs=0, epsrel=1e-11)[0]
        out[label] = np.log(cell)
    return pd.Series(out)


def random_values(spec, rng) -> dict:
    """A valid parameter vector by name: covariances within correlations of
    0.8, thresholds increasing."""
    names = parameter_names(spec)
    p = {name: rng.uniform(-1, 1) for name in names}
    for name in names:
        lhs, _, rhs = name.split("|")[0].partition("~~")
        if rhs == lhs:
            p[name] = rng.uniform(0.3, 2.0)
    if "z~~v|between" in names:
        p["z~~v|between"] = rng.uniform(-0.8, 0.8) * np.sqrt(p["v~~v|between"])
    thresholds = sorted(n for n in names if n.startswith("z|t"))
    p.update(zip(thresholds, np.sort(rng.normal(size=len(thresholds)))))
    return p


def level_two_term(spec, p: dict, effects: np.ndarray, per_cluster: bool):
    theta = np.array([p[name] for name in parameter_names(spec)])
    moments = level_moments(theta, spec.layout.levels[1].structure)
    return between_outcomes_logp(spec, theta, moments, effects, NUMPY_BACKEND, special.erfc, per_cluster=per_cluster)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n_clusters=st.integers(3, 20), holes=st.sampled_from([0.0, 0.3, 0.7]),
       syntax=st.sampled_from([WITH_CONTINUOUS, ON_CONTINUOUS]))
def test_level_two_term_is_the_bivariate_normal_cell(seed, n_clusters, holes, syntax):
    """The level-2 likelihood given the school effects, per school and
    summed, equals the density from the definition, by school label; with
    leading axes (LOO's importance points), per copy."""
    frame = user_data(seed, n_clusters, holes=holes)
    assume(frame["z"].nunique() > 1)  # one category: refused (tests/test_ordinal.py)
    assume(frame["v"].nunique() > 1)  # one observed value: refused (zero variance)
    spec = bm.Model(syntax, frame, cluster="cluster", ordered=["z"]).spec
    rng = np.random.default_rng(seed)
    p = random_values(spec, rng)
    effects = rng.normal(size=(2, n_clusters, len(spec.layout.levels[1].effects)))
    labels = [str(c) for c in spec.data.cluster_labels]
    expected = [bivariate_cell_logp(frame, p, pd.Series(copy[:, list(spec.layout.levels[1].effects).index("y")],
                                                        index=labels))[labels].to_numpy() for copy in effects]
    np.testing.assert_allclose(level_two_term(spec, p, effects, per_cluster=True), expected, rtol=1e-8)
    assert level_two_term(spec, p, effects[0], per_cluster=False) == pytest.approx(expected[0].sum(), rel=1e-8)


def test_ordinal_outcomes_linked_by_a_missing_continuous_one_are_refused():
    """z and q both depend on v (their residuals uncorrelated): independent
    given v, so complete data fit; where a school misses v they are
    correlated, which needs their joint probability (refused with the reason)."""
    syntax = ON_CONTINUOUS + "\n  q ~ v\n  z ~~ 0*q"
    frame = user_data(6, 40).assign(q=lambda d: d.z)
    build_latent_model(bm.Model(syntax, frame, cluster="cluster", ordered=["z", "q"]).spec)
    frame.loc[frame.cluster == frame.cluster.iloc[0], "v"] = np.nan
    with pytest.raises(ValueError, match="the ordinal variables q and z stay correlated"):
        bm.Model(syntax, frame, cluster="cluster", ordered=["z", "q"])


@pytest.mark.parametrize("syntax, holes", [(WITH_CONTINUOUS, 0.0), (WITH_CONTINUOUS, 0.3), (ON_CONTINUOUS, 0.3)])
def test_the_sampler_uses_the_same_level_two_term(syntax, holes):
    frame = user_data(11, 20, holes=holes)
    spec = bm.Model(syntax, frame, cluster="cluster", ordered=["z"]).spec
    model = build_latent_model(spec)
    values = evaluate(model, random_point(model, 3), ["parameters", "cluster_effects", "between_outcomes_loglik"])
    p = dict(zip(parameter_names(spec), values["parameters"]))
    expected = level_two_term(spec, p, values["cluster_effects"], per_cluster=False)
    assert float(values["between_outcomes_loglik"]) == pytest.approx(expected, rel=1e-10)


# ---- a fit against maximum likelihood in closed form ----------------------------------------------------------

def school_sums(frame: pd.DataFrame) -> pd.DataFrame:
    """Per school: rows, sums and cross-products of y and x, w, z's category."""
    return frame.assign(yy=frame.y**2, xx=frame.x**2, xy=frame.x * frame.y, k=frame.z.cat.codes).groupby(
        "cluster", observed=True).agg(n=("y", "size"), sy=("y", "sum"), sx=("x", "sum"), syy=("yy", "sum"),
                                      sxx=("xx", "sum"), sxy=("xy", "sum"), w=("w", "first"), k=("k", "first"))


def closed_form_logp(sums: pd.DataFrame, b_x, s_w, a_y, b_yw, s_b, b_zy, b_zw, t1, t2) -> pd.Series:
    """log p(y_j, z_j) per school with its effect integrated out: the rows'
    normal density (compound symmetry), times the probit cell of z* given the
    rows, z* = b_zy y_b + b_zw w + e normal given them."""
    n, w = sums.n.to_numpy(), sums.w.to_numpy()
    mean_r = (sums.sy - b_x * sums.sx).to_numpy() / n
    within_ss = (sums.syy - 2 * b_x * sums.sxy + b_x**2 * sums.sxx).to_numpy() - n * mean_r**2
    mu = a_y + b_yw * w
    rows = (-0.5 * n * np.log(2 * np.pi) - 0.5 * (n - 1) * np.log(s_w) - 0.5 * np.log(s_w + n * s_b)
            - 0.5 * within_ss / s_w - 0.5 * n * (mean_r - mu) ** 2 / (s_w + n * s_b))
    post_var = 1.0 / (1.0 / s_b + n / s_w)
    post_mean = post_var * (n * mean_r / s_w + mu / s_b)
    z_mean, z_sd = b_zy * post_mean + b_zw * w, np.sqrt(b_zy**2 * post_var + 1.0)
    cuts = np.array([-np.inf, t1, t2, np.inf])
    k = sums.k.to_numpy()
    seen, k = k >= 0, np.maximum(k, 0)  # a school missing z: its rows alone
    cell = stats.norm.cdf((cuts[k + 1] - z_mean) / z_sd) - stats.norm.cdf((cuts[k] - z_mean) / z_sd)
    return pd.Series(rows + np.where(seen, np.log(cell), 0.0), index=sums.index)


ML_NAMES = ["y~x|within", "y~~y|within", "y~1|between", "y~w|between", "y~~y|between", "z~y|between", "z~w|between",
            "z|t1", "z|t2"]


def maximum_likelihood(sums: pd.DataFrame) -> dict:
    def unpack(x):
        b_x, log_sw, a_y, b_yw, log_sb, b_zy, b_zw, t1, log_gap = x
        return b_x, np.exp(log_sw), a_y, b_yw, np.exp(log_sb), b_zy, b_zw, t1, t1 + np.exp(log_gap)

    result = optimize.minimize(lambda x: -closed_form_logp(sums, *unpack(x)).sum(), np.zeros(9), method="BFGS")
    assert np.abs(result.jac).max() < 1e-3, result.message  # at the maximum (BFGS may stop on precision loss there)
    return dict(zip(ML_NAMES, unpack(result.x)))


@pytest.fixture(scope="module")
def regression_fit():
    frame = user_data(seed=5, n_clusters=160, max_size=9)
    model = bm.Model(REGRESSION, frame, cluster="cluster", ordered=["z"])
    return frame, model.fit(draws=400, tune=400, chains=2, random_seed=3, progressbar=False)


def posterior_draws(point, name: str) -> np.ndarray:
    """Draws of a parameter named as in ``parameter_names`` ("y~~y|within"):
    the posterior keeps a name used at both levels once, with a level dimension."""
    key, _, level = name.partition("|")
    if name in point:
        return point[name].values
    draws = point[key]
    return (draws.sel(level=level) if "level" in draws.dims else draws).values


def test_fit_agrees_with_maximum_likelihood(regression_fit):
    """Posterior medians within 0.3 posterior SDs of the ML estimates (0.5
    for the variances, whose posteriors are skewed)."""
    frame, fit = regression_fit
    ml = maximum_likelihood(school_sums(frame))
    posterior = fit.idata.posterior
    for name, estimate in ml.items():
        draws = posterior_draws(posterior, name).ravel()
        limit = 0.5 if "~~" in name else 0.3
        assert abs(np.median(draws) - estimate) < limit * draws.std(), (name, np.median(draws), estimate)


def test_loo_units_integrate_the_school_effect(regression_fit):
    """The per-cluster log-likelihood (importance sampling over the school
    effect, 32 points) equals the closed form at posterior draws, by school label."""
    frame, fit = regression_fit
    sums = school_sums(frame)
    loo = fit.loo()
    assert np.isfinite(loo.elpd_loo) and (loo.pareto_k.values < 0.7).all()
    loglik = fit.idata.log_likelihood["loglik"]
    errors = []
    for chain, draw in [(0, 0), (0, 200), (1, 50), (1, 399)]:
        point = fit.idata.posterior.isel(chain=chain, draw=draw)
        p = {name: float(posterior_draws(point, name)) for name in ML_NAMES}
        expected = closed_form_logp(sums, *p.values())
        errors.append(loglik.isel(chain=chain, draw=draw).to_series()[expected.index] - expected)
    errors = np.array(errors)
    # measured over 20 draws x 160 schools: largest error 0.011, root mean square 0.0011
    assert np.abs(errors).max() < 0.03 and np.sqrt((errors**2).mean()) < 0.003


def test_predictive_check_counts_the_schools_categories(regression_fit):
    """The level-2 item's shares are counted over schools (not rows), and the
    replicates' intervals hold them. (With one item and no pairs the PPP is
    near 1: the thresholds reproduce the marginal shares by construction.)"""
    frame, fit = regression_fit
    check = fit.ppp(n_draws=100, seed=2)
    cells = check.covariances.set_index(["level", "lhs", "op", "rhs"]).loc[("between", "z", "share")]
    schools = frame.groupby("cluster", observed=True).z.first().value_counts(normalize=True)
    np.testing.assert_allclose(cells["observed"].to_numpy(), schools[CATEGORIES].to_numpy())
    assert ((cells.lower < cells.observed) & (cells.observed < cells.upper)).all()


def test_simulated_level_two_categories_are_constant_within_clusters_and_follow_the_thresholds():
    """z* = 0.5 w + e with w, e standard normal: P(z <= k) = Phi(t_k / sqrt(1.25))."""
    data = bm.simulate_data("level: 1\n  y ~ x\nlevel: 2\n  z ~ w", {"z~w|between": 0.5, "z|t1": -0.5, "z|t2": 0.4},
                            n_clusters=4000, cluster_size=2, seed=4, ordered=["z"])
    assert data.groupby("cluster").z.nunique().max() == 1
    schools = data.groupby("cluster").z.first()
    cumulative = [np.mean(schools <= k) for k in (0, 1)]
    np.testing.assert_allclose(cumulative, stats.norm.cdf(np.array([-0.5, 0.4]) / np.sqrt(1.25)), atol=0.02)
