"""Results with missing values: multiple imputation (missing values drawn from
their exact conditional, observed values kept, one completed data set per
posterior draw, and, slow, imputed means that undo the bias of the complete
cases under MAR) and the covariance coverage in the summary and the report."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, reference_fit
from engines.test_crossed import CROSSED, CROSSED_BOTH_SLOPE, CROSSED_SLOPE, crossed_data
from engines.test_latent import TWO_LEVEL, simulate_two_level
from engines.test_missing import with_holes
from engines.test_ordinal_level_two import WITH_CONTINUOUS, random_values, user_data
from scipy import integrate, stats

import bayes_msem as bm
from bayes_msem.engines.ordinal import ordinal_layout
from bayes_msem.engines.parameters import parameter_names
from bayes_msem.imputation import _completed, _draw_conditional, _draw_level_2_outcomes, row_means
from bayes_msem.matrices import level_moments


def test_missing_entries_follow_their_conditional_normal():
    mean = np.array([1.0, -1.0, 0.5])
    cov = np.array([[2.0, 0.8, 0.3], [0.8, 1.0, 0.4], [0.3, 0.4, 1.5]])
    values = np.tile([np.nan, 0.2, np.nan], (20000, 1))
    drawn = _draw_conditional(np.tile(mean, (20000, 1)), cov, values, np.random.default_rng(1))
    m, o = [0, 2], [1]
    gain = cov[np.ix_(m, o)] / cov[1, 1]
    expected_mean = mean[m] + gain[:, 0] * (0.2 - mean[1])
    expected_cov = cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)]
    np.testing.assert_allclose(drawn[:, m].mean(0), expected_mean, atol=0.03)
    np.testing.assert_allclose(np.cov(drawn[:, m].T), expected_cov, atol=0.05)
    assert np.all(drawn[:, 1] == 0.2)


@pytest.fixture(scope="module")
def small_incomplete_fit():
    data = with_holes(simulate_two_level(clusters=30, size=6), seed=2, rate=0.2)
    data.index = data.index + 100  # the user's own row labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data, bm.Model(TWO_LEVEL, data, cluster="g").fit(draws=100, tune=150, chains=2, progressbar=False,
                                                                random_seed=1)


def test_imputations_keep_the_observed_values_and_fill_the_rest(small_incomplete_fit):
    data, result = small_incomplete_fit
    completed = result.impute(m=3, random_seed=4)
    assert len(completed) == 3 * len(data) and list(completed[".imp"].unique()) == [1, 2, 3]
    first = completed[completed[".imp"] == 1].set_index(".row")
    modelled = ["y1", "y2", "y3", "y4", "z"]
    assert first[modelled].notna().all().all() and list(first.index) == list(data.index)
    observed = data[modelled].notna()
    np.testing.assert_array_equal(first[modelled].to_numpy()[observed.to_numpy()],
                                  data[modelled].to_numpy()[observed.to_numpy()])
    assert first.groupby("g").z.nunique().max() == 1  # a level-2 value per cluster
    second = completed[completed[".imp"] == 2].set_index(".row")
    assert not np.allclose(first.y1[data.y1.isna().to_numpy()], second.y1[data.y1.isna().to_numpy()])


@pytest.mark.slow
def test_imputed_means_undo_the_complete_case_bias():
    """On mar_outcome.csv (y2 missing where y1 is high) the complete cases'
    mean of y2 is far below lavaan's full-information mean (-0.114, SE 0.095);
    the mean over imputations is within 0.2 of it."""
    data = pd.read_csv(DATA / "mar_outcome.csv")
    completed = reference_fit("mar_outcome").impute(m=10, random_seed=1)
    assert data.y2.mean() < -0.4
    assert abs(completed.y2.mean() - (-0.114)) < 0.2


def test_coverage_is_the_share_of_rows_with_both_observed(small_incomplete_fit):
    data, result = small_incomplete_fit
    coverage = result.coverage()
    observed = data[["y1", "y2", "y3", "y4"]].notna()
    assert coverage.loc["y1", "y2"] == pytest.approx((observed.y1 & observed.y2).mean())
    assert coverage.loc["y3", "y3"] == pytest.approx(observed.y3.mean())
    assert "Missing values (full information, MAR; no row dropped)" in str(result)
    from bayes_msem.html_report import report_html

    assert "Covariance coverage" in report_html(result)


def test_a_covariate_brought_into_the_model_keeps_its_role_in_the_results():
    """The result's parameter table is rebuilt with the covariate brought in, so
    standardized estimates and R-squared read the fitted rows with the right roles."""
    data = simulate_two_level(clusters=20, size=6)
    data.loc[data.index[::7], "x"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bm.Model(TWO_LEVEL, data, cluster="g").fit(draws=100, tune=150, chains=2, progressbar=False,
                                                            random_seed=2)
    table = result.parameter_table()
    assert "x" in table.level_roles(1).observed and "x" not in table.level_roles(1).covariates
    assert "x ~ x" not in str(result) and "Covariates with missing values brought into the model: x" in str(result)
    standardized = result.standardized().set_index(["lhs", "op", "rhs", "level"])
    assert np.isfinite(standardized.loc[("fw", "~", "x", "within"), "mean"])
    assert 0 < result.r_squared().set_index(["variable", "level"]).loc[("fw", "within"), "mean"] < 1


def test_with_random_slopes_each_row_is_imputed_around_its_clusters_regression():
    """The rows' means given the cluster effects, against y = mu + Pi x + Z_i u_j
    built from the definition (tests/engines/test_collapsed_slopes.py)."""
    from engines.test_collapsed_slopes import mediation_data, stacked_moments
    from engines.test_missing import SLOPES_ON_X, parameter_draw, spec_of

    from bayes_msem.imputation import row_means

    data = mediation_data(clusters=8)
    data.loc[data.index[::3], "y"] = np.nan
    spec = spec_of(data, SLOPES_ON_X, cluster="cluster")
    theta = parameter_draw(spec, 2)
    clusters = spec.layout.levels[1]
    effects = np.random.default_rng(3).normal(size=(spec.data.n_clusters, len(clusters.effects)))
    means = row_means(spec, theta, effects)
    order = [list(clusters.effects).index(name) for name in clusters.random_effects]
    for j in range(spec.data.n_clusters):
        _, _, _, Z, _ = stacked_moments(spec, theta, j)
        rows = np.flatnonzero(spec.data.cluster_index == j)
        within = bm.matrices.level_moments(theta, spec.within)
        fixed = within.mean + spec.data.within_covariates[rows] @ within.Pi.T
        expected = fixed + (Z @ effects[j, order]).reshape(len(rows), -1)
        np.testing.assert_allclose(means[rows], expected, rtol=1e-10, atol=1e-12)


def test_with_a_slope_on_a_modelled_variable_each_cluster_has_its_own_covariance():
    """b | y ~ m with m split: the rows' covariance carries the cluster's b_j, so
    the missing values are drawn cluster by cluster from it."""
    from engines.test_collapsed_slopes import mediation_data
    from engines.test_missing import parameter_draw, spec_of

    from bayes_msem.imputation import _completed, row_moments
    from bayes_msem.matrices import level_moments

    data = mediation_data(clusters=8)
    data.loc[data.index[::3], "y"] = np.nan
    spec = spec_of(data, bm.example_model("mediation_111_random_slopes"), cluster="cluster")
    theta = parameter_draw(spec, 2)
    clusters = spec.layout.levels[1]
    effects = np.random.default_rng(3).normal(scale=0.5, size=(spec.data.n_clusters, len(clusters.effects)))
    _, Sigma = row_moments(spec, theta, effects)
    b = list(clusters.effects).index("b")
    assert Sigma.shape == (8, 2, 2) and not np.allclose(Sigma[0], Sigma[1])
    own = level_moments(theta, spec.within, slope_values=effects[[3]][:, [list(clusters.effects).index(s)
                                                                          for s in spec.within.slopes]])
    np.testing.assert_allclose(Sigma[3], own.Sigma[0])
    assert effects[3, b] != effects[4, b]
    y, _ = _completed(spec, theta, effects, np.random.default_rng(1))
    observed = ~np.isnan(spec.data.within_outcomes)
    assert not np.isnan(y).any() and np.array_equal(y[observed], spec.data.within_outcomes[observed])


THREE_LEVEL_SLOPE = "level: 1\n  s | y ~ x\nlevel: 2\n  y ~ z\n  y ~~ s\nlevel: 3\n  y ~ w"


def units_and_effects(spec, rng):
    """Random effects for every cluster and every unit of the level above, keyed by label."""
    levels, data = spec.layout.levels, spec.data
    effects = rng.normal(size=(data.n_clusters, len(levels[1].effects)))
    unit_effects = rng.normal(size=(data.upper_levels[0].n_units, len(levels[2].effects)))
    by_label = [{str(label): dict(zip(level.effects, values)) for label, values in zip(labels, array)}
                for level, labels, array in ((levels[1], data.cluster_labels, effects),
                                             (levels[2], data.upper_levels[0].labels, unit_effects))]
    return effects, unit_effects, by_label


# s also varies over schools, and z's effect on the classes' y parts (t) too
SCHOOL_SLOPES = "level: 1\n  s | y ~ x\nlevel: 2\n  t | y ~ z\n  y ~~ s\nlevel: 3\n  y ~ w\n  s ~~ s\n  t ~~ y"


@pytest.mark.parametrize("syntax", [THREE_LEVEL_SLOPE, SCHOOL_SLOPES])
def test_three_level_rows_are_imputed_around_their_class_and_school(syntax):
    """A row's mean adds its class's parts and slope and its school's parts,
    by label (rows shuffled, text ids): y_i = b_class[y] + (b_class[s] +
    c_school[s]) x_i + c_school[t] z_class + c_school[y], a school's parts absent
    where the model has none; the drawn holes scatter around it with the
    pupils' variance."""
    frame = pd.read_csv(DATA / "three_level_slope_sim.csv").sample(frac=0.3, random_state=2)
    frame.loc[frame.index[::4], "y"] = np.nan
    spec = bm.Model(syntax, frame, cluster=["class", "school"]).spec
    rng = np.random.default_rng(5)
    theta = np.abs(rng.normal(size=len(parameter_names(spec)))) + 0.5
    effects, unit_effects, (classes, schools) = units_and_effects(spec, rng)
    rows = frame.loc[spec.data.row_labels]
    expected = [classes[c]["y"] + (classes[c]["s"] + schools[k].get("s", 0.0)) * x + schools[k].get("t", 0.0) * z
                + schools[k]["y"] for c, k, x, z in zip(rows["class"], rows["school"], rows["x"], rows["z"])]
    np.testing.assert_allclose(row_means(spec, theta, effects, unit_effects)[:, 0], expected, rtol=1e-12)
    y, _ = _completed(spec, theta, effects, rng, unit_effects=unit_effects)
    holes = np.isnan(spec.data.within_outcomes[:, 0])
    scaled = (y[holes, 0] - np.array(expected)[holes]) / np.sqrt(level_moments(theta, spec.within).Sigma[0, 0])
    assert abs(scaled.mean()) < 4 / np.sqrt(holes.sum()) and abs(scaled.std() - 1) < 0.15
    with pytest.raises(ValueError, match="needs the level-3 units' effects"):
        row_means(spec, theta, effects)


@pytest.mark.parametrize("syntax", [CROSSED, CROSSED_SLOPE, CROSSED_BOTH_SLOPE])
def test_cross_classified_rows_are_imputed_around_both_their_units(syntax):
    """A row's means add the split parts of its unit in each classification,
    by label, and a random slope its primary unit's slope s times x (to y1),
    and its secondary unit's where the slope varies there too."""
    frame = crossed_data(3, 6, 5, 60, holes=0.3)
    with pytest.warns(UserWarning, match="cross-classified"):
        spec = bm.Model(syntax, frame, cluster=["primary", "secondary"]).spec
    rng = np.random.default_rng(6)
    theta = np.abs(rng.normal(size=len(parameter_names(spec)))) + 0.5
    effects, unit_effects, (primary, secondary) = units_and_effects(spec, rng)
    within = level_moments(theta, spec.within)
    rows = frame.loc[spec.data.row_labels]
    names, levels = list(spec.within.observed), spec.layout.levels
    expected = [within.mean + within.Pi @ [x] + [primary[a].get(n, 0.0) * (n in levels[1].split) for n in names]
                + [secondary[b].get(n, 0.0) * (n in levels[2].split) for n in names]
                + [(primary[a].get("s", 0.0) + secondary[b].get("s", 0.0)) * x * (n == "y1") for n in names]
                for a, b, x in zip(rows["primary"], rows["secondary"], rows["x"])]
    np.testing.assert_allclose(row_means(spec, theta, effects, unit_effects), expected, rtol=1e-12)


# ---- ordinal variables ----------------------------------------------------------------------------------------

ORDINAL_PAIR = "u ~ x\ny ~ x"  # u ordinal, y continuous; their residuals covary (added by default)
PAIR_VALUES = {"u~x": 0.5, "y~x": -0.4, "y~1": 1.0, "y~~y": 2.0, "u~~y": 0.9, "u|t1": -0.5, "u|t2": 0.7}


def pair_spec(rows: pd.DataFrame):
    """The spec of ORDINAL_PAIR on ``rows`` and the parameter vector of PAIR_VALUES."""
    spec = bm.Model(ORDINAL_PAIR, rows, ordered=["u"]).spec
    theta = np.array([PAIR_VALUES[name] for name in parameter_names(spec)])
    return spec, theta


def test_missing_values_next_to_categories_follow_their_exact_conditional():
    """At fixed parameters, single-level u* = 0.5 x + e_u, y = 1 - 0.4 x + e_y,
    var(e_u) = 1, var(e_y) = 2, cov 0.9, u cut at -0.5 and 0.7. Each pattern
    repeated 4000 times: a missing y next to u = 2 has the mean and variance of
    y given u* in its cell (a truncated normal pushed through the regression
    of y on u*); a missing u next to y has the probit probabilities given y."""
    n = 4000
    rows = pd.DataFrame({"x": np.repeat([0.3, -1.0, 0.5, 0.0], n), "u": np.repeat([2.0, np.nan, 0.0, 1.0], n),
                         "y": np.repeat([np.nan, 2.5, 0.0, 0.0], n)})  # u = 1 present: no category merged
    spec, theta = pair_spec(rows)
    y, _ = _completed(spec, theta, None, np.random.default_rng(3), ordinal_layout(spec))
    u_at, y_at = list(spec.within.observed).index("u"), list(spec.within.observed).index("y")
    # y | u = 2 (u* > 0.7) at x = 0.3: u* - mu_u truncated below at 0.7 - 0.15
    cell = stats.truncnorm(0.7 - 0.15, np.inf)
    slope = 0.9 / 1.0
    mean = 1.0 - 0.4 * 0.3 + slope * cell.mean()
    variance = 2.0 - 0.9**2 + slope**2 * cell.var()
    drawn = y[:n, y_at]
    assert np.all(y[:n, u_at] == 2)
    assert abs(drawn.mean() - mean) < 4 * np.sqrt(variance / n)
    assert abs(drawn.var() - variance) < 0.1 * variance
    # u | y = 2.5 at x = -1: u* ~ N(-0.5 + 0.45 (2.5 - 1.4), 1 - 0.405)
    cond_mean, cond_sd = -0.5 + 0.45 * (2.5 - 1.4), np.sqrt(1 - 0.9**2 / 2.0)
    expected = np.diff(stats.norm.cdf((np.array([-np.inf, -0.5, 0.7, np.inf]) - cond_mean) / cond_sd))
    shares = np.bincount(y[n:2 * n, u_at].astype(int), minlength=3) / n
    np.testing.assert_allclose(shares, expected, atol=4 * np.sqrt(0.25 / n))
    np.testing.assert_array_equal(y[2 * n:], spec.data.within_outcomes[2 * n:])  # complete rows stay as they are


def test_missing_level_two_categories_and_values_follow_their_exact_conditional():
    """Given the school effects y_j at random parameters: v = a_v + b_vw w_j +
    e_v, z* = b_zy y_j + b_zw w_j + e_z (var 1, cov(e_z, e_v) = c), z cut at
    t1, t2; 1000 schools, 40% missing z and (apart) 40% missing v. A missing
    category has the probit probabilities of z* given v (or alone where v is
    missing too); a missing v next to a category has the mean of v given z* in
    its cell. Each summed over the schools it concerns, in standard errors."""
    frame = user_data(7, 1000, max_size=2, holes=0.4)  # (at most 1009 labels)
    spec = bm.Model(WITH_CONTINUOUS, frame, cluster="cluster", ordered=["z"]).spec
    rng = np.random.default_rng(7)
    p = random_values(spec, rng)
    clusters = spec.layout.levels[1]
    effects = rng.normal(size=(spec.data.n_clusters, len(clusters.effects)))
    observed = spec.data.between_outcomes
    completed = _draw_level_2_outcomes(spec, np.array([p[n] for n in parameter_names(spec)]), effects,
                                       observed.copy(), rng)

    z_at, v_at = list(clusters.outcomes).index("z"), list(clusters.outcomes).index("v")
    w = spec.data.between_covariates[:, list(clusters.structure.covariates).index("w")]
    mean_v = p["v~1|between"] + p["v~w|between"] * w
    mean_z = p["z~y|between"] * effects[:, list(clusters.effects).index("y")] + p["z~w|between"] * w
    c, s_v = p["z~~v|between"], p["v~~v|between"]
    cuts = np.array([-np.inf, p["z|t1"], p["z|t2"], np.inf])
    z, v = observed[:, z_at], observed[:, v_at]
    seen = ~np.isnan(observed)
    np.testing.assert_array_equal(completed[seen], observed[seen])
    assert not np.isnan(completed).any()

    no_z = ~seen[:, z_at]  # z* | v (or z* alone): normal, so the category shares are probit cells
    given_v = np.where(seen[:, v_at], c / s_v * (np.nan_to_num(v) - mean_v), 0.0)
    sd = np.where(seen[:, v_at], np.sqrt(1 - c**2 / s_v), 1.0)
    shares = np.diff(stats.norm.cdf((cuts[None, :] - (mean_z + given_v)[:, None]) / sd[:, None]), axis=1)[no_z]
    drawn = np.eye(3)[completed[no_z, z_at].astype(int)]
    gaps = (drawn - shares).sum(axis=0) / np.sqrt((shares * (1 - shares)).sum(axis=0))
    assert np.all(np.abs(gaps) < 4.5), gaps

    no_v = seen[:, z_at] & ~seen[:, v_at]  # v | z* in its cell: a truncated normal through the regression on z*
    k = z[no_v].astype(int)
    cell = stats.truncnorm(cuts[k] - mean_z[no_v], cuts[k + 1] - mean_z[no_v])
    expected, variance = mean_v[no_v] + c * cell.mean(), s_v - c**2 + c**2 * cell.var()
    gap = (completed[no_v, v_at] - expected).sum() / np.sqrt(variance.sum())
    assert abs(gap) < 4.5, gap


def test_a_missing_item_among_strongly_loading_items_follows_its_exact_conditional():
    """One factor, ten 3-category items (u1's loading 1, the others 8: their
    latent responses correlate 0.985, where single-variable Gibbs sweeps could
    mix slowly), thresholds -0.5 and 0.7. 2000 rows with u1..u3 in the top
    category, u4..u9 in the middle one and u10 missing: its imputed shares
    against the exact conditional, the factor integrated by SciPy's quadrature.
    Measured with 2, 30, 100 and 2000 sweeps: all within 1.5 SE, so the slow
    mixing feared for such items does not show here (no sweeps at all fails)."""
    items = [f"u{k}" for k in range(1, 11)]
    n, loading, cuts = 2000, 8.0, np.array([-np.inf, -0.5, 0.7, np.inf])
    pattern = {u: (2.0 if k < 3 else 1.0) for k, u in enumerate(items[:9])} | {"u10": np.nan}
    filler = pd.DataFrame({u: np.tile([0.0, 1.0, 2.0], 10) for u in items})  # every category occurs
    rows = pd.concat([pd.DataFrame(pattern, index=range(n)), filler], ignore_index=True)
    spec = bm.Model("f =~ " + " + ".join(items), rows, ordered=items).spec
    names = parameter_names(spec)
    values = {name: loading if "=~" in name else 1.0 if name == "f~~f" else
              cuts[1] if name.endswith("|t1") else cuts[2] if name.endswith("|t2") else 0.0 for name in names}
    y, _ = _completed(spec, np.array([values[name] for name in names]), None, np.random.default_rng(3),
                      ordinal_layout(spec))
    shares = np.bincount(y[:n, list(spec.within.observed).index("u10")].astype(int), minlength=3) / n

    lam = np.array([1.0] + [loading] * 9)

    def cell(f, j, k):
        return stats.norm.cdf(cuts[k + 1] - lam[j] * f) - stats.norm.cdf(cuts[k] - lam[j] * f)

    def joint(f, k):
        return stats.norm.pdf(f) * np.prod([cell(f, j, 2 if j < 3 else 1) for j in range(9)]) * cell(f, 9, k)

    exact = np.array([integrate.quad(joint, -3, 3, args=(k,), points=[0.0], limit=200)[0] for k in range(3)])
    exact /= exact.sum()
    assert np.all(np.abs(shares - exact) < 4 * np.sqrt(exact * (1 - exact) / n)), (shares, exact)


@pytest.fixture(scope="module")
def incomplete_ordinal_fit():
    rng = np.random.default_rng(8)
    cluster = np.repeat(np.arange(30), 5)
    factor = rng.standard_normal(150) + 0.5 * rng.standard_normal(30)[cluster]
    items = {f"u{k}": np.digitize(0.8 * factor + rng.standard_normal(150), [-0.5, 0.6]) + 1 for k in (1, 2, 3)}
    data = pd.DataFrame({"school": [f"s{(3 * c) % 31}" for c in cluster], **items})
    data["u1"] = pd.Categorical(np.array(["never", "sometimes", "often"])[data["u1"] - 1],
                                categories=["never", "sometimes", "often"], ordered=True)
    data = data.sample(frac=1, random_state=1)
    data.loc[data.index[::7], "u2"] = np.nan
    data.loc[data.index[::9], "u1"] = np.nan
    model = bm.Model("level: 1\n fw =~ u1 + u2 + u3\nlevel: 2\n fb =~ u1 + u2 + u3", data, cluster="school",
                     ordered=["u1", "u2", "u3"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data, model.fit(draws=50, tune=100, chains=1, random_seed=2, progressbar=False)


def test_imputed_categories_are_the_users_categories(incomplete_ordinal_fit):
    data, result = incomplete_ordinal_fit
    completed = result.impute(m=2, random_seed=1)
    assert completed[["u1", "u2", "u3"]].notna().all().all()
    first = completed[completed[".imp"] == 1].set_index(".row").loc[data.index]
    assert list(first["u1"].cat.categories) == ["never", "sometimes", "often"]
    seen = data["u1"].notna()
    assert (first["u1"][seen] == data["u1"][seen]).all() and (first["u2"][data.u2.notna()] == data.u2.dropna()).all()
    assert set(first["u2"].unique()) <= {1.0, 2.0, 3.0}
