"""Path diagram layout: every row drawn once, nothing overlapping, everything inside."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_msem.diagram import diagram_layout


def summary_of(rows: list[tuple[str, str, str]], level: str = "within", free: bool = True) -> pd.DataFrame:
    """A FitResult.summary()-shaped frame with made-up numbers."""
    records = [dict(lhs=lhs, op=op, rhs=rhs, level=level, label="", free=free, mean=0.5, sd=0.1, median=0.5,
                    **{"q2.5": 0.3, "q97.5": 0.7}, r_hat=1.0, ess_bulk=900.0, ess_tail=800.0)
               for lhs, op, rhs in rows]
    return pd.DataFrame.from_records(records)


def all_boxes(diagram):
    return [n.box for n in diagram.nodes.values()] + [e.label for e in diagram.edges]


def inside(diagram, box) -> bool:
    return (box.x - box.width / 2 >= 0 and box.x + box.width / 2 <= diagram.width
            and box.y - box.height / 2 >= 0 and box.y + box.height / 2 <= diagram.height)


@st.composite
def models(draw):
    """A random level: a DAG of regressions among up to 7 variables, some covariances and variances."""
    names = [f"v{i}" for i in range(draw(st.integers(2, 7)))]
    pairs = list(itertools.combinations(names, 2))
    regressions = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=6))
    covariances = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=4))
    rows = [(target, "~", source) for source, target in regressions]  # earlier -> later: no cycles
    rows += [(a, "~~", b) for a, b in covariances] + [(n, "~~", n) for n in names]
    return rows


@settings(max_examples=60, deadline=None)
@given(models())
def test_every_row_is_drawn_once_and_boxes_never_overlap(rows):
    diagram = diagram_layout(summary_of(rows), "within", latent=set())
    arrows = [(e.source, e.target, e.kind) for e in diagram.edges]
    expected = [(rhs, lhs, "regression") for lhs, op, rhs in rows if op == "~"]
    expected += [(lhs, rhs, "covariance") for lhs, op, rhs in rows if op == "~~" and lhs != rhs]
    assert sorted(arrows) == sorted(expected)
    assert all(diagram.nodes[lhs].variance for lhs, op, rhs in rows if op == "~~" and lhs == rhs)
    nodes = [n.box for n in diagram.nodes.values()]
    assert all(a.overlap(b) == 0 for a, b in itertools.combinations(nodes, 2))
    assert all(inside(diagram, box) for box in all_boxes(diagram))
    for source, target in [(rhs, lhs) for lhs, op, rhs in rows if op == "~"]:  # arrows point rightwards
        assert diagram.nodes[source].box.x < diagram.nodes[target].box.x


LAVAAN_TUTORIAL = [("fw", "=~", "y1"), ("fw", "=~", "y2"), ("fw", "=~", "y3"), ("fw", "~", "x1"), ("fw", "~", "x2"),
                   ("fw", "~", "x3"), ("y1", "~~", "y1"), ("y2", "~~", "y2"), ("y3", "~~", "y3"), ("fw", "~~", "fw")]
SLOPES_BETWEEN = [(a, "~~", b) for a, b in itertools.combinations(["m", "y", "a", "b", "cp"], 2)] + \
                 [(v, "~~", v) for v in ["m", "y", "a", "b", "cp"]]
THREE_FACTORS = [(f"f{k}", "=~", f"y{3 * k + i}") for k in range(3) for i in range(3)] + \
                [("f1", "~", "f0"), ("f2", "~", "f1"), ("f2", "~", "f0"), ("f0", "~~", "f0")]


@pytest.mark.parametrize("rows", [LAVAAN_TUTORIAL, SLOPES_BETWEEN, THREE_FACTORS],
                         ids=["lavaan-tutorial", "covariances-only", "three-factors"])
def test_numbers_cover_no_box_and_no_other_number_in_typical_models(rows):
    diagram = diagram_layout(summary_of(rows), "within", latent={"fw", "f0", "f1", "f2"})
    boxes = all_boxes(diagram)
    assert all(a.overlap(b) == 0 for a, b in itertools.combinations(boxes, 2))
    assert all(inside(diagram, box) for box in boxes)


def test_the_level_of_random_slopes_shows_its_covariances():
    """The report's between diagram of the random-slope mediation was empty
    although level 2 has 10 covariances."""
    diagram = diagram_layout(summary_of(SLOPES_BETWEEN, level="between"), "between", latent=set())
    assert sum(e.kind == "covariance" for e in diagram.edges) == 10
    assert set(diagram.nodes) == {"m", "y", "a", "b", "cp"}


def test_random_slopes_are_arrows_with_their_mean_and_defined_rows_draw_nothing():
    rows = summary_of([("m", "~", "x"), ("s", "~1", "")])
    rows.loc[1, "level"] = "between"
    defined = summary_of([("ind", ":=", "a*b")], level="")
    summary = pd.concat([rows, defined], ignore_index=True)
    diagram = diagram_layout(summary, "within", set(), slopes={"y~m": "s"})
    slope = [e for e in diagram.edges if e.kind == "slope"]
    assert [(e.source, e.target) for e in slope] == [("m", "y")] and slope[0].text.startswith("s: 0.50 [0.30, 0.70]")
    assert diagram_layout(summary, "", set()) is None
