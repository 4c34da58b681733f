"""Parameter table: lavaan's defaults, roles, labels and equality."""

import pytest

from bayes_msem.errors import ModelSyntaxError
from bayes_msem.partable import build_partable

# lavaan 0.6-14: parTable(sem(model, Demo.twolevel, cluster = "cluster"))[, c("lhs","op","rhs","level","free")]
# (printed by tests/data/make_lavaan_references.R); free > 0 marked True.
LAVAAN_DEMO_PARTABLE = [
    ("fw", "=~", "y1", 1, False), ("fw", "=~", "y2", 1, True), ("fw", "=~", "y3", 1, True),
    ("fw", "~", "x1", 1, True), ("fw", "~", "x2", 1, True), ("fw", "~", "x3", 1, True),
    ("y1", "~~", "y1", 1, True), ("y2", "~~", "y2", 1, True), ("y3", "~~", "y3", 1, True),
    ("fw", "~~", "fw", 1, True), ("x1", "~~", "x1", 1, False), ("x1", "~~", "x2", 1, False),
    ("x1", "~~", "x3", 1, False), ("x2", "~~", "x2", 1, False), ("x2", "~~", "x3", 1, False),
    ("x3", "~~", "x3", 1, False), ("y1", "~1", "", 1, False), ("y2", "~1", "", 1, False),
    ("y3", "~1", "", 1, False), ("x1", "~1", "", 1, False), ("x2", "~1", "", 1, False),
    ("x3", "~1", "", 1, False), ("fw", "~1", "", 1, False),
    ("fb", "=~", "y1", 2, False), ("fb", "=~", "y2", 2, True), ("fb", "=~", "y3", 2, True),
    ("fb", "~", "w1", 2, True), ("fb", "~", "w2", 2, True), ("y1", "~~", "y1", 2, True),
    ("y2", "~~", "y2", 2, True), ("y3", "~~", "y3", 2, True), ("fb", "~~", "fb", 2, True),
    ("w1", "~~", "w1", 2, False), ("w1", "~~", "w2", 2, False), ("w2", "~~", "w2", 2, False),
    ("y1", "~1", "", 2, True), ("y2", "~1", "", 2, True), ("y3", "~1", "", 2, True),
    ("w1", "~1", "", 2, False), ("w2", "~1", "", 2, False), ("fb", "~1", "", 2, False),
]

DEMO = """level: 1
    fw =~ y1 + y2 + y3
    fw ~ x1 + x2 + x3
level: 2
    fb =~ y1 + y2 + y3
    fb ~ w1 + w2"""


def as_tuples(table):
    rows = table.rows
    return [(r.lhs, r.op, r.rhs, r.level, r.free > 0) for r in rows.itertuples() if r.op != ":="]


def test_two_level_defaults_match_lavaan():
    assert as_tuples(build_partable(DEMO)) == LAVAAN_DEMO_PARTABLE


def test_roles_of_two_level_model():
    table = build_partable(DEMO)
    within, between = table.levels
    assert table.both_level == ("y1", "y2", "y3")
    assert within.covariates == ("x1", "x2", "x3") and within.latent == ("fw",)
    assert between.covariates == ("w1", "w2") and between.observed == ("y1", "y2", "y3")


def test_pure_outcomes_covary_as_in_lavaan():
    # lavaan: parTable(sem("y1 ~ x1; y2 ~ x1 + y1; y3 ~ x1", d)) frees y2 ~~ y3 only (y1 predicts y2)
    table = build_partable("y1 ~ x1; y2 ~ x1 + y1; y3 ~ x1")
    covariances = [(r.lhs, r.rhs) for r in table.rows.itertuples() if r.kind == "covariance" and r.free]
    assert covariances == [("y2", "y3")]


def test_exogenous_latent_covary_and_pure_outcome_latents_too():
    # lavaan: sem() of the HS three-factor model with textual ~ visual; speed ~ visual frees textual ~~ speed
    table = build_partable("visual =~ x1 + x2 + x3\ntextual =~ x4 + x5 + x6\nspeed =~ x7 + x8 + x9\n"
                           "textual ~ visual; speed ~ visual")
    covariances = [(r.lhs, r.rhs) for r in table.rows.itertuples() if r.kind == "covariance"]
    assert covariances == [("textual", "speed")]
    cfa = build_partable("visual =~ x1 + x2\ntextual =~ x4 + x5\nspeed =~ x7 + x8")
    assert sum(cfa.rows.kind == "covariance") == 3


def test_marker_fixed_unless_freed_or_fixed():
    table = build_partable("f =~ NA*y1 + y2 + y3\nf ~~ 1*f\ng =~ 0.5*y4 + y5\nh =~ a*y6 + y7")
    loadings = table.rows[table.rows.op == "=~"].set_index("rhs")
    assert loadings.loc["y1", "free"] > 0 and loadings.loc["y2", "free"] > 0
    assert loadings.loc["y4", "ustart"] == 0.5 and loadings.loc["y4", "free"] == 0
    assert loadings.loc["y6", "ustart"] == 1.0 and loadings.loc["y6", "label"] == "a"


def test_shared_labels_share_one_free_parameter():
    table = build_partable("f =~ y1 + a*y2 + a*y3")
    free = table.rows[table.rows.op == "=~"].free.tolist()
    assert free[1] == free[2] > 0


def test_single_level_intercepts_are_free_and_latent_means_fixed():
    rows = build_partable("f =~ y1 + y2").rows
    intercepts = rows[rows.op == "~1"].set_index("lhs")
    assert intercepts.loc["y1", "free"] > 0
    assert intercepts.loc["f", "free"] == 0 and intercepts.loc["f", "ustart"] == 0


@pytest.mark.parametrize("text, words", [
    ("y ~ x\ny ~ x", "already specified on line 1"),
    ("y1 ~~ y2\ny2 ~~ y1", "already specified"),
    ("y ~ y", "cannot point to itself"),
    ('y ~ prior("gauss(0,1)")*x', "unknown prior family"),
    ('y ~~ prior("normal(0,1)")*z', "lkj(eta)"),
    ('y ~~ prior("normal(0,1)")*y', "positive values"),
    ('y ~ prior("normal(0,-1)")*x', "must be positive"),
    ("f =~ y1 + a*y2\ny2 ~~ a*y2", "not supported"),
    ("y ~ x*x", "the label 'x' is also the name of a variable"),
    ('f =~ prior("normal(1, 1)")*y1 + y2 + y3', "prior() on f =~ y1, which is a marker loading"),
    ('y ~ prior("normal(0, 1)")*0.5*x', "a fixed parameter takes no prior"),
])
def test_specification_errors_point_at_the_text(text, words):
    with pytest.raises(ModelSyntaxError) as info:
        build_partable(text)
    assert words in str(info.value)
    assert info.value.line >= 1


RANDOM_SLOPES = """level: 1
  s | y ~ x
  y ~ rv("t")*z
level: 2
  s ~ w
  y ~~ s
"""


def test_random_slopes_are_level2_latent_variables_with_free_mean_and_variance():
    table = build_partable(RANDOM_SLOPES)
    assert table.slopes == ("s", "t")
    assert table.level_roles(2).latent == ("s", "t")
    rows = table.rows.set_index(["lhs", "op", "rhs", "level"])
    assert rows.loc[("y", "~", "x", 1), "random"] == "s" and rows.loc[("y", "~", "x", 1), "free"] == 0
    for slope in ("s", "t"):
        assert rows.loc[(slope, "~1", "", 2), "free"] > 0
        assert rows.loc[(slope, "~~", slope, 2), "free"] > 0
    # as in Mplus, slopes covary only where the model says so
    assert ("s", "~~", "t", 2) not in rows.index and ("t", "~~", "s", 2) not in rows.index
    assert rows.loc[("y", "~~", "s", 2), "free"] > 0


@pytest.mark.parametrize("text, words", [
    ("level: 1\n y ~ x\nlevel: 2\n s | y ~ w", "must be in the level: 1"),
    ("s | y ~ x", "must be in the level: 1"),
    ("level: 1\n s | y ~ x\n s | y ~ z\nlevel: 2\n y ~~ y", "already used"),
    ("level: 1\n x | y ~ x\nlevel: 2\n y ~~ y", "names a random slope and a variable of its level"),
    ("level: 1\n y ~ x\nlevel: 2\n z | y ~ z\nlevel: 3\n y ~~ y", "names a random slope and a variable of its"),
    ("level: 1\n y ~ x\nlevel: 2\n y ~ w\nlevel: 3\n s | y ~ v", "level: 2 block of a three-level one"),
    ("level: 1\n s | y ~ x\nlevel: 2\n y ~~ s\nlevel: 3\n y ~ s", "random slope 's' as a predictor at level 3"),
])
def test_random_slope_errors(text, words):
    with pytest.raises(ModelSyntaxError, match=words):
        build_partable(text, cluster=["class", "school"] if "level: 3" in text else None)


def test_slopes_with_a_part_at_level_3_have_their_mean_there():
    """A rows' slope named in the level-3 block has parts at levels 2 and 3, its
    mean at level 3 (fixed at 0 at level 2); a class covariate's slope lives at
    level 3 only, mean and variance free; a slope not named there stays at level 2."""
    text = "level: 1\n s | y ~ x\n r | y ~ v\nlevel: 2\n t | y ~ z\nlevel: 3\n s ~~ s"
    table = build_partable(text, cluster=["class", "school"])
    assert [roles.latent for roles in table.levels[1:]] == [("s", "r"), ("s", "t")]
    rows = table.rows.set_index(["lhs", "op", "rhs", "level"])
    assert rows.loc[("s", "~1", "", 2), "ustart"] == 0 and rows.loc[("s", "~1", "", 3), "free"] > 0
    assert rows.loc[("r", "~1", "", 2), "free"] > 0 and ("r", "~1", "", 3) not in rows.index
    assert rows.loc[("t", "~1", "", 3), "free"] > 0 and rows.loc[("t", "~~", "t", 3), "free"] > 0
    assert rows.loc[("y", "~", "z", 2), "ustart"] == 0  # the whole coefficient is the slope t


MEDIATION = "level: 1\n m ~ x\n y ~ m\nlevel: 2\n m ~~ y\n y ~ m\n"


def test_centering_rewrites_predictors():
    none = build_partable(MEDIATION, centering={"m": "none"})
    assert ("y", "m.raw") in {(r.lhs, r.rhs) for r in none.rows.itertuples() if r.op == "~" and r.level == 1}
    assert none.derived == {"m.raw": ("m", ".raw")}
    assert not any(r.op == "~~" and {r.lhs, r.rhs} == {"m", "y"} and r.level == 1 for r in none.rows.itertuples())
    mean = build_partable(MEDIATION, centering={"m": "cluster-mean"})
    assert mean.derived == {"m.cwc": ("m", ".cwc"), "m.cm": ("m", ".cm")}
    assert mean.level_roles(2).covariates == ("m.cm",)
    assert set(mean.data_columns()) == {"m", "x", "y"}
    latent = build_partable("level: 1\n y ~ x\nlevel: 2\n y ~~ y", centering={"x": "latent"})
    assert "x" in latent.both_level  # split on request


@pytest.mark.parametrize("centering, words", [
    ({"q": "none"}, "not a level-1 predictor"),
    ({"m": "grand-mean"}, "use one of"),
])
def test_centering_errors(centering, words):
    with pytest.raises(ValueError, match=words):
        build_partable(MEDIATION, centering=centering)


def test_none_centering_of_a_pure_predictor_named_at_level_2_is_refused():
    with pytest.raises(ModelSyntaxError, match="no between part"):
        build_partable("level: 1\n y ~ x\nlevel: 2\n y ~ x", centering={"x": "none"})
    with pytest.raises(ModelSyntaxError, match="not identified"):
        build_partable("level: 1\n y ~ m\n m ~ x\n y ~~ m\nlevel: 2\n y ~~ m", centering={"m": "none"})
