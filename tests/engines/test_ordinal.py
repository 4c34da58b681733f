"""Ordinal variables in the latent engine: each row's likelihood equals the
definition, p(continuous values) x P(latent responses in the row's cell |
continuous values), computed from the joint normal with SciPy's multivariate
normal CDF (a rectangle probability, no quadrature), whatever the row order,
the cluster labels and the missing categories and continuous values."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

import bayes_msem as bm
from bayes_msem.engines.ordinal import BEYOND, ordinal_layout, ordinal_level_logp, quadrature, row_means_of
from bayes_msem.matrices import level_moments, parameter_values

# u1, u2 ordinal indicators of one within factor with a continuous y3 (the
# factor is integrated by quadrature); y4 a continuous outcome; all split.
FACTOR_MODEL = """level: 1
  fw =~ u1 + u2 + y3
  y4 ~ x
level: 2
  fb =~ u1 + u2 + y3
  y4 ~~ y4"""
FACTOR_VALUES = {"u1|t1": -0.6, "u1|t2": 0.7, "u2|t1": 0.2, "fw=~u2|within": 0.8, "fw=~y3|within": 1.2,
                 "y4~x|within": 0.5, "fb=~u2|between": 0.7, "fb=~y3|between": 1.0, "fb~~fb|between": 0.5}
# an ordinal outcome of a continuous mediator: no factor to integrate
MEDIATION_MODEL = """level: 1
  m ~ x
  u ~ m + x
level: 2
  m ~~ m
  u ~~ u"""
MEDIATION_VALUES = {"u|t1": -0.5, "u|t2": 0.3, "u|t3": 1.1, "m~x|within": 0.6, "u~m|within": 0.5,
                    "u~x|within": -0.3}
pytestmark = pytest.mark.filterwarnings("ignore:only 6 clusters")
CASES = {"factor": (FACTOR_MODEL, FACTOR_VALUES, ["u1", "u2"]),
         "mediation": (MEDIATION_MODEL, MEDIATION_VALUES, ["u"])}


def users_data(case: str, seed: int, missing_rate: float) -> pd.DataFrame:
    """Simulated data as users bring them: shuffled rows, string cluster
    labels out of order, categories coded 1..K, some ordinal values missing."""
    syntax, values, ordered = CASES[case]
    rng = np.random.default_rng(seed)
    data = bm.simulate_data(syntax, values, n_clusters=6, cluster_size=[3, 5, 4, 6, 2, 5], seed=seed,
                            ordered=ordered)
    data["cluster"] = data["cluster"].map(lambda c: f"team-{(7 * c) % 11}")
    for name in ordered:
        data[name] = data[name] + 1
    continuous = {"factor": ["y3", "y4"], "mediation": ["m"]}[case]
    for name in ordered + continuous:  # holes in categories and in continuous values (MAR: at random)
        data.loc[rng.uniform(size=len(data)) < missing_rate, name] = np.nan
    return data.iloc[rng.permutation(len(data))]


def brute_force_logp(frame: pd.DataFrame, ordered, observed, Sigma, mean_of_row, cuts) -> pd.Series:
    """Per row (by the frame's index) log p(continuous) + log P(ordinal cell |
    continuous), from the joint normal of the row's observed variables and SciPy's CDF."""
    per_row = pd.Series(0.0, index=frame.index)
    U = [observed.index(n) for n in ordered]
    for label, row in frame.iterrows():
        total = 0.0
        mean = mean_of_row(row)
        seen = [k for k in U if not np.isnan(row[observed[k]])]
        C = [k for k in range(len(observed)) if k not in U and not np.isnan(row[observed[k]])]
        y_c = row[[observed[k] for k in C]].to_numpy(float)
        if C:
            total += stats.multivariate_normal(mean[C], Sigma[np.ix_(C, C)]).logpdf(y_c)
        per_row[label] = total
        if not seen:
            continue
        if C:
            gain = Sigma[np.ix_(seen, C)] @ np.linalg.inv(Sigma[np.ix_(C, C)])
            cond_mean = mean[seen] + gain @ (y_c - mean[C])
            cond_cov = Sigma[np.ix_(seen, seen)] - gain @ Sigma[np.ix_(C, seen)]
        else:
            cond_mean, cond_cov = mean[seen], Sigma[np.ix_(seen, seen)]
        bounds = []
        for k in seen:
            name = observed[k]
            category = int(row[name]) - 1
            edges = np.concatenate([[-np.inf], cuts[name], [np.inf]])
            bounds.append((edges[category], edges[category + 1]))
        per_row[label] += np.log(rectangle_probability(cond_mean, cond_cov, bounds))
    return per_row


def rectangle_probability(mean, cov, bounds) -> float:
    """P(lower < X < upper) for X ~ N(mean, cov): SciPy's CDF with a lower
    limit (Genz's quasi-Monte Carlo, to 1e-9; inclusion-exclusion over 16
    corners at SciPy's default precision missed by 1e-4 with SciPy 1.17)."""
    if len(mean) == 1:
        sd = np.sqrt(cov[0, 0])
        (lo, hi), = bounds
        return stats.norm.cdf((hi - mean[0]) / sd) - stats.norm.cdf((lo - mean[0]) / sd)
    lower, upper = (np.clip([b[i] for b in bounds], -40, 40) for i in (0, 1))
    return stats.multivariate_normal(mean, cov, abseps=1e-9, releps=1e-9, maxpts=10**7).cdf(upper, lower_limit=lower)


def case_setup(case: str, seed: int, missing_rate: float):
    syntax, values, ordered = CASES[case]
    frame = users_data(case, seed, missing_rate)
    model = bm.Model(syntax, frame, cluster="cluster", ordered=ordered)
    spec = model.spec
    rng = np.random.default_rng(seed + 1)
    theta = np.array(spec.starts) + 0.2 * rng.standard_normal(len(spec.starts))
    kinds = np.array(spec.kinds)
    theta[kinds == "variance"] = np.abs(theta[kinds == "variance"]) + 0.3
    for name in ordered:  # increasing thresholds
        rows = spec.table.rows
        free = rows[(rows.op == "|") & (rows.lhs == name)].free.to_numpy()
        theta[free - 1] = np.sort(theta[free - 1])
    return frame, model, spec, theta


@settings(max_examples=10, deadline=None, derandomize=True)  # the same examples in every CI run
@given(case=st.sampled_from(sorted(CASES)), seed=st.integers(0, 1000), rate=st.sampled_from([0.0, 0.3]))
def test_row_likelihood_equals_the_joint_normal_rectangle(case, seed, rate):
    frame, model, spec, theta = case_setup(case, seed, rate)
    structure = spec.within
    moments = level_moments(theta, structure)
    rng = np.random.default_rng(seed)
    labels = sorted(frame["cluster"].unique())
    cluster_part = {label: rng.standard_normal(structure.n_observed) for label in labels}
    cluster_means = moments.mean + np.array([cluster_part[str(label)] for label in spec.data.cluster_labels])
    layout = ordinal_layout(spec)
    got = ordinal_level_logp(theta, moments, row_means_of(moments, cluster_means, spec.data), layout,
                             spec.data.within_outcomes, erfc=special.erfc)
    observed = list(structure.observed)
    rows = spec.table.rows
    values = parameter_values(rows, theta)
    cuts = {name: np.sort(values[rows.index[(rows.op == "|") & (rows.lhs == name)]]) for name in spec.table.ordinal}
    x_names = list(structure.covariates)

    def mean_of_row(row):
        x = row[x_names].to_numpy(float)
        return moments.mean + cluster_part[row["cluster"]] + moments.Pi @ x

    # the categories as the user coded them: 1..K, no category empty in these data
    recoded = frame.copy()
    for name in spec.table.ordinal:
        present = np.sort(frame[name].dropna().unique())
        recoded[name] = frame[name].map({v: k + 1 for k, v in enumerate(present)})
    expected = brute_force_logp(recoded, list(spec.table.ordinal), observed, moments.Sigma, mean_of_row, cuts)
    assert got == pytest.approx(expected.sum(), rel=1e-6, abs=1e-6)
    # per row (LOO's units), in the arrays' order (not the data's); SciPy's CDF has releps 1e-6
    per_row = ordinal_level_logp(theta, moments, row_means_of(moments, cluster_means, spec.data), layout,
                                 spec.data.within_outcomes, erfc=special.erfc, per_row=True)
    assert per_row == pytest.approx(expected[spec.data.row_labels].to_numpy(), rel=1e-5, abs=1e-5)


def test_the_quadrature_rule_integrates_normal_moments():
    for factors in (1, 2, 3):
        points, log_weights = quadrature(factors)
        weights = np.exp(log_weights)
        assert weights.sum() == pytest.approx(1.0)
        assert (weights[:, None] * points**2).sum(0) == pytest.approx(np.ones(factors))
        assert (weights * points[:, 0] ** 4).sum() == pytest.approx(3.0)


def test_a_factor_model_is_integrated_and_a_mediation_is_not():
    assert len(ordinal_layout(case_setup("factor", 1, 0.0)[2]).row_factors) == 1
    assert len(ordinal_layout(case_setup("mediation", 1, 0.0)[2]).row_factors) == 0


def test_ordinal_variables_correlated_beyond_the_factors_are_refused():
    frame = users_data("mediation", 3, 0.0)
    frame["v"] = (frame["m"] > 0).astype(int)
    with pytest.raises(ValueError, match="ordinal variables v and u stay correlated given the continuous"):
        bm.Model("level: 1\n m ~ x\n u ~ m + x\n v ~ u\nlevel: 2\n m ~~ m\n u ~~ u", frame, cluster="cluster",
                 ordered=["u", "v"])


def single_level_setup(syntax: str, values: dict, ordered: list[str], rows: int, seed: int):
    data = bm.simulate_data(syntax, values, cluster_size=rows, seed=seed, ordered=ordered)
    spec = bm.Model(syntax, data, ordered=ordered).spec
    rows_table = spec.table.rows
    free = rows_table.drop_duplicates("free").set_index("free")
    theta = np.array([values.get(f"{free.loc[k, 'lhs']}{free.loc[k, 'op']}{free.loc[k, 'rhs']}", 1.0)
                      for k in range(1, len(spec.starts) + 1)])
    moments = level_moments(theta, spec.within)
    layout = ordinal_layout(spec)
    got = ordinal_level_logp(theta, moments, np.zeros((len(data), spec.within.n_observed)), layout,
                             spec.data.within_outcomes, erfc=special.erfc, per_row=True)
    return data, spec, theta, moments, got


def test_adaptive_quadrature_is_exact_where_many_items_pin_the_factor_down():
    """Twelve items with loadings 2 (reliability 0.8 each): the factor's
    posterior SD is about 0.15. The adaptive rule matches SciPy's adaptive
    integration of each row to 5e-5 where the row's integrand has a peak
    (1e-6 for all rows but one on one machine, 1.2e-5 for that row on another), and
    to 5e-3 where all twelve answers sit in an end category (a one-sided,
    skewed integrand: the worst case; 15 nodes would bring it to 1e-4)."""
    items = [f"u{k}" for k in range(1, 13)]
    values = {f"f=~{u}": 2.0 for u in items[1:]}
    values.update({f"{u}|t{k}": t for u in items for k, t in enumerate([-1.5, 0.0, 1.2], start=1)})
    syntax = "f =~ 2*" + " + ".join(items)
    data, spec, theta, moments, got = single_level_setup(syntax, values, items, 25, seed=5)
    cuts = np.array([-np.inf, -1.5, 0.0, 1.2, np.inf])
    codes = data[items].to_numpy(int)

    def integrand(z, row):
        return np.prod(stats.norm.cdf(cuts[codes[row] + 1] - 2 * z) - stats.norm.cdf(cuts[codes[row]] - 2 * z)) \
            * stats.norm.pdf(z)

    from scipy import integrate
    expected = [np.log(integrate.quad(integrand, -8, 8, args=(row,), points=[0.0], epsabs=0, epsrel=1e-11,
                                      limit=200)[0]) for row in range(len(data))]
    extreme = (codes == 0).all(axis=1) | (codes == 3).all(axis=1)
    assert 0 < extreme.sum() < len(data)
    np.testing.assert_allclose(got[~extreme], np.array(expected)[~extreme], rtol=0, atol=5e-5)
    np.testing.assert_allclose(got[extreme], np.array(expected)[extreme], atol=5e-3)


def test_two_correlated_factors_are_integrated_exactly():
    """Two factors, two items each, correlated 0.5: each row's probability is
    the 4-dimensional normal rectangle (SciPy); 7 x 7 adaptive nodes reach 1e-4."""
    syntax = "f1 =~ u1 + u2\nf2 =~ u3 + u4\nf1 ~~ f2"
    values = {"f1=~u2": 1.2, "f2=~u4": 0.8, "f1~~f2": 0.5, "f1~~f1": 1.0, "f2~~f2": 1.0}
    values.update({f"u{k}|t1": -0.3 + 0.2 * k for k in range(1, 5)})
    values.update({f"u{k}|t2": 0.9 for k in range(1, 5)})
    data, spec, theta, moments, got = single_level_setup(syntax, values, ["u1", "u2", "u3", "u4"], 12, seed=2)
    observed = list(spec.within.observed)
    cuts = {name: np.array([values[f"{name}|t1"], values[f"{name}|t2"]]) for name in observed}
    recoded = data.assign(**{name: data[name] + 1 for name in observed})
    for row in range(6):  # SciPy's 4-dimensional CDF is slow
        expected = brute_force_logp(recoded.iloc[[row]], observed, observed, moments.Sigma,
                                    lambda r: np.zeros(4), cuts)
        assert got[row] == pytest.approx(expected, abs=1e-4)


def test_category_probabilities_keep_their_precision_in_both_tails():
    from bayes_msem.engines.ordinal import _normal_cdf_difference

    lower = np.array([9.0, -10.0, -0.5, 30.0])
    upper = np.array([10.0, -9.0, 0.5, 1e8])
    expected = stats.norm.sf(lower) - stats.norm.sf(upper)
    expected[1] = stats.norm.cdf(upper[1]) - stats.norm.cdf(lower[1])
    got = _normal_cdf_difference(lower, upper, special.erfc, np)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert got[0] > 0 and got[3] > 0


def test_single_level_loo_units_are_the_rows_likelihoods():
    """The per-row log-likelihood LOO uses equals the sampler's row terms at each draw."""
    from bayes_msem.engines import get_engine

    syntax = "f1 =~ u1 + u2\nf2 =~ u3 + u4\nf1 ~~ f2"
    values = {"f1=~u2": 1.2, "f2=~u4": 0.8, "f1~~f2": 0.5, "f1~~f1": 1.0, "f2~~f2": 1.0}
    values.update({f"u{k}|t1": -0.3 + 0.2 * k for k in range(1, 5)})
    values.update({f"u{k}|t2": 0.9 for k in range(1, 5)})
    data, spec, theta, moments, got = single_level_setup(syntax, values, ["u1", "u2", "u3", "u4"], 12, seed=2)
    draws = np.stack([theta, theta])[None]  # (chains, draws, parameters)
    loglik = get_engine("latent").unit_log_likelihood(spec, draws)
    assert loglik.shape == (1, 2, 12)
    np.testing.assert_allclose(loglik[0, 1], got)


@st.composite
def ordinal_cells(draw):
    """Codes of 1-5 rows of 1-4 ordinal variables with 2-5 categories each
    (missing values included), cut points padded as in a layout, latent
    means at 0-3 nodes per row and SDs."""
    rows, variables = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    categories = np.array(draw(st.lists(st.integers(2, 5), min_size=variables, max_size=variables)))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    codes = np.column_stack([rng.integers(-1, k, size=rows) for k in categories])
    cuts = np.full((variables, categories.max() + 1), BEYOND)
    cuts[:, 0] = -BEYOND
    for j, k in enumerate(categories):
        cuts[j, 1:k] = np.sort(rng.normal(scale=1.5, size=k - 1))
    nodes = draw(st.integers(0, 3))
    shape = (rows, nodes, variables) if nodes else (rows, variables)
    return codes, categories - 1, cuts, rng.normal(scale=2.0, size=shape), rng.uniform(0.3, 2.0, size=variables)


@settings(max_examples=60, deadline=None)
@given(ordinal_cells())
def test_rows_logp_by_category_group_equals_the_cellwise_definition(case):
    """Grouping cells by their category (one erfc for the bottom and top ones)
    changes nothing: each row's sum of log(Phi(upper) - Phi(lower)) over its
    observed values, from SciPy's normal CDF (its upper tail above 0), at
    every node."""
    from bayes_msem.engines.ordinal import category_cells, ordinal_rows_logp

    codes, top, cuts, means, sd = case
    got = ordinal_rows_logp(category_cells(codes, top), means, sd, cuts, special.erfc)
    inner = (slice(None),) + (None,) * (means.ndim - 2) + (slice(None),)
    safe = np.maximum(codes, 0)
    columns = np.arange(codes.shape[1])[None, :]
    upper = (cuts[columns, safe + 1][inner] - means) / sd
    lower = (cuts[columns, safe][inner] - means) / sd
    cells = np.log(np.where(lower > 0, stats.norm.sf(lower) - stats.norm.sf(upper),
                            stats.norm.cdf(upper) - stats.norm.cdf(lower)))
    expected = np.where((codes >= 0)[inner], cells, 0.0).sum(axis=-1)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("width", [0.0, 1e-17, 1e-9])
def test_a_middle_category_whose_thresholds_meet_keeps_finite_terms_when_compiled(width):
    """A nearly empty middle category lets warm-up try thresholds 1e-17 apart.
    Compiled by XLA, the Newton terms' density difference over the floored
    probability came out as 1e282 and its square as -inf, and the chain stuck
    (a NaN log density) for good. The terms are their narrow-interval limits
    (the midpoint and -1), the log probability log(width * density)."""
    import jax
    from jax.scipy.special import erfc

    from bayes_msem.engines.ordinal import _Items, category_cells, ordinal_rows_logp
    from bayes_msem.matrices import jax_backend

    jnp = jax_backend().xp
    codes = np.array([[1], [1], [0]])  # two rows in the middle category, one below it
    cuts = jnp.asarray([[-BEYOND, 0.3, 0.3 + width, BEYOND]])
    means, H, sd = jnp.asarray([[0.1], [-0.6], [0.0]]), jnp.asarray([[0.8]]), jnp.asarray([1.0])
    cells = category_cells(codes, np.array([2]))
    first, second = jax.jit(lambda x: _Items(cells, cuts, means, H, sd, erfc, jnp).newton_terms(x))(jnp.zeros((3, 1)))
    assert np.all(np.isfinite(first)) and np.all(np.isfinite(second))
    middle = 0.3 - np.array([0.1, -0.6])  # the standardized midpoints; derivatives of log phi(midpoint)
    np.testing.assert_allclose(np.asarray(first)[:2, 0], middle * 0.8, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(second)[:2, 0, 0], -0.8**2, rtol=1e-6)
    logp = jax.jit(jax.value_and_grad(lambda c: ordinal_rows_logp(cells, means, sd, c, erfc, jnp).sum()))
    value, gradient = logp(cuts)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    width = float(cuts[0, 2] - cuts[0, 1])  # 1e-17 rounds to 0 beside 0.3
    if width > 0:  # log(width * phi(midpoint)), summed with the bottom row's log Phi(0.3)
        expected = np.log(width * stats.norm.pdf(middle)).sum() + stats.norm.logcdf(0.3)
        # a width of 1e-9 carries the bounds' rounding (1e-17) as a relative error of 1e-8 in its log
        assert float(value) == pytest.approx(expected, abs=1e-6)


@settings(max_examples=5, deadline=None)  # each example compiles JAX's Hessian anew
@given(ordinal_cells(), st.integers(1, 2))
def test_newton_terms_are_the_derivatives_of_the_items_log_probability(case, factors):
    """The adaptive quadrature's Newton steps use each row's gradient and
    Hessian in the factors, written by hand per category group: equal to
    JAX's derivatives of the rows' summed log probability."""
    import jax
    from jax.scipy.special import erfc

    from bayes_msem.engines.ordinal import _Items, category_cells, ordinal_rows_logp
    from bayes_msem.matrices import jax_backend

    jnp = jax_backend().xp
    codes, top, cuts, means, sd = case
    means = means.reshape(means.shape[0], -1, means.shape[-1])[:, 0]  # one latent mean per row and variable
    rng = np.random.default_rng(codes.size)
    H = rng.normal(scale=0.8, size=(codes.shape[1], factors))
    xi = rng.normal(size=(codes.shape[0], factors))
    cells, cuts, means, H, sd = category_cells(codes, top), *map(jnp.asarray, (cuts, means, H, sd))
    # jitted: op by op, JAX compiled each small operation of each example on its own (6x slower)
    newton_terms = jax.jit(lambda x: _Items(cells, cuts, means, H, sd, erfc, jnp).newton_terms(x))
    gradient, hessian = newton_terms(jnp.asarray(xi))
    total = lambda x: ordinal_rows_logp(cells, means + x @ H.T, sd, cuts, erfc, jnp).sum()  # rows are independent
    np.testing.assert_allclose(gradient, jax.jit(jax.grad(total))(jnp.asarray(xi)), rtol=1e-7, atol=1e-9)
    full = jax.jit(jax.hessian(total))(jnp.asarray(xi))  # (rows, m, rows, m), block diagonal
    rows = np.arange(codes.shape[0])
    np.testing.assert_allclose(hessian, np.asarray(full)[rows, :, rows, :], rtol=1e-6, atol=1e-8)
