"""Three-level models with variables observed above the rows: a class-level
outcome (one value per class, modelled at level 2 only) and a school-level
outcome (one value per school, level 3). The collapsed engine's density
equals the normal density of each school's observations stacked (its rows,
its classes' outcomes, its own outcome), written from the model's definition
unit by unit; the effects follow their exact Gaussian conditional; on data as
users bring them (rows shuffled, text ids out of order, unequal sizes, holes)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from bayes_msem.engines.collapsed import collapsed_logp
from bayes_msem.matrices import NUMPY_BACKEND, jax_backend, level_moments
from bayes_msem.spec import build_spec
from engines.test_three_level import assert_draws_follow, observed_logpdf, random_theta, three_level_data
from engines.test_three_level_missing import with_holes

# q: a class outcome of the class part of y1 and the class covariate z; v: a school outcome of the
# school factor and w, correlated with y2's school part.
OUTCOMES = """level: 1
  fw =~ y1 + y2 + y3
  y1 ~ x
level: 2
  y1 ~ z
  q ~ y1 + z
  y1 ~~ y2
level: 3
  fb =~ y1 + y2 + y3
  fb ~ w
  v ~ fb + w
"""
# The same outcomes beside a random slope of x over classes (the slope engine), q regressed on the slope.
SLOPE_OUTCOMES = """level: 1
  s | y1 ~ x
  y2 ~ x
level: 2
  y1 ~ z
  q ~ s + z
  y1 ~~ s
level: 3
  y1 ~ w
  v ~ y1 + w
  v ~~ y2
"""
# q named at level 3 too: a part per class and per school (Mplus's default for a class-level variable),
# its school part correlated with y1's.
SPLIT_OUTCOMES = OUTCOMES + "  q ~ w\n  q ~~ y1\n"
MODELS = pytest.mark.parametrize("syntax", [OUTCOMES, SLOPE_OUTCOMES], ids=["intercepts", "random slope"])
ALL_MODELS = pytest.mark.parametrize("syntax", [OUTCOMES, SLOPE_OUTCOMES, SPLIT_OUTCOMES],
                                     ids=["intercepts", "random slope", "class outcome split over schools"])
UNIT_WARNINGS = "units in 'school'|clusters in 'class'"


def outcome_data(seed: int, schools: int, max_classes: int, max_pupils: int) -> pd.DataFrame:
    """:func:`three_level_data` with a class outcome q and a school outcome v,
    each repeated on its unit's rows."""
    data = three_level_data(seed, schools, max_classes, max_pupils)
    rng = np.random.default_rng(seed + 1)
    q = {label: value for label, value in zip(data["class"].unique(), rng.normal(size=data["class"].nunique()))}
    v = {label: value for label, value in zip(data["school"].unique(), rng.normal(size=data["school"].nunique()))}
    return data.assign(q=data["class"].map(q), v=data["school"].map(v))


def school_moments(spec, theta, school: pd.DataFrame):
    """The normal of a school's observations stacked (its rows' variables, row
    by row, then each class's level-2 outcomes, then its own level-3 outcomes)
    and of its effects (each class's, then its own), from the definition:
    every observation is the sum of the nodes of the same name of the units
    it lies in (a random slope's node times the row's covariate), each unit's
    nodes with their level's moments given the unit's covariates. Returns the
    observations' values (NaN where missing), mean and covariance, the classes
    in order, and the effects' mean, covariance and covariance with the
    observations."""
    levels = spec.layout.levels
    names = list(spec.within.observed)
    moments = [level_moments(theta, level.structure) for level in levels]
    classes = list(dict.fromkeys(school["class"]))
    n, p = len(school), len(names)
    z_names, v_names = list(levels[1].outcomes), list(levels[2].outcomes)
    size = n * p + len(classes) * len(z_names) + len(v_names)
    values = np.concatenate([school[names].to_numpy().ravel(),
                             np.concatenate([school.loc[school["class"] == c, z_names].iloc[0] for c in classes]
                                            ) if z_names else np.zeros(0),
                             school[v_names].iloc[0].to_numpy(float)])

    def loading(level, class_label):
        """(observations, that level's nodes) for one unit of ``level`` (a class, or the school)."""
        nodes = levels[level].nodes
        out = np.zeros((size, len(nodes)))
        for i, (_, row) in enumerate(school.iterrows()):
            if level == 1 and row["class"] != class_label:
                continue
            for a, name in enumerate(names):
                if name in nodes:
                    out[i * p + a, nodes.index(name)] = 1.0
            if "s" in nodes:
                out[i * p + names.index("y1"), nodes.index("s")] = row["x"]
        for c, label in enumerate(classes):
            for a, name in enumerate(z_names):
                if name in nodes and (level == 2 or label == class_label):
                    out[n * p + c * len(z_names) + a, nodes.index(name)] = 1.0
        for a, name in enumerate(v_names):
            if level == 2:
                out[size - len(v_names) + a, nodes.index(name)] = 1.0
        return out

    mean, cov = np.zeros(size), np.zeros((size, size))
    for i, (_, row) in enumerate(school.iterrows()):  # the rows' own level
        x = row[list(levels[0].structure.covariates)].to_numpy(float)
        mean[i * p:(i + 1) * p] = moments[0].mean + moments[0].Pi @ x
        cov[i * p:(i + 1) * p, i * p:(i + 1) * p] = moments[0].Sigma
    units = [(1, c, school.loc[school["class"] == c].iloc[0]) for c in classes] + [(2, None, school.iloc[0])]
    effect_means, effect_blocks, crosses = [], [], []
    for level, label, first in units:
        covariates = first[list(levels[level].structure.covariates)].to_numpy(float)[None]
        node_mean, node_cov = moments[level].node_moments(covariates)
        L = loading(level, label)
        mean += L @ node_mean[0]
        cov += L @ node_cov @ L.T
        picks = [levels[level].nodes.index(name) for name in levels[level].effects]
        effect_means.append(node_mean[0][picks])
        effect_blocks.append(node_cov[np.ix_(picks, picks)])
        crosses.append(L @ node_cov[:, picks])
    effects_cov = np.zeros((sum(len(b) for b in effect_blocks),) * 2)
    start = 0
    for block in effect_blocks:
        effects_cov[start:start + len(block), start:start + len(block)] = block
        start += len(block)
    return values, mean, cov, classes, np.concatenate(effect_means), effects_cov, np.concatenate(crosses, axis=1)


def stacked_logp(spec, theta, data: pd.DataFrame) -> float:
    """Sum over schools of the normal density of each school's observed values (:func:`school_moments`)."""
    total = 0.0
    for _, school in data.groupby("school"):
        values, mean, cov = school_moments(spec, theta, school)[:3]
        total += observed_logpdf(mean, cov, values)
    return total


def outcome_spec(syntax: str, data: pd.DataFrame):
    with pytest.warns(UserWarning, match=UNIT_WARNINGS):
        return build_spec(syntax, data, cluster=["class", "school"])


@ALL_MODELS
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), schools=st.integers(2, 6), max_classes=st.integers(2, 4),
       max_pupils=st.integers(2, 5))
def test_density_with_class_and_school_outcomes_equals_the_stacked_normal(syntax, seed, schools, max_classes,
                                                                         max_pupils):
    data = outcome_data(seed, schools, max_classes, max_pupils)
    spec = outcome_spec(syntax, data)
    theta = random_theta(spec, seed)
    assert float(collapsed_logp(spec, theta, NUMPY_BACKEND)) == pytest.approx(stacked_logp(spec, theta, data),
                                                                             rel=1e-9)


@MODELS
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), schools=st.integers(2, 5))
def test_density_with_holes_in_rows_and_class_outcomes_equals_the_stacked_normal(syntax, seed, schools):
    """Holes in the rows' variables and in the class outcome (given on no row of some classes)."""
    data = with_holes(outcome_data(seed, schools, max_classes=3, max_pupils=4), seed, rate=0.2)
    dropped = data["class"].isin(data["class"].drop_duplicates().sample(frac=0.3, random_state=seed % 2**32))
    data.loc[dropped, "q"] = np.nan
    spec = outcome_spec(syntax, data)
    theta = random_theta(spec, seed)
    assert float(collapsed_logp(spec, theta, NUMPY_BACKEND)) == pytest.approx(stacked_logp(spec, theta, data),
                                                                             rel=1e-9)


@ALL_MODELS
def test_each_schools_density_and_the_backends(syntax):
    """LOO's per-school terms are each school's stacked normal; JAX and the
    sampler's PyTensor graph give the NumPy value."""
    import pytensor
    import pytensor.tensor as pt

    from bayes_msem.engines.collapsed import three_level_unit_log_likelihood
    from bayes_msem.engines.latent import PYTENSOR_BACKEND

    data = outcome_data(11, schools=5, max_classes=3, max_pupils=4)
    spec = outcome_spec(syntax, data)
    theta = random_theta(spec, 12)
    per_unit = three_level_unit_log_likelihood(spec, theta[None, None])[0, 0]
    labels = [str(label) for label in spec.data.upper_levels[0].labels]
    np.testing.assert_allclose(per_unit, [stacked_logp(spec, theta, data[data.school == s]) for s in labels],
                               rtol=1e-9)
    expected = collapsed_logp(spec, theta, NUMPY_BACKEND)
    assert float(collapsed_logp(spec, theta, jax_backend())) == pytest.approx(expected, rel=1e-10)
    values = pt.dvector("theta")
    assert float(pytensor.function([values], collapsed_logp(spec, values, PYTENSOR_BACKEND), mode="JAX")(theta)) == \
        pytest.approx(expected, rel=1e-10)


@ALL_MODELS
def test_effects_given_class_and_school_outcomes_follow_their_exact_conditional(syntax):
    data = outcome_data(5, schools=3, max_classes=3, max_pupils=4)
    spec = outcome_spec(syntax, data)
    theta = random_theta(spec, 6)

    def exact(school):
        values, mean, cov, classes, effects_mean, effects_cov, cross = school_moments(spec, theta,
                                                                                    data[data.school == school])
        gain = np.linalg.solve(cov, cross).T
        return effects_mean + gain @ (values - mean), effects_cov - gain @ cross, classes

    assert_draws_follow(spec, theta, exact)


@pytest.mark.parametrize("syntax, words", [
    ("level: 1\n s | y1 ~ x\nlevel: 2\n q ~ z\nlevel: 3\n y1 ~ w\n q ~ w", "q, observed at level 2, also named at level 3"),
    ("level: 1\n s | y1 ~ x\nlevel: 2\n q ~ s\nlevel: 3\n s ~~ s", "level-2 outcomes \\(q\\) beside random slopes"),
])
def test_outcomes_above_rows_the_engine_cannot_take_are_refused_with_the_reason(syntax, words):
    import bayes_msem as bm

    with pytest.raises(ValueError, match=words), pytest.warns(UserWarning, match=UNIT_WARNINGS):
        bm.Model(syntax, outcome_data(3, schools=6, max_classes=3, max_pupils=4), cluster=["class", "school"])


def test_a_school_outcome_missing_for_a_school_is_refused_with_its_name():
    from bayes_msem.errors import DataError

    data = outcome_data(3, schools=6, max_classes=3, max_pupils=4)
    data.loc[data.school == data.school.iloc[0], "v"] = np.nan
    with pytest.raises(DataError, match="'v', observed only at the level of 'school', is missing for 1 unit"), \
            pytest.warns(UserWarning, match=UNIT_WARNINGS):
        build_spec(OUTCOMES, data, cluster=["class", "school"])


def test_a_school_outcome_that_varies_within_a_school_is_refused():
    from bayes_msem.errors import DataError

    data = outcome_data(3, schools=6, max_classes=3, max_pupils=4)
    data.loc[data.index[0], "v"] += 1.0
    with pytest.raises(DataError, match="'v' is named only in the level: 3 block but varies within"), \
            pytest.warns(UserWarning, match=UNIT_WARNINGS):
        build_spec(OUTCOMES, data, cluster=["class", "school"])


# ---- a fit against maximum likelihood, from the density written out by hand ----------------------------------

# y split over pupils, classes and schools; q a class outcome of the class part of y, with a part per
# school too; v a school outcome of the school part of y.
FIT_MODEL = """level: 1
  y ~ x
level: 2
  y ~ z
  q ~ y + z
level: 3
  y ~ w
  q ~ w
  v ~ y + w
"""
TRUTH = {"y~x|within": 0.5, "y~z|class": 0.2, "q~y|class": 0.6, "q~z|class": 0.3, "y~w|school": 0.3,
         "q~w|school": 0.3, "q~~q|school": 0.3, "q~~v|school": 0.2, "v~y|school": 0.8, "v~w|school": -0.4}
ML_NAMES = ["y~x|within", "y~~y|within", "y~z|class", "y~~y|class", "q~y|class", "q~z|class", "q~~q|class",
            "y~1|school", "y~w|school", "y~~y|school", "v~1|school", "v~y|school", "v~w|school", "v~~v|school",
            "q~1|school", "q~w|school", "q~~q|school", "q~~v|school"]


def school_arrays(school: pd.DataFrame) -> dict:
    """What :func:`school_logp` reads from one school's rows."""
    classes = list(dict.fromkeys(school["class"]))
    first = school.groupby("class", sort=False).first().loc[classes]
    labels = school["class"].to_numpy()
    return {"x": school.x.to_numpy(), "z_rows": school.z.to_numpy(), "z": first["z"].to_numpy(),
            "w": school["w"].iloc[0], "same": (labels[:, None] == labels[None]).astype(float),
            "member": (labels[:, None] == np.array(classes)[None]).astype(float),  # rows x classes
            "values": np.concatenate([school.y, first["q"], [school["v"].iloc[0]]])}


def school_logp(school: dict, b_x, s_w, b_yz, s_b, b_qy, b_qz, s_q, a_y, b_yw, s_s, a_v, b_vy, b_vw, s_v, a_q, b_qw,
                s_qs, c_qv) -> float:
    """log p(rows' y, classes' q, v) of one school (:func:`school_arrays`), the
    normal written out: y = b_x x + e + y_b + y_s with y_b = b_yz z + u and
    y_s = a_y + b_yw w + u_s; q = b_qy y_b + b_qz z + e_q + q_s with
    q_s = a_q + b_qw w + u_q; v = a_v + b_vy y_s + b_vw w + e_v, cov(u_q, e_v) = c_qv."""
    w, z, member = school["w"], school["z"], school["member"]
    mean = np.concatenate([b_x * school["x"] + b_yz * school["z_rows"] + a_y + b_yw * w,
                           a_q + b_qw * w + (b_qy * b_yz + b_qz) * z, [a_v + b_vy * (a_y + b_yw * w) + b_vw * w]])
    n, k = member.shape
    cov = np.zeros((n + k + 1,) * 2)
    cov[:n, :n] = s_w * np.eye(n) + s_b * school["same"] + s_s
    cov[n:n + k, :n] = b_qy * s_b * member.T
    cov[n:n + k, n:n + k] = (b_qy**2 * s_b + s_q) * np.eye(k) + s_qs
    cov[-1, :n] = b_vy * s_s
    cov[-1, n:n + k] = c_qv
    cov[-1, -1] = b_vy**2 * s_s + s_v
    cov = np.tril(cov) + np.tril(cov, -1).T
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, school["values"] - mean)
    return float(-0.5 * (len(mean) * np.log(2 * np.pi) + white @ white) - np.log(np.diag(chol)).sum())


def maximum_likelihood(data: pd.DataFrame) -> dict:
    variances = [1, 3, 6, 9, 13, 16]  # positions of the variances, fitted on the log scale

    def unpack(x):
        x = np.array(x, dtype=float)
        x[variances] = np.exp(x[variances])
        return x

    schools = [school_arrays(school) for _, school in data.groupby("school")]
    result = optimize.minimize(lambda x: -sum(school_logp(s, *unpack(x)) for s in schools), np.zeros(18),
                               method="BFGS")
    assert np.abs(result.jac).max() < 1e-2, result.message
    return dict(zip(ML_NAMES, unpack(result.x)))


@pytest.fixture(scope="module")
def outcome_fit():
    """70 schools of 2-4 classes of 3-12 pupils simulated from TRUTH, rows
    shuffled, ids relabelled as text out of order."""
    import bayes_msem as bm

    rng = np.random.default_rng(21)
    classes = 210
    data = bm.simulate_data(FIT_MODEL, TRUTH, n_clusters=classes, cluster_size=rng.integers(3, 13, size=classes),
                            n_units=70, cluster=["class", "school"], seed=22)
    data = data.assign(**{"class": "c" + (1000 - data["class"]).astype(str),
                          "school": "s" + ((data["school"] * 37) % 71).astype(str)})
    data = data.iloc[rng.permutation(len(data))]
    fit = bm.Model(FIT_MODEL, data, cluster=["class", "school"]).fit(draws=500, tune=500, chains=2, random_seed=23,
                                                                     progressbar=False)
    return data, fit


@pytest.mark.slow
def test_fit_with_class_and_school_outcomes_agrees_with_maximum_likelihood(outcome_fit):
    """Posterior medians within 0.3 posterior SDs of the ML estimates (0.5
    for the variances, whose posteriors are skewed)."""
    from engines.test_ordinal_level_two import posterior_draws

    data, fit = outcome_fit
    assert fit.diagnostics()["divergences"] == 0
    posterior = fit.idata.posterior
    for name, estimate in maximum_likelihood(data).items():
        draws = posterior_draws(posterior, name).ravel()
        limit = 0.5 if "~~" in name else 0.3
        assert abs(np.median(draws) - estimate) < limit * draws.std(), (name, np.median(draws), estimate)


@pytest.mark.slow
def test_school_effects_and_loo_units_with_school_outcomes(outcome_fit):
    """Each school's y part is drawn given its own outcome v too: its mean
    follows v beyond what the rows say (v ~ y at level 3, slope 0.8), and LOO
    has one term per school."""
    data, fit = outcome_fit
    effects = fit.cluster_effects()
    schools = effects[(effects.level == "school") & (effects.variable == "y")].set_index("cluster")
    assert len(schools) == data.school.nunique()
    v = data.groupby("school").v.first().loc[schools.index]
    assert np.corrcoef(schools["mean"], v)[0, 1] > 0.5
    assert fit.loo().n_data_points == data.school.nunique()


@pytest.mark.slow
def test_icc_of_a_class_outcome_split_over_schools(outcome_fit):
    """q is constant within classes (ICC 1 at the class level); its schools'
    share of its variance agrees with the one-way ANOVA estimate from the
    classes' values (70 schools of 2-4 classes: within 0.2)."""
    data, fit = outcome_fit
    icc = fit.icc().set_index(["variable", "level"])["mean"]
    assert icc["q", "class"] == pytest.approx(1.0)
    classes = data.groupby("class").agg(q=("q", "first"), school=("school", "first"))
    groups = classes.groupby("school").q
    sizes = groups.size()
    n0 = (len(classes) - (sizes**2).sum() / len(classes)) / (len(sizes) - 1)
    between = (sizes * (groups.mean() - classes.q.mean()) ** 2).sum() / (len(sizes) - 1)
    within = ((classes.q - groups.transform("mean")) ** 2).sum() / (len(classes) - len(sizes))
    anova = (between - within) / n0 / ((between - within) / n0 + within)
    assert abs(icc["q", "school"] - anova) < 0.2, (icc["q", "school"], anova)
    assert 0.0 < icc["q", "school"] < 1.0
