"""Three-level models in the collapsed engine: the density with the level-2 and
level-3 effects integrated out equals the multivariate normal of each level-3
unit's rows stacked, written from the model's definition (every row the sum
of its parts at each level); on data as users bring them (rows shuffled, text
ids out of order, unequal classes and schools)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bayes_msem.engines.collapsed import collapsed_logp
from bayes_msem.matrices import NUMPY_BACKEND, jax_backend, level_moments
from bayes_msem.spec import build_spec

# y1, y2 have a part at every level, y3 at levels 1 and 3 only; a factor at levels 1 and 3,
# covariates at every level, a level-2 covariance.
THREE_LEVEL = """level: 1
  fw =~ y1 + y2 + y3
  y1 ~ x
level: 2
  y1 ~ z
  y1 ~~ y2
level: 3
  fb =~ y1 + y2 + y3
  fb ~ w
"""


def three_level_data(seed: int, schools: int, max_classes: int, max_pupils: int) -> pd.DataFrame:
    """Pupils in classes in schools, unequal sizes, with text ids whose order differs
    from the order of the rows, rows shuffled."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(schools):
        w = rng.normal()
        for c in range(rng.integers(1, max_classes + 1) if s else max_classes):  # school 0 has several classes
            n = int(rng.integers(1, max_pupils + 1)) if (s, c) != (0, 0) else max_pupils
            z, u = rng.normal(), rng.normal(size=3) * 0.5
            y = rng.normal(size=(n, 3)) + u + 0.4 * w
            frames.append(pd.DataFrame({"school": f"s{(7 * s) % 11}-{s}", "class": f"k{c}/{s}", "w": w, "z": z,
                                        "x": rng.normal(size=n), "y1": y[:, 0], "y2": y[:, 1], "y3": y[:, 2]}))
    data = pd.concat(frames, ignore_index=True)
    return data.iloc[rng.permutation(len(data))]


def random_theta(spec, seed: int) -> np.ndarray:
    """Starting values moved at random; variances kept positive, covariances small."""
    rng = np.random.default_rng(seed)
    theta = np.array(spec.starts) + rng.normal(scale=0.3, size=len(spec.starts))
    kinds = np.array(spec.kinds)
    theta[kinds == "variance"] = np.abs(theta[kinds == "variance"]) + 0.2
    theta[kinds == "covariance"] *= 0.1
    return theta


def stacked_logp(spec, theta, data: pd.DataFrame) -> float:
    """Sum over schools of the normal density of the school's rows stacked,
    built from the definition: y_i = m + Pi x_i + e_i + (part of its class) +
    (part of its school), each part's moments from its level's matrices, by name."""
    names = spec.within.observed
    moments = [level_moments(theta, level.structure) for level in spec.layout.levels]
    structures = [level.structure for level in spec.layout.levels]

    def loading(level):  # rows' variables x that level's observed parts (1 where the part is the same variable)
        return np.array([[float(a == b) for b in structures[level].observed] for a in names])

    total = 0.0
    for _, school in data.groupby("school"):
        n = len(school)
        same_class = (school["class"].to_numpy()[:, None] == school["class"].to_numpy()[None]).astype(float)
        mean = []
        for _, row in school.iterrows():
            m = moments[0].mean + moments[0].Pi @ row[list(structures[0].covariates)].to_numpy(float)
            for level in (1, 2):
                covariates = row[list(structures[level].covariates)].to_numpy(float)
                m = m + loading(level) @ (moments[level].mean + moments[level].Pi @ covariates)
            mean.append(m)
        cov = (np.kron(np.eye(n), moments[0].Sigma)
               + np.kron(same_class, loading(1) @ moments[1].Sigma @ loading(1).T)
               + np.kron(np.ones((n, n)), loading(2) @ moments[2].Sigma @ loading(2).T))
        total += observed_logpdf(np.concatenate(mean), cov, school[list(names)].to_numpy().ravel())
    return total


def observed_logpdf(mean: np.ndarray, cov: np.ndarray, values: np.ndarray) -> float:
    """The normal density of the observed entries of ``values`` (missing: NaN)."""
    seen = ~np.isnan(values)
    if not seen.any():
        return 0.0
    return stats.multivariate_normal(mean[seen], cov[np.ix_(seen, seen)]).logpdf(values[seen])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), schools=st.integers(2, 6), max_classes=st.integers(2, 4),
       max_pupils=st.integers(2, 5))
def test_three_level_density_equals_the_stacked_normal(seed, schools, max_classes, max_pupils):
    check_density(THREE_LEVEL, stacked_logp, three_level_data(seed, schools, max_classes, max_pupils), seed)


def check_density(syntax: str, stacked, data: pd.DataFrame, seed: int) -> None:
    """The engine's density of ``syntax`` on ``data`` at random parameters equals ``stacked``'s."""
    with pytest.warns(UserWarning, match="units in 'school'|clusters in 'class'"):
        spec = build_spec(syntax, data, cluster=["class", "school"])
    theta = random_theta(spec, seed)
    assert float(collapsed_logp(spec, theta, NUMPY_BACKEND)) == pytest.approx(stacked(spec, theta, data), rel=1e-9)


def test_three_level_density_is_the_same_in_jax_and_pytensor():
    import pytensor
    import pytensor.tensor as pt

    from bayes_msem.engines.latent import PYTENSOR_BACKEND

    data = three_level_data(3, schools=12, max_classes=3, max_pupils=4)
    spec = build_spec(THREE_LEVEL, data, cluster=["class", "school"])
    theta = random_theta(spec, 4)
    expected = collapsed_logp(spec, theta, NUMPY_BACKEND)
    assert float(collapsed_logp(spec, theta, jax_backend())) == pytest.approx(expected, rel=1e-10)
    values = pt.dvector("theta")
    function = pytensor.function([values], collapsed_logp(spec, values, PYTENSOR_BACKEND), mode="JAX")
    assert float(function(theta)) == pytest.approx(expected, rel=1e-10)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), schools=st.integers(2, 5))
def test_each_schools_density_is_its_stacked_normal(seed, schools):
    """The per-unit terms (LOO's units) are each school's own density, labelled by school."""
    from bayes_msem.engines.collapsed import three_level_unit_log_likelihood

    data = three_level_data(seed, schools, max_classes=3, max_pupils=4)
    with pytest.warns(UserWarning, match="units in 'school'|clusters in 'class'"):
        spec = build_spec(THREE_LEVEL, data, cluster=["class", "school"])
    theta = np.stack([random_theta(spec, seed), random_theta(spec, seed + 1)])
    per_unit = three_level_unit_log_likelihood(spec, theta[None])[0]  # (draws, schools)
    labels = [str(label) for label in spec.data.upper_levels[0].labels]
    for d in range(2):
        expected = [stacked_logp(spec, theta[d], data[data.school == label]) for label in labels]
        np.testing.assert_allclose(per_unit[d], expected, rtol=1e-9)
        assert per_unit[d].sum() == pytest.approx(collapsed_logp(spec, theta[d], NUMPY_BACKEND), rel=1e-9)


def exact_effect_moments(spec, theta, data: pd.DataFrame, school: str):
    """Mean and covariance of a school's effects (its classes' level-2 effects,
    then its own level-3 effects) given its rows: Gaussian conditioning of the
    joint normal of effects and rows, written from the definition."""
    names = spec.within.observed
    levels = spec.layout.levels
    rows = data[data.school == school]
    classes = list(dict.fromkeys(rows["class"]))
    moments = [level_moments(theta, level.structure) for level in levels]

    def node_moments(k, covariates):
        level = levels[k]
        mean, cov = moments[k].node_moments(np.atleast_2d(covariates))
        picks = np.array([level.nodes.index(name) for name in level.effects])
        to_rows = np.array([[float(a == b) for b in level.nodes] for a in names])  # rows' variables x nodes
        return mean[0], cov, picks, to_rows

    top_mean, top_cov, top_picks, top_rows = node_moments(2, rows[list(levels[2].structure.covariates)].iloc[0])
    row_mean = []
    n = len(rows)
    same_class = (rows["class"].to_numpy()[:, None] == rows["class"].to_numpy()[None]).astype(float)
    class_mean, class_cov = {}, None
    for label in classes:
        covariates = rows.loc[rows["class"] == label, list(levels[1].structure.covariates)].iloc[0]
        class_mean[label], class_cov, mid_picks, mid_rows = node_moments(1, covariates)
    for _, row in rows.iterrows():
        m = moments[0].mean + moments[0].Pi @ row[list(levels[0].structure.covariates)].to_numpy(float)
        row_mean.append(m + mid_rows @ class_mean[row["class"]] + top_rows @ top_mean)
    row_cov = (np.kron(np.eye(n), moments[0].Sigma) + np.kron(same_class, mid_rows @ class_cov @ mid_rows.T)
               + np.kron(np.ones((n, n)), top_rows @ top_cov @ top_rows.T))
    # effects: each class's picked nodes, then the school's
    member = np.array([[float(c == label) for label in classes] for c in rows["class"]])  # rows x classes
    blocks_mean = np.concatenate([class_mean[label][mid_picks] for label in classes] + [top_mean[top_picks]])
    effects_cov = np.block([[np.kron(np.eye(len(classes)), class_cov[np.ix_(mid_picks, mid_picks)]),
                             np.zeros((len(classes) * len(mid_picks), len(top_picks)))],
                            [np.zeros((len(top_picks), len(classes) * len(mid_picks))),
                             top_cov[np.ix_(top_picks, top_picks)]]])
    cross_rows = np.concatenate([np.kron(member, mid_rows @ class_cov[:, mid_picks]),
                                 np.kron(np.ones((n, 1)), top_rows @ top_cov[:, top_picks])], axis=1)  # Cov(rows, eff)
    gain = np.linalg.solve(row_cov, cross_rows).T
    residual = rows[list(names)].to_numpy().ravel() - np.concatenate(row_mean)
    return blocks_mean + gain @ residual, effects_cov - gain @ cross_rows, classes


def test_effects_of_classes_and_schools_follow_their_exact_conditional():
    data = three_level_data(5, schools=3, max_classes=3, max_pupils=4)
    with pytest.warns(UserWarning, match="units in 'school'"):
        spec = build_spec(THREE_LEVEL, data, cluster=["class", "school"])
    theta = random_theta(spec, 6)
    assert_draws_follow(spec, theta, lambda school: exact_effect_moments(spec, theta, data, school))


def assert_draws_follow(spec, theta, exact) -> None:
    """4000 draws of every class's and school's effects at ``theta`` match
    ``exact(school)``: the mean and covariance of (its classes' effects, its
    own) and the classes in order; means within 5 Monte Carlo SEs."""
    from bayes_msem.engines.collapsed import draw_three_level_effects

    n_draws = 4000
    middle, top = draw_three_level_effects(spec, np.broadcast_to(theta, (1, n_draws, len(theta))), seed=7)
    class_at = {str(label): k for k, label in enumerate(spec.data.cluster_labels)}
    for s, school in enumerate(map(str, spec.data.upper_levels[0].labels)):
        mean, cov, classes = exact(school)
        drawn = np.concatenate([middle[0][:, class_at[label]] for label in classes] + [top[0][:, s]], axis=1)
        sd = np.sqrt(np.diag(cov))
        assert np.all(np.abs(drawn.mean(0) - mean) < 5 * sd / np.sqrt(n_draws) + 1e-12)
        np.testing.assert_allclose(np.cov(drawn.T), cov, atol=0.1 * sd.max() ** 2)


@pytest.mark.parametrize("syntax, options, words", [
    ("level: 1\n y ~ x\nlevel: 2\n y ~ z\nlevel: 3\n y ~ w", {"ordered": ["u"]}, "ordinal variables \\(u\\): three-level"),
])
def test_three_level_models_the_engine_cannot_take_are_refused_with_the_reason(syntax, options, words):
    import bayes_msem as bm

    data = bm.example_data("three_level_sim")
    data = data.assign(q=data.groupby("class").y.transform("mean"), u=(data.y > 1).astype(int))
    if "ordered" in options:
        syntax = syntax.replace("y", "u")
    with pytest.raises(ValueError, match=f"no engine fits this model: {words}.*the latent engine takes two levels"):
        bm.Model(syntax, data, cluster=["class", "school"], **options)


def test_a_class_level_slope_on_a_modelled_variable_is_refused_with_the_reason():
    import bayes_msem as bm

    data = bm.example_data("three_level_sim").assign(v=lambda d: d.y * 0.5 + d.x)
    syntax = "level: 1\n y ~ x\n v ~ x\nlevel: 2\n t | y ~ v\nlevel: 3\n y ~ w\n v ~~ v"
    with pytest.raises(ValueError, match="a random slope on a modelled level-2 variable"):
        bm.Model(syntax, data, cluster=["class", "school"])


# A random slope over classes, an intercept-slope covariance, covariates at every level.
THREE_LEVEL_SLOPE = """level: 1
  s | y1 ~ x
  y2 ~ x
level: 2
  y1 ~ z
  s ~ z
  y1 ~~ s
level: 3
  y1 ~ w
  y1 ~~ y2
"""

# The slope also varies over schools (its part there regressed on w and correlated with y1's), so
# each school moves its classes' slopes; its mean sits at level 3.
THREE_LEVEL_SCHOOL_SLOPE = THREE_LEVEL_SLOPE + """  s ~ w
  y1 ~~ s
"""
# And the class covariate z's effect on y1 varies over schools (t, a slope written in the class block,
# with a part at level 3 only), beside the slope of x over classes and schools.
THREE_LEVEL_CLASS_SLOPE = THREE_LEVEL_SCHOOL_SLOPE.replace("  y1 ~ z\n", "  t | y1 ~ z\n") + "  t ~~ y1\n"
SLOPE_MODELS = pytest.mark.parametrize(
    "syntax", [THREE_LEVEL_SLOPE, THREE_LEVEL_SCHOOL_SLOPE, THREE_LEVEL_CLASS_SLOPE],
    ids=["slope over classes", "slope over classes and schools", "and a class covariate's slope over schools"])


def slope_school_moments(spec, theta, school: pd.DataFrame):
    """A school's rows stacked as m + Lc u + Lt t + e, from the definition:
    y_i = m + Pi x_i + (its class's nodes u, the slope s times x on y1) + (the
    school's nodes t) + e_i, each level's node moments by name. Returns the
    rows' mean and covariance, the classes in order, and the means, covariance
    and covariance with the rows of (u of every class, t)."""
    names = list(spec.within.observed)
    levels = spec.layout.levels
    moments = [level_moments(theta, level.structure) for level in levels]
    p, k = len(names), len(levels[1].nodes)
    classes = list(dict.fromkeys(school["class"]))
    n = len(school)

    def loading(level, x=0.0, z=0.0):  # the rows' variables x that level's nodes, for a row with covariates x, z
        out = np.array([[float(a == b) for b in levels[level].nodes] for a in names])
        if "s" in levels[level].nodes:  # the slope's part at that level (classes; schools where it varies there)
            out[names.index("y1"), levels[level].nodes.index("s")] = x
        if "t" in levels[level].nodes:  # the school's slope of its classes' y1 parts on z
            out[names.index("y1"), levels[level].nodes.index("t")] = z
        return out

    top_mean, top_cov = moments[2].node_moments(school[list(levels[2].structure.covariates)].to_numpy(float)[:1])
    effects_mean = np.zeros(len(classes) * k)
    effects_cov = np.zeros((len(classes) * k,) * 2)
    class_loadings = np.zeros((n * p, len(classes) * k))
    mean = np.zeros(n * p)
    for i, (_, row) in enumerate(school.iterrows()):
        c = classes.index(row["class"])
        class_mean, node_cov = moments[1].node_moments(row[list(levels[1].structure.covariates)].to_numpy(float)[None])
        effects_mean[c * k:(c + 1) * k], effects_cov[c * k:(c + 1) * k, c * k:(c + 1) * k] = class_mean[0], node_cov
        class_loadings[i * p:(i + 1) * p, c * k:(c + 1) * k] = loading(1, row["x"])
        x = row[list(levels[0].structure.covariates)].to_numpy(float)
        mean[i * p:(i + 1) * p] = moments[0].mean + moments[0].Pi @ x + loading(1, row["x"]) @ class_mean[0]
    top_loadings = np.concatenate([loading(2, x, z) for x, z in zip(school["x"], school["z"])])
    mean = mean + top_loadings @ top_mean[0]
    cov = (np.kron(np.eye(n), moments[0].Sigma) + class_loadings @ effects_cov @ class_loadings.T
           + top_loadings @ top_cov @ top_loadings.T)
    joint_mean = np.concatenate([effects_mean, top_mean[0]])
    joint_cov = np.block([[effects_cov, np.zeros((len(effects_cov), len(top_cov)))],
                          [np.zeros((len(top_cov), len(effects_cov))), top_cov]])
    cross = np.concatenate([class_loadings @ effects_cov, top_loadings @ top_cov], axis=1)
    return mean, cov, classes, joint_mean, joint_cov, cross


def stacked_slope_logp(spec, theta, data: pd.DataFrame) -> float:
    """Sum over schools of the normal density of the school's rows stacked (:func:`slope_school_moments`)."""
    names = list(spec.within.observed)
    total = 0.0
    for _, school in data.groupby("school"):
        mean, cov = slope_school_moments(spec, theta, school)[:2]
        total += observed_logpdf(mean, cov, school[names].to_numpy().ravel())
    return total


@SLOPE_MODELS
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), schools=st.integers(2, 5), max_classes=st.integers(2, 4),
       max_pupils=st.integers(2, 5))
def test_three_level_density_with_a_random_slope_equals_the_stacked_normal(syntax, seed, schools, max_classes,
                                                                          max_pupils):
    check_density(syntax, stacked_slope_logp, three_level_data(seed, schools, max_classes, max_pupils), seed)


@SLOPE_MODELS
def test_three_level_slope_density_per_school_and_in_jax_and_pytensor(syntax):
    """LOO's per-school terms are each school's stacked normal, and the sampler's
    PyTensor graph and JAX give the NumPy value."""
    import pytensor
    import pytensor.tensor as pt

    from bayes_msem.engines.collapsed import three_level_unit_log_likelihood
    from bayes_msem.engines.latent import PYTENSOR_BACKEND

    data = three_level_data(11, schools=4, max_classes=3, max_pupils=4)
    with pytest.warns(UserWarning, match="units in 'school'"):
        spec = build_spec(syntax, data, cluster=["class", "school"])
    theta = random_theta(spec, 3)
    labels = [str(label) for label in spec.data.upper_levels[0].labels]
    per_unit = three_level_unit_log_likelihood(spec, theta[None, None])[0, 0]
    np.testing.assert_allclose(per_unit, [stacked_slope_logp(spec, theta, data[data.school == label])
                                          for label in labels], rtol=1e-9)
    expected = collapsed_logp(spec, theta, NUMPY_BACKEND)
    assert float(collapsed_logp(spec, theta, jax_backend())) == pytest.approx(expected, rel=1e-10)
    values = pt.dvector("theta")
    function = pytensor.function([values], collapsed_logp(spec, values, PYTENSOR_BACKEND), mode="JAX")
    assert float(function(theta)) == pytest.approx(expected, rel=1e-10)


@SLOPE_MODELS
def test_effects_with_a_random_slope_follow_their_exact_conditional(syntax):
    data = three_level_data(5, schools=3, max_classes=3, max_pupils=4)
    with pytest.warns(UserWarning, match="units in 'school'"):
        spec = build_spec(syntax, data, cluster=["class", "school"])
    theta = random_theta(spec, 6)
    levels = spec.layout.levels
    assert list(levels[1].effects) == list(levels[1].nodes) and list(levels[2].effects) == list(levels[2].nodes)
    names = list(spec.within.observed)

    def exact(label):
        school = data[data.school == label]
        mean, cov, classes, joint_mean, joint_cov, cross = slope_school_moments(spec, theta, school)
        gain = np.linalg.solve(cov, cross).T
        return joint_mean + gain @ (school[names].to_numpy().ravel() - mean), joint_cov - gain @ cross, classes

    assert_draws_follow(spec, theta, exact)
