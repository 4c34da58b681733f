"""Parser: table-driven rows, malformed inputs with line and column, fuzzing."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_msem.errors import ModelSyntaxError
from bayes_msem.syntax import parse_model


def rows_of(text):
    return [(r.lhs, r.op, r.rhs, r.level, r.label, r.fixed, r.free, r.prior) for r in parse_model(text).rows]


@pytest.mark.parametrize("text, start", [("y ~ start(0.3)*x", 0.3), ("y ~ a*start(-2)*x", -2.0), ("y ~ x", None)])
def test_start_modifier_sets_the_starting_value(text, start):
    (row,) = parse_model(text).rows
    assert row.start == start and row.fixed is None


@pytest.mark.parametrize("text, expected", [
    ("f =~ y1 + y2", [("f", "=~", "y1", 0, None, None, False, None), ("f", "=~", "y2", 0, None, None, False, None)]),
    ("y ~ x", [("y", "~", "x", 0, None, None, False, None)]),
    ("y ~~ z", [("y", "~~", "z", 0, None, None, False, None)]),
    ("y ~ 1", [("y", "~1", "", 0, None, None, False, None)]),
    ("y ~ 0*1", [("y", "~1", "", 0, None, 0.0, False, None)]),
    ("f =~ NA*y1 + y2", [("f", "=~", "y1", 0, None, None, True, None), ("f", "=~", "y2", 0, None, None, False, None)]),
    ("f =~ 0.5*y1", [("f", "=~", "y1", 0, None, 0.5, False, None)]),
    ("y ~ -1.5*x", [("y", "~", "x", 0, None, -1.5, False, None)]),
    ("y ~ 1e-3*x", [("y", "~", "x", 0, None, 0.001, False, None)]),
    ("y ~ a*x", [("y", "~", "x", 0, "a", None, False, None)]),
    ("y ~ equal(\"a\")*x", [("y", "~", "x", 0, "a", None, False, None)]),
    ('y ~ prior("normal(0, 1)")*x', [("y", "~", "x", 0, None, None, False, "normal(0, 1)")]),
    ('y ~ a*prior("normal(0,1)")*x', [("y", "~", "x", 0, "a", None, False, "normal(0,1)")]),
    ("y ~ start(0.3)*x", [("y", "~", "x", 0, None, None, False, None)]),
    ("y1 + y2 ~ x", [("y1", "~", "x", 0, None, None, False, None), ("y2", "~", "x", 0, None, None, False, None)]),
    ("y ~ x; z ~ x", [("y", "~", "x", 0, None, None, False, None), ("z", "~", "x", 0, None, None, False, None)]),
    ("y ~ x # comment\n! another\nz ~ x", [("y", "~", "x", 0, None, None, False, None),
                                          ("z", "~", "x", 0, None, None, False, None)]),
    ("f =~ y1 +\n  y2", [("f", "=~", "y1", 0, None, None, False, None), ("f", "=~", "y2", 0, None, None, False, None)]),
    ("f =~ y1\n  + y2", [("f", "=~", "y1", 0, None, None, False, None), ("f", "=~", "y2", 0, None, None, False, None)]),
    ("level: 1\n y ~ x\nlevel: 2\n y ~ w", [("y", "~", "x", 1, None, None, False, None),
                                           ("y", "~", "w", 2, None, None, False, None)]),
    ("level: within\n y ~ x\nlevel: between\n y ~ w", [("y", "~", "x", 1, None, None, False, None),
                                                      ("y", "~", "w", 2, None, None, False, None)]),
    ("level:2\n y ~ w\nlevel:1\n y ~ x", [("y", "~", "w", 2, None, None, False, None),
                                         ("y", "~", "x", 1, None, None, False, None)]),
    ("ab := a*b", [("ab", ":=", "a * b", 0, None, None, False, None)]),
    # lavaan's thresholds of an ordinal variable, told apart from a random slope by the missing `~`
    ('u1 | a*t1 + -0.5*t2 + prior("normal(0, 1)")*t3', [
        ("u1", "|", "t1", 0, "a", None, False, None), ("u1", "|", "t2", 0, None, -0.5, False, None),
        ("u1", "|", "t3", 0, None, None, False, "normal(0, 1)")]),
    ("s | y ~ x", [("y", "~", "x", 0, None, None, False, None)]),
    ("my.var_1 =~ x.1 + x_2", [("my.var_1", "=~", "x.1", 0, None, None, False, None),
                               ("my.var_1", "=~", "x_2", 0, None, None, False, None)]),
])
def test_rows(text, expected):
    assert rows_of(text) == expected


def test_has_levels_and_positions():
    parsed = parse_model("level: 1\n  fw =~ y1 + y2\nlevel: 2\n  fb =~ y1 + y2")
    assert parsed.has_levels
    y2 = [r for r in parsed.rows if r.rhs == "y2"][0]
    assert (y2.line, y2.column) == (2, 14)
    assert not parse_model("f =~ y1 + y2").has_levels


MALFORMED = [
    # text, line, column, words expected in the message or hint
    ("f = y1 + y2", 1, 3, "did you mean `=~`"),
    ("f ~= y1", 1, 4, "did you mean `=~`"),
    ("f =~ y1 y2", 1, 9, "forget a `+`"),
    ("=~ y1", 1, 1, "expected a variable name before"),
    ("f =~", 1, 5, "expected a term after"),
    ("f =~ y1 +", 1, 10, "expected a term after `+`"),
    ("y ~ 2", 1, 5, "intercept is written y ~ 1"),
    ("f =~ y1 + + y2", 1, 11, "expected a variable name"),
    ("y1 y2 ~ x", 1, 4, "join several"),
    ("y ~ x\nf =~ y1 $ y2", 2, 9, "unexpected character"),
    ('y ~ prior("normal(0,1)*x', 1, 11, "unterminated string"),
    ("y ~ prior(normal)*x", 1, 11, "quoted string"),
    ('y ~ prior("normal(0,1)") x', 1, 26, "expected `*`"),
    ("level: 4\n y ~ x", 1, 8, "levels are 1"),
    ("level: 1\n y ~ x\nlevel: 3\n y ~ 1", 4, 1, "level 2 block is missing"),
    ("group: 1\n y ~ x", 1, 1, "not supported"),
    ("level: 1\n y ~ x\nlevel: 1\n y ~ w", 3, 1, "appears twice"),
    ("level: 1\n y ~ x", 2, 1, "level 2 block is missing"),
    ("y ~ x\nlevel: 1\n y ~ x\nlevel: 2\n y ~ w", 1, 5, "before the first `level:`"),
    ("y == x", 1, 3, "equality constraints"),
    ("a < 0", 1, 3, "inequality"),
    ("s | y ~ x + z", 1, 1, "one regression of one outcome"),
    ("s | f =~ y", 1, 1, "one regression of one outcome"),
    ("y ~ x | z", 1, 7, "write a random slope as"),
    ("1 | y ~ x", 1, 1, "name of the random slope"),
    ("u1 | t2 + t1", 1, 6, "threshold 1 of u1 is named 't2'"),
    ("s | y", 1, 5, "name the thresholds t1, t2"),
    ("u1 | t1 t2", 1, 9, "expected `+` or the end of the statement"),
    ('u1 | rv("s")*t1', 1, 6, "rv() marks a random slope and belongs to a regression"),
    ("u1 |", 1, 1, "`|` needs thresholds"),
    ('y ~ a*rv("s")*x', 1, 5, "no other modifiers"),
    ('f =~ rv("s")*y', 1, 6, "belongs to a regression"),
    ("f <~ x1 + x2", 1, 3, "formative"),
    ("y x", 1, 1, "no model operator"),
    ("ab := a*", 1, 7, "cannot read the expression"),
    ("ab := system(1)", 1, 7, "unknown function"),
    ("a + b := a*b", 1, 1, "one new parameter name"),
    ("y ~ 0*NA*x", 1, 5, "both fixed and free"),
    ('y ~ 0*prior("normal(0,1)")*x', 1, 5, "takes no prior"),
    ("y ~ a*b*x", 1, 7, "two label modifiers"),
    ("y ~ x\n\n   z ~~ ~ w", 3, 9, "expected a variable name"),
    ("", 1, 1, "the model is empty"),
    ("y ~ x = z", 1, 7, "only one operator"),
]


@pytest.mark.parametrize("text, line, column, words", MALFORMED)
def test_malformed_input_names_line_and_column(text, line, column, words):
    with pytest.raises(ModelSyntaxError) as info:
        parse_model(text)
    error = info.value
    assert (error.line, error.column) == (line, column), str(error)
    assert words in str(error)
    assert f"line {line}, column {column}" in str(error)
    assert "^" in str(error)  # the caret under the spot


def test_caret_points_at_the_column():
    with pytest.raises(ModelSyntaxError) as info:
        parse_model("f =~ y1 y2")
    source, caret = str(info.value).splitlines()[1:3]
    assert caret.index("^") == source.index("y2")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list("fy12 x=~+*;:\n#!()\"'abNA.-0") + ["level:", "=~", "~~", ":=", "prior(",
                                                                    "\nlevel: 1\n", "\nlevel: 2\n", "exp("]),
                max_size=25).map("".join))
def test_arbitrary_text_parses_or_raises_model_syntax_error(text):
    try:
        parse_model(text)
    except ModelSyntaxError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_unicode_parses_or_raises_model_syntax_error(text):
    try:
        parse_model(text)
    except ModelSyntaxError:
        pass


def test_random_slope_in_mplus_and_lavaan_style_give_the_same_row():
    mplus = parse_model("level: 1\n s | y ~ x\nlevel: 2\n s ~ w").rows[0]
    lavaan = parse_model('level: 1\n y ~ rv("s")*x\nlevel: 2\n s ~ w').rows[0]
    assert (mplus.lhs, mplus.op, mplus.rhs, mplus.random) == ("y", "~", "x", "s")
    assert (lavaan.lhs, lavaan.op, lavaan.rhs, lavaan.random) == ("y", "~", "x", "s")


def test_unknown_modifier_is_named():
    with pytest.raises(ModelSyntaxError, match=r"unknown modifier foo\(\)"):
        parse_model("y ~ foo(1)*x")


def test_names_may_use_letters_of_any_script():
    rows = parse_model("größe ~ ålder + año").rows
    assert [(r.lhs, r.rhs) for r in rows] == [("größe", "ålder"), ("größe", "año")]


def test_level_blocks_named_by_their_cluster_columns():
    """``level: class`` is level 2 when class is the first cluster column; a model
    of three levels is then named within, class, school in its results."""
    text = "level: within\n y ~ x\nlevel: class\n y ~ z\nlevel: school\n y ~ w"
    parsed = parse_model(text, ["class", "school"])
    assert [(r.rhs, r.level) for r in parsed.rows] == [("x", 1), ("z", 2), ("w", 3)]
    assert parsed.level_names == ("within", "class", "school")
    assert parse_model("level: 1\n y ~ x\nlevel: 2\n y ~ z", "class").level_names == ()  # two levels keep between
    with pytest.raises(ModelSyntaxError, match="unknown level 'class'") as error:
        parse_model(text)
    assert error.value.line == 3
    with pytest.raises(ModelSyntaxError, match="unknown level 'room'; the cluster columns here are class, school"):
        parse_model(text.replace("level: class", "level: room"), ["class", "school"])
