"""Three-level models against lme4 (issue 13's must-show check), on the data as
shipped and on a copy with rows shuffled and both id columns relabelled.

Reference (tests/data/three_level_sim_lme4.csv, from shared/reference):
lme4 `lmer(y ~ x + z + w + (1 | school) + (1 | class), REML = FALSE)` on
three_level_sim.csv (60 schools x 4 classes x 12 pupils); SEs of the variance
components from profile intervals.

A random slope (tests/data/three_level_slope_sim_lme4.csv, the data
tests/data/three_level_slope_sim.csv: 50 schools with 3 to 6 classes of 4 to
16 pupils, text ids, rows shuffled; made by the code in
:func:`test_three_level_random_slope_matches_lme4`'s docstring), lme4 1.1.31 on
R 4.2.2: `lmer(y ~ x + z + w + (1 + x | class) + (1 | school), REML = FALSE)`,
variance SEs (sd^2 profile interval width / 3.92), the covariance's SE from
the correlation's profile interval times both SDs (Rscript, the script in
that test's docstring).

The same data with y missing where x > 1, fitted by full information, against
lme4 on the complete cases (tests/data/three_level_slope_sim_holes_lme4.csv);
likewise the cross-classified data below (tests/data/crossed_sim_holes_lme4.csv).

A cross-classified model (tests/data/crossed_sim_lme4.csv, the data
tests/data/crossed_sim.csv: 2000 rows in 339 cells of 40 primary x 30
secondary units, text ids), lme4 `lmer(y ~ x + z + w + (1 | primary) +
(1 | secondary), REML = FALSE)`, SEs as above.

Tolerance (the issue): posterior median within 0.35 lme4 standard errors of
the ML estimate, 0.8 for variance components; plus three Monte Carlo standard
errors of the median, as the other reference tests.
"""

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, FULL_RUN, SHUFFLED_RUN
from test_reference_fits import check_convergence, median_mcse

import bayes_msem as bm

pytestmark = pytest.mark.slow

LEVELS = {1: "within", 2: "class", 3: "school"}
TOLERANCE = {"~": 0.35, "~1": 0.35, "~~": 0.8}


def relabelled(data: pd.DataFrame, seed: int = 20261130) -> pd.DataFrame:
    """Rows shuffled; class and school ids as text in an order unlike the original one."""
    rng = np.random.default_rng(seed)
    copy = data.iloc[rng.permutation(len(data))].copy()
    for column, prefix in (("class", "k"), ("school", "s")):
        old = np.sort(data[column].unique())
        copy[column] = copy[column].map(dict(zip(old, [f"{prefix}{v}" for v in rng.permutation(len(old))])))
    return copy


@pytest.fixture(scope="module", params=["as shipped", "shuffled"])
def three_level_fit(request):
    data = bm.example_data("three_level_sim")
    if request.param == "shuffled":
        data = relabelled(data)
    model = bm.Model(bm.example_model("three_level_sim"), data, cluster=["class", "school"])
    return model.fit(**(FULL_RUN if request.param == "as shipped" else SHUFFLED_RUN)), data, request.param


def assert_matches_lme4(fit, reference_file: str, n_parameters: int, levels: dict[int, str] = LEVELS) -> None:
    """Every parameter of the lme4 reference within tolerance (module docstring)."""
    reference = pd.read_csv(DATA / reference_file)
    reference["rhs"] = reference["rhs"].fillna("")
    reference["level"] = reference["level"].map(levels)
    merged = reference.merge(fit.summary(), on=["lhs", "op", "rhs", "level"], how="left", validate="one_to_one")
    assert merged["median"].notna().all() and len(merged) == n_parameters
    mcse = np.array([median_mcse(fit, row) for row in merged.itertuples()])
    distance = (merged["median"] - merged["est"]).abs() / merged["se"]
    allowed = merged["op"].map(TOLERANCE) + 3 * mcse / merged["se"]
    assert (distance <= allowed).all(), merged.assign(distance=distance, allowed=allowed)[
        ["lhs", "op", "rhs", "level", "est", "median", "distance", "allowed"]]


def test_three_level_fit_matches_lme4(three_level_fit):
    fit, _, order = three_level_fit
    assert_matches_lme4(fit, "three_level_sim_lme4.csv", 7)
    check_convergence(fit, 1.01 if order == "as shipped" else 1.05)  # the copy runs 500 draws
    assert "Level-3 units 60 (school), holding 4 to 4 clusters each" in str(fit)
    assert all(f"{title}:" in str(fit) for title in ("Level 1 [within]", "Level 2 [class]", "Level 3 [school]"))


def test_three_level_results_name_each_level_and_unit(three_level_fit):
    fit, data, _ = three_level_fit
    effects = fit.cluster_effects()
    assert effects.groupby("level").cluster.nunique().to_dict() == {"class": 240, "school": 60}
    # a school's effect follows its observed mean less what its covariate and classes explain
    schools = effects[effects.level == "school"].set_index("cluster")["mean"]
    observed = data.groupby(data["school"].astype(str))["y"].mean()
    assert np.corrcoef(schools.loc[observed.index], observed)[0, 1] > 0.8
    classes = effects[effects.level == "class"].set_index("cluster")
    assert set(classes["size"]) == {12}
    loo = fit.loo()
    assert loo.loo_i.sizes["unit"] == 60 and float(loo.pareto_k.max()) < 0.7
    icc = fit.icc().set_index("level")["mean"]
    assert icc["class"] > icc["school"] > 0  # pupils of one class share their school too


THREE_LEVEL_SLOPE = """level: within
  s | y ~ x
level: class
  y ~ z
  y ~~ s
level: school
  y ~ w
"""  # the blocks named by their cluster columns


@pytest.fixture(scope="module")
def slope_fit():
    data = pd.read_csv(DATA / "three_level_slope_sim.csv")
    return bm.Model(THREE_LEVEL_SLOPE, data, cluster=["class", "school"]).fit(**FULL_RUN), data


def test_three_level_random_slope_matches_lme4(slope_fit):
    """The data came from (Python, numpy 2)::

        rng = np.random.default_rng(17)
        for s in range(50):
            w = rng.normal(); c_s = rng.normal(0, np.sqrt(0.3))
            for k in range(rng.integers(3, 7)):
                z = rng.normal(); u = rng.multivariate_normal([0, 0], [[0.5, 0.05], [0.05, 0.1]])
                for i in range(rng.integers(4, 17)):
                    x = rng.normal()
                    y = 1.0 + 0.5 * x + 0.3 * z + 0.4 * w + c_s + u[0] + u[1] * x + rng.normal()
                    rows.append((f"sch-{(37 * s) % 101}", f"cls-{(53 * (10 * s + k)) % 997}", x, z, w, y))
        # rounded to 4 decimals, rows shuffled by rng.permutation

    and the reference from (R)::

        m <- lmer(y ~ x + z + w + (1 + x | class) + (1 | school), data = d, REML = FALSE)
        fe <- fixef(m); fse <- sqrt(diag(vcov(m)))
        pr <- confint(m, method = "profile", oldNames = FALSE); vc <- as.data.frame(VarCorr(m))
        se_var <- function(name) (pr[name, 2]^2 - pr[name, 1]^2) / (2 * qnorm(0.975))
    """
    fit, _ = slope_fit
    assert_matches_lme4(fit, "three_level_slope_sim_lme4.csv", 9)
    check_convergence(fit, 1.01)


def test_three_level_random_slopes_per_class_follow_the_data(slope_fit):
    """Each class's slope (drawn from its exact conditional) follows its own
    least-squares slope; LOO leaves out one school at a time."""
    fit, data = slope_fit
    effects = fit.cluster_effects()
    classes = effects[(effects.level == "class") & (effects.variable == "s")].set_index("cluster")["mean"]
    own = data.groupby("class")[["x", "y"]].apply(lambda rows: np.polyfit(rows.x, rows.y, 1)[0])
    big = data.groupby("class").size() >= 12  # small classes' own slopes are mostly noise
    assert classes.size == 237 and np.corrcoef(classes.loc[own[big].index], own[big])[0, 1] > 0.9  # 0.975 measured
    assert fit.loo().loo_i.sizes["unit"] == 50


def test_three_level_random_slope_with_missing_values_matches_lme4_on_the_complete_cases(tmp_path):
    """The random-slope data with y missing wherever x > 1 (400 of 2492 rows,
    MAR given x), fitted by full information. With one outcome and complete
    covariates the rows without y add nothing to the likelihood, so lme4 on
    the complete cases is the same ML fit (tests/data/three_level_slope_sim_holes_lme4.csv,
    lme4 1.1.31, R 4.2.2)::

        d$y[d$x > 1] <- NA
        m <- lmer(y ~ x + z + w + (1 + x | class) + (1 | school), data = d, REML = FALSE)
        # SEs as in test_three_level_random_slope_matches_lme4

    The rows without y stay in the data and in the summary's count."""
    data = pd.read_csv(DATA / "three_level_slope_sim.csv")
    data.loc[data.x > 1, "y"] = np.nan
    fit = bm.Model(THREE_LEVEL_SLOPE, data, cluster=["class", "school"]).fit(**SHUFFLED_RUN)
    assert_matches_lme4(fit, "three_level_slope_sim_holes_lme4.csv", 9)
    check_convergence(fit, 1.02)
    assert fit.info["n_rows"] == 2492 and fit.info["n_dropped"] == 0 and fit.info["missing"]["counts"] == {"y": 400}
    assert fit.cluster_effects().query("level == 'class' and variable == 's'").shape[0] == 237
    assert fit.loo().loo_i.sizes["unit"] == 50
    check_imputations(fit, pd.read_csv(DATA / "three_level_slope_sim.csv")["y"], data.index[data.y.isna()])


SCHOOL_SLOPE = THREE_LEVEL_SLOPE + "  y ~~ s\n"  # s named in the school block: it varies over schools too


def test_random_slope_over_classes_and_schools_matches_lme4():
    """A slope with a part per class and per school, against lme4 on the data
    tests/data/three_level_school_slope_sim.csv (60 schools with 3 to 6
    classes of 4 to 16 pupils, text ids, rows shuffled), from (Python, numpy 2)::

        rng = np.random.default_rng(29)
        for s in range(60):
            w = rng.normal(); c = rng.multivariate_normal([0, 0], [[0.3, 0.06], [0.06, 0.15]])
            for k in range(rng.integers(3, 7)):
                z = rng.normal(); u = rng.multivariate_normal([0, 0], [[0.5, 0.05], [0.05, 0.1]])
                for i in range(rng.integers(4, 17)):
                    x = rng.normal()
                    y = 1.0 + 0.5 * x + 0.3 * z + 0.4 * w + c[0] + c[1] * x + u[0] + u[1] * x + rng.normal()
                    rows.append((f"sch-{(37 * s) % 101}", f"cls-{(53 * (10 * s + k)) % 997}", x, z, w, y))
        # rounded to 4 decimals, rows shuffled by rng.permutation

    The reference (tests/data/three_level_school_slope_sim_lme4.csv) is lme4
    1.1.31 on R 4.2.2, `lmer(y ~ x + z + w + (1 + x | school) + (1 + x |
    class), REML = FALSE)`, SEs as in test_three_level_random_slope_matches_lme4
    (`Rscript tests/data/make_three_level_school_slope_reference.R`). The fit
    runs on a copy with the ids relabelled and the rows shuffled again."""
    data = relabelled(pd.read_csv(DATA / "three_level_school_slope_sim.csv"))
    fit = bm.Model(SCHOOL_SLOPE, data, cluster=["class", "school"]).fit(**FULL_RUN)
    assert_matches_lme4(fit, "three_level_school_slope_sim_lme4.csv", 11)
    check_convergence(fit, 1.01)
    assert "random slope of y on x (latent parts at levels 2, 3)" in str(fit)
    # cluster_effects keeps each level's part: the classes' scatter around 0, the schools' hold the mean slope
    effects = fit.cluster_effects().query("variable == 's'").set_index("cluster")
    assert abs(effects.loc[effects.level == "class", "mean"].mean()) < 0.02
    schools = effects.loc[effects.level == "school", "mean"]
    mean_slope = fit.summary().query("lhs == 's' and op == '~1' and level == 'school'")["mean"].iloc[0]
    assert schools.mean() == pytest.approx(mean_slope, abs=0.02)
    own = data.groupby("school")[["x", "y"]].apply(lambda rows: np.polyfit(rows.x, rows.y, 1)[0])
    assert np.corrcoef(schools.loc[own.index], own)[0, 1] > 0.8
    # a class's whole slope, "s (own)", is its part plus its school's, draw by draw (so also in the mean)
    whole = fit.cluster_effects().query("variable == 's (own)'").set_index("cluster")["mean"]
    school_of = data.groupby("class")["school"].first().loc[whole.index]
    classes = effects.loc[effects.level == "class", "mean"].loc[whole.index]
    np.testing.assert_allclose(whole, classes + schools.loc[school_of].to_numpy(), atol=1e-10)
    assert fit.loo().loo_i.sizes["unit"] == 60


def test_slope_over_classes_and_schools_with_missing_values_matches_lme4_on_the_complete_cases():
    """The data of test_random_slope_over_classes_and_schools_matches_lme4 with
    y missing wherever x > 1 (MAR given x), by full information, against lme4
    on the complete cases (the same ML fit with one outcome and complete
    covariates; tests/data/three_level_school_slope_sim_holes_lme4.csv,
    `Rscript tests/data/make_three_level_school_slope_reference.R holes`); the
    imputations of the holes are calibrated against the simulation's values."""
    complete = pd.read_csv(DATA / "three_level_school_slope_sim.csv")
    data = complete.assign(y=complete.y.where(complete.x <= 1))
    fit = bm.Model(SCHOOL_SLOPE, data, cluster=["class", "school"]).fit(**SHUFFLED_RUN)
    assert_matches_lme4(fit, "three_level_school_slope_sim_holes_lme4.csv", 11)
    check_convergence(fit, 1.02)
    assert fit.info["missing"]["counts"] == {"y": int((complete.x > 1).sum())}
    check_imputations(fit, complete["y"], data.index[data.y.isna()])


CLASS_SLOPE = """level: within
  y ~ x
level: class
  s | y ~ z
level: school
  y ~ w
  y ~~ s
"""  # z's effect on the classes' y parts varies over schools


def test_class_covariates_slope_over_schools_matches_lme4():
    """A random slope of a class covariate over schools, against lme4 on
    tests/data/three_level_class_slope_sim.csv (80 schools with 4 to 8 classes
    of 4 to 12 pupils, text ids, rows shuffled), from (Python, numpy 2)::

        rng = np.random.default_rng(31)
        for s in range(80):
            w = rng.normal(); c = rng.multivariate_normal([0, 0], [[0.3, 0.05], [0.05, 0.1]])
            for k in range(rng.integers(4, 9)):
                z = rng.normal(); u = rng.normal(0, np.sqrt(0.4))
                for i in range(rng.integers(4, 13)):
                    x = rng.normal()
                    y = 1.0 + 0.5 * x + (0.3 + c[1]) * z + 0.4 * w + c[0] + u + rng.normal()
                    rows.append((f"sch-{(37 * s) % 101}", f"cls-{(53 * (10 * s + k)) % 997}", x, z, w, y))
        # rounded to 4 decimals, rows shuffled by rng.permutation

    The reference (tests/data/three_level_class_slope_sim_lme4.csv) is lme4
    1.1.31 on R 4.2.2, `lmer(y ~ x + z + w + (1 + z | school) + (1 | class),
    REML = FALSE)` (`Rscript tests/data/make_three_level_class_slope_reference.R`).
    The fit runs on a copy with the ids relabelled and the rows shuffled again."""
    data = relabelled(pd.read_csv(DATA / "three_level_class_slope_sim.csv"))
    fit = bm.Model(CLASS_SLOPE, data, cluster=["class", "school"]).fit(**FULL_RUN)
    assert_matches_lme4(fit, "three_level_class_slope_sim_lme4.csv", 9)
    check_convergence(fit, 1.01)
    assert "s | y ~ z" in str(fit).split("Level 2 [class]")[1].split("Level 3")[0]
    # each school's slope follows the slope of its class means on z (0.78 measured)
    schools = fit.cluster_effects().query("level == 'school' and variable == 's'").set_index("cluster")["mean"]
    means = data.groupby("class").agg(y=("y", "mean"), z=("z", "first"), school=("school", "first"))
    own = means.groupby("school")[["y", "z"]].apply(lambda rows: np.polyfit(rows.z, rows.y, 1)[0])
    assert np.corrcoef(schools.loc[own.index], own)[0, 1] > 0.6


def check_imputations(fit, truth: pd.Series, holes: pd.Index) -> None:
    """The mean of 20 imputations of each missing y against the value the
    simulation had there (by the data's index label): no bias beyond 4
    standard errors, and calibrated: where the model is right, the true value
    is one more draw from the row's posterior predictive distribution, so the
    mean squared error of the mean of m imputations is (1 + 1/m) times the
    imputations' variance, averaged over the holes. Leaving out a level's parts
    (its intercept among them) fails both."""
    m = 20
    imputed = fit.impute(m=m, random_seed=1).groupby(".row")["y"]
    error = imputed.mean().loc[holes] - truth.loc[holes]
    ratio = (error**2).mean() / ((1 + 1 / m) * imputed.var().loc[holes].mean())
    print(f"imputation error: mean {error.mean():+.4f} (SE {error.std() / np.sqrt(len(error)):.4f}), "
          f"mean square over predictive variance {ratio:.3f}")
    assert abs(error.mean()) < 4 * error.std() / np.sqrt(len(error))
    assert 0.75 < ratio < 1.3


def test_three_level_report_draws_a_path_diagram_per_level(slope_fit, tmp_path):
    fit, _ = slope_fit
    assert fit.effects().empty  # no indirect paths; the level-2 covariates' moments are read at three levels too
    fit.report(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert all(f"path diagram {level}" in page for level in ("within", "class", "school"))
    assert "Level 3 [school]" in page and "Leave-one-school-out PSIS-LOO" in page


CROSSED = """level: within
  y ~ x
level: primary
  y ~ z
level: secondary
  y ~ w
"""


def crossed_fit_matching_lme4(syntax: str, data: pd.DataFrame, reference_file: str, n_parameters: int, run: dict):
    """A cross-classified fit (announced as such) within tolerance of lme4 and converged."""
    with pytest.warns(UserWarning, match="cross-classified \\(primary x secondary\\)"):
        model = bm.Model(syntax, data, cluster=["primary", "secondary"])
    fit = model.fit(**run)
    assert_matches_lme4(fit, reference_file, n_parameters, {1: "within", 2: "primary", 3: "secondary"})
    check_convergence(fit, 1.02)
    return fit


def test_cross_classified_fit_matches_lme4():
    """The data came from (Python, numpy 2)::

        rng = np.random.default_rng(2026)
        u_a = rng.normal(0, np.sqrt(0.4), 40); u_b = rng.normal(0, np.sqrt(0.25), 30)
        z = rng.normal(size=40); w = rng.normal(size=30)
        for i in range(2000):
            a = rng.integers(40); b = min(int(rng.integers(0, 10)) + (a * 30) // 40, 29)
            x = rng.normal()
            y = 0.5 + 0.6 * x + 0.3 * z[a] + 0.4 * w[b] + u_a[a] + u_b[b] + rng.normal()
            rows.append((f"p{(7 * a) % 41}", f"s{(11 * b) % 31}", x, z[a], w[b], y))  # rounded to 4 decimals

    and the reference from lme4 1.1.31 (R 4.2.2), as for the random slope."""
    fit = crossed_fit_matching_lme4(CROSSED, pd.read_csv(DATA / "crossed_sim.csv"), "crossed_sim_lme4.csv", 7,
                                    FULL_RUN)
    assert "Crossed with 30 units (secondary), each meeting" in str(fit)
    effects = fit.cluster_effects()
    assert effects.groupby("level").cluster.nunique().to_dict() == {"primary": 40, "secondary": 30}
    icc = fit.icc().set_index("level")["mean"]  # each classification's own share of the variance
    assert icc.sum() < 1 and icc["secondary"] > 0.1
    # LOO's unit is a row given its two units' effects, by the user's row label
    loo = fit.loo()
    rows = loo.loo_i.coords["row"].values
    assert sorted(str(row) for row in rows) == sorted(str(label) for label in range(2000))
    assert np.isfinite(loo.elpd_loo) and (loo.pareto_k.values > 0.7).mean() < 0.01
    from bayes_msem.html_report import _fit_html

    assert "Leave-one-row-out PSIS-LOO (each row given its units' effects in both classifications)" in _fit_html(fit)


def test_cross_classified_fit_with_missing_values_matches_lme4_on_the_complete_cases():
    """The cross-classified data with y missing wherever x > 1 (306 of 2000
    rows, MAR given x), rows shuffled, fitted by full information; with one
    outcome and complete covariates lme4 on the complete cases is the same ML
    fit (tests/data/crossed_sim_holes_lme4.csv, lme4 1.1.31, R 4.2.2, by
    ``Rscript tests/data/make_crossed_holes_reference.R``, SEs as in
    test_three_level_random_slope_matches_lme4)::

        d$y[d$x > 1] <- NA
        m <- lmer(y ~ x + z + w + (1 | primary) + (1 | secondary), data = d, REML = FALSE)

    Multiple imputation then draws each missing y around its two units' effects."""
    data = pd.read_csv(DATA / "crossed_sim.csv")
    data.loc[data.x > 1, "y"] = np.nan
    data = data.iloc[np.random.default_rng(5).permutation(len(data))]
    fit = crossed_fit_matching_lme4(CROSSED, data, "crossed_sim_holes_lme4.csv", 7, SHUFFLED_RUN)
    assert fit.info["n_rows"] == 2000 and fit.info["n_dropped"] == 0 and fit.info["missing"]["counts"] == {"y": 306}
    check_imputations(fit, pd.read_csv(DATA / "crossed_sim.csv")["y"], data.index[data.y.isna()])


CROSSED_SLOPE = """level: within
  s | y ~ x
level: primary
  y ~ z
  y ~~ s
level: secondary
  y ~ w
"""


def test_cross_classified_random_slope_matches_lme4():
    """The slope of y on x varies over the primary units. The data came from
    (Python, numpy 2; 2000 rows in 342 cells, text ids, rows shuffled)::

        rng = np.random.default_rng(2027)
        u_a = rng.multivariate_normal([0, 0], [[0.4, 0.05], [0.05, 0.1]], 40)
        u_b = rng.normal(0, np.sqrt(0.25), 30); z = rng.normal(size=40); w = rng.normal(size=30)
        for i in range(2000):
            a = rng.integers(40); b = min(int(rng.integers(0, 10)) + (a * 30) // 40, 29)
            x = rng.normal()
            y = 0.5 + (0.6 + u_a[a, 1]) * x + 0.3 * z[a] + 0.4 * w[b] + u_a[a, 0] + u_b[b] + rng.normal()
            rows.append((f"p{(7 * a) % 41}", f"s{(11 * b) % 31}", x, z[a], w[b], y))
        # rounded to 4 decimals, rows shuffled by rng.permutation

    and the reference from lme4 1.1.31 (R 4.2.2), ``Rscript
    tests/data/make_crossed_slope_reference.R``: `lmer(y ~ x + z + w + (1 + x |
    primary) + (1 | secondary), REML = FALSE)`, SEs as for the three-level slope."""
    fit = crossed_fit_matching_lme4(CROSSED_SLOPE, pd.read_csv(DATA / "crossed_slope_sim.csv"),
                                    "crossed_slope_sim_lme4.csv", 9, FULL_RUN)
    slopes = fit.cluster_effects().query("level == 'primary' and variable == 's'")
    assert slopes.cluster.nunique() == 40


def test_random_slope_over_both_classifications_matches_lme4():
    """The slope of y on x varies over the primary and the secondary units
    (named in both blocks; its mean sits in the secondary block). The data
    (tests/data/crossed_both_slope_sim.csv: 2000 rows in 342 cells, text ids,
    rows shuffled) came from (Python, numpy 2)::

        rng = np.random.default_rng(2028)
        u_a = rng.multivariate_normal([0, 0], [[0.4, 0.05], [0.05, 0.1]], 40)
        u_b = rng.multivariate_normal([0, 0], [[0.25, 0.04], [0.04, 0.08]], 30)
        z = rng.normal(size=40); w = rng.normal(size=30)
        for i in range(2000):
            a = rng.integers(40); b = min(int(rng.integers(0, 10)) + (a * 30) // 40, 29)
            x = rng.normal()
            y = (0.5 + (0.6 + u_a[a, 1] + u_b[b, 1]) * x + 0.3 * z[a] + 0.4 * w[b] + u_a[a, 0] + u_b[b, 0]
                 + rng.normal())
            rows.append((f"p{(7 * a) % 41}", f"s{(11 * b) % 31}", x, z[a], w[b], y))
        # rounded to 4 decimals, rows shuffled by rng.permutation

    and the reference from lme4 1.1.31 (R 4.2.2), ``Rscript
    tests/data/make_three_level_school_slope_reference.R crossed``: `lmer(y ~ x + z + w +
    (1 + x | primary) + (1 + x | secondary), REML = FALSE)`, SEs as for the
    three-level slope."""
    fit = crossed_fit_matching_lme4(CROSSED_SLOPE + "  y ~~ s\n", pd.read_csv(DATA / "crossed_both_slope_sim.csv"),
                                    "crossed_both_slope_sim_lme4.csv", 11, FULL_RUN)
    slopes = fit.cluster_effects().query("variable == 's'").groupby("level").cluster.nunique()
    assert slopes.to_dict() == {"primary": 40, "secondary": 30}
