"""Path diagrams: where the boxes, arrows and numbers of one level go.

The layout is computed here, in inches, without drawing anything, so that it
can be tested (no two boxes overlap, no number covers a box or another number)
and :func:`bayes_msem.plots.path_diagram` only draws what it is given. Chosen
over graphviz because its ``dot`` program is not on a user's pip install.

The layout is layered, left to right: a variable's column is the length of the
longest chain of arrows (loadings, regressions, random slopes) that reaches it,
so factors stand left of their indicators and x -> m -> y reads as a chain.
Within a column the variables are ordered by the mean row of their neighbours
(the barycentre heuristic of Sugiyama et al. 1981), which removes most
crossings. Covariances are curved double-headed arrows that bulge away from
the columns; variances are printed under their box. Each number sits on its
arrow at the first point along it where it covers neither a box nor another
number.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Box", "DiagramEdge", "DiagramNode", "Diagram", "diagram_layout"]

FONT_SIZE = 10  # points, the numbers on the arrows; names are one point larger
CHAR_WIDTH = 0.6 * FONT_SIZE / 72  # inches per character of the numbers, DejaVu Sans on average
LINE_HEIGHT = 1.5 * FONT_SIZE / 72  # inches: a line of numbers in its white box
ROW_GAP = 1.0  # inches between the centres of boxes in a column
MARGIN = 0.5  # inches around the diagram
COVARIANCE_ACROSS_COLUMNS = 0.25  # the bend of covariances between columns
CANDIDATES = (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78)  # where along an arrow a number may sit, best first
# loadings fan out from their factor: near the indicator their numbers have room
LOADING_CANDIDATES = (0.72, 0.62, 0.82, 0.5, 0.4, 0.3)


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle: centre (x, y), width and height, in inches."""

    x: float
    y: float
    width: float
    height: float

    def overlap(self, other: Box) -> float:
        """Area the two rectangles share (0 when they are apart)."""
        dx = min(self.x + self.width / 2, other.x + other.width / 2) - max(self.x - self.width / 2,
                                                                             other.x - other.width / 2)
        dy = min(self.y + self.height / 2, other.y + other.height / 2) - max(self.y - self.height / 2,
                                                                              other.y - other.height / 2)
        return max(dx, 0.0) * max(dy, 0.0)


@dataclass(frozen=True)
class DiagramNode:
    """A variable: its box, whether it is latent (drawn as an ellipse), and its variance's text."""

    name: str
    box: Box
    latent: bool
    variance: str = ""


@dataclass(frozen=True)
class DiagramEdge:
    """An arrow from ``source`` to ``target``, drawn from ``start`` to ``end``
    (box centres, clipped at the boxes when drawn, or the outer sides of two
    boxes in one column). ``kind`` is ``"loading"``, ``"regression"``,
    ``"slope"`` (a random slope) or ``"covariance"`` (double-headed). ``rad``
    is the bend (matplotlib's ``arc3``: the control point sits ``rad`` times
    the arrow's length to the right of its middle)."""

    source: str
    target: str
    kind: str
    text: str
    rad: float
    label: Box
    start: tuple[float, float]
    end: tuple[float, float]

    @property
    def from_sides(self) -> bool:
        """Whether the arrow starts and ends on the boxes' sides (no clipping needed)."""
        return self.kind == "covariance" and self.rad != COVARIANCE_ACROSS_COLUMNS


@dataclass
class Diagram:
    """Everything :func:`~bayes_msem.plots.path_diagram` draws, in inches from the lower left corner."""

    width: float
    height: float
    nodes: dict[str, DiagramNode] = field(default_factory=dict)
    edges: list[DiagramEdge] = field(default_factory=list)


def _interval(row) -> str:
    if not row.free:
        return f"{row['mean']:.2f} (fixed)"
    return f"{row['median']:.2f} [{row['q2.5']:.2f}, {row['q97.5']:.2f}]"


def _arrows(summary: pd.DataFrame, level: str, slopes: dict[str, str], covariates: set[str]
            ) -> tuple[list, list, dict]:
    """(directed arrows, covariances, variances) of one level: arrows and
    covariances as (source, target, kind, text), variances as {name: text}.
    The covariates' own variances and covariances, fixed at their sample
    values, are left out (lavaan's summary hides them too)."""
    from bayes_msem.partable import _source_name

    rows = summary[summary.level == level]
    data_moments = (rows.op == "~~") & ~rows.free & rows.lhs.isin(covariates) & rows.rhs.isin(covariates)
    rows = rows[~data_moments]
    directed, covariances, variances = [], [], {}
    for _, row in rows.iterrows():
        if row.op == "=~":
            directed.append((row.lhs, row.rhs, "loading", _interval(row)))
        elif row.op == "~":  # a centred copy (m.cwc) is drawn as its variable, so x -> m -> y shows as a chain
            directed.append((_source_name(row.rhs), row.lhs, "regression", _interval(row)))
        elif row.op == "~~" and row.lhs == row.rhs:
            variances[row.lhs] = f"var {row['median']:.2f}" if row.free else f"var {row['mean']:.2f} (fixed)"
        elif row.op == "~~":
            value = f"{row['median']:.2f}" if row.free else f"{row['mean']:.2f} (fixed)"
            covariances.append((row.lhs, row.rhs, "covariance", value))
    for key, slope in slopes.items():
        outcome, predictor = key.split("~")
        mean = summary[(summary.lhs == slope) & (summary.op == "~1")]
        text = f"{slope}: random" if mean.empty else f"{slope}: {_interval(mean.iloc[0])}, random"
        directed.append((_source_name(predictor), outcome, "slope", text))
    return directed, covariances, variances


def _columns(names: list[str], directed: list) -> list[list[str]]:
    """Variables per column: the longest chain of arrows reaching each."""
    depth = {name: 0 for name in names}
    for _ in range(len(names)):  # longest path by relaxation; a cycle stops after n rounds
        changed = False
        for source, target, *_ in directed:
            if source != target and depth[target] < depth[source] + 1:
                depth[target] = depth[source] + 1
                changed = True
        if not changed:
            break
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=0) + 1)]
    for name in names:
        columns[depth[name]].append(name)
    return [column for column in columns if column]


def _order_columns(columns: list[list[str]], links: list[tuple[str, str]], sweeps: int = 4) -> list[list[str]]:
    """Order each column by the mean row of its neighbours in the columns
    already placed (barycentres), sweeping right, then left."""
    neighbours: dict[str, set[str]] = {}
    for a, b in links:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    columns = [list(c) for c in columns]

    def reorder(k: int, fixed: list[str]) -> None:
        row = {name: i for i, name in enumerate(fixed)}
        now = {name: i for i, name in enumerate(columns[k])}

        def centre(name: str) -> float:
            placed = [row[n] for n in neighbours.get(name, ()) if n in row]
            return sum(placed) / len(placed) if placed else now[name]
        columns[k].sort(key=centre)

    for sweep in range(sweeps):
        steps = range(1, len(columns)) if sweep % 2 == 0 else range(len(columns) - 2, -1, -1)
        for k in steps:
            reorder(k, columns[k - 1] if sweep % 2 == 0 else columns[k + 1])
    return columns


def _curve_point(a: tuple[float, float], b: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    """The point at ``t`` on matplotlib's ``arc3`` curve from ``a`` to ``b``."""
    (x0, y0), (x1, y1) = a, b
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    s = 1 - t
    return s * s * x0 + 2 * s * t * cx + t * t * x1, s * s * y0 + 2 * s * t * cy + t * t * y1


def _place_label(text: str, a, b, rad: float, obstacles: list[Box], candidates=CANDIDATES) -> Box:
    """The label's box at the first candidate point along the arrow that
    covers nothing, then just above or below the arrow, else where it covers least."""
    width, height = len(text) * CHAR_WIDTH + 0.1, LINE_HEIGHT
    best, best_cover = None, float("inf")
    for shift, t in itertools.product((0.0, height, -height, 2 * height, -2 * height), candidates):
        x, y = _curve_point(a, b, rad, t)
        box = Box(x, y + shift, width, height)
        cover = sum(box.overlap(o) for o in obstacles)
        if cover == 0:
            return box
        if cover < best_cover:
            best, best_cover = box, cover
    return best


def _covariance_path(a: Box, b: Box, column_a: int, column_b: int):
    """(start, end, bend) of a covariance arrow. Between columns: centre to
    centre, gently bent. In one column: from the outer side of one box to
    that of the other (left of the first column, right of the others),
    bulging further the further apart the boxes are."""
    if column_a != column_b:
        return (a.x, a.y), (b.x, b.y), COVARIANCE_ACROSS_COLUMNS
    left = column_a == 0
    side = -1 if left else 1
    rows_apart = abs(a.y - b.y) / ROW_GAP
    bulge = 0.7 + 0.05 * min(rows_apart, 4)
    going_down = b.y < a.y
    # arc3 bends to the right of the direction of travel: going down, that is to the left
    rad = bulge if going_down == left else -bulge
    # each end leaves its box from the half facing the other box, above the variance printed under it
    toward = -1 if going_down else 1
    lift = min(a.height, b.height) / 4
    return (a.x + side * a.width / 2, a.y + toward * lift), (b.x + side * b.width / 2, b.y - toward * lift), rad


def diagram_layout(summary: pd.DataFrame, level: str, latent: set[str], slopes: dict[str, str] | None = None,
                   covariates: set[str] = frozenset()) -> Diagram | None:
    """The path diagram of one level of :meth:`FitResult.summary` (None when
    the level has no variables to draw): loadings, regressions, random slopes
    (``slopes`` maps ``"y~x"`` to the slope's name), covariances and variances,
    each labelled with its posterior median (and 95% interval on directed
    arrows). ``covariates``: the exogenous observed variables, whose fixed
    moments are not drawn."""
    directed, covariances, variances = _arrows(summary, level, slopes or {}, covariates)
    names = list(dict.fromkeys([n for a in directed + covariances for n in a[:2]] + list(variances)))
    if not names:
        return None
    columns = _order_columns(_columns(names, directed), [(a, b) for a, b, *_ in directed + covariances])
    widest_text = max([len(text) for *_, text in directed] + [4])
    box_width = max(0.9, 0.11 * max(len(n) for n in names) + 0.3)
    column_gap = box_width + widest_text * CHAR_WIDTH + 0.6
    tallest = max(len(c) for c in columns)
    bulge_room = 1.6 if covariances else 0.0  # covariance arcs outside the first and last columns
    width = 2 * MARGIN + bulge_room * (2 if len(columns) > 1 else 1) + box_width + column_gap * (len(columns) - 1)
    height = 2 * MARGIN + ROW_GAP * tallest + 0.3
    diagram = Diagram(width=width, height=height)
    column_of = {}
    for k, column in enumerate(columns):
        x = MARGIN + bulge_room + box_width / 2 + k * column_gap
        for i, name in enumerate(column):
            y = height / 2 + (len(column) - 1) / 2 * ROW_GAP - i * ROW_GAP
            diagram.nodes[name] = DiagramNode(name, Box(x, y, box_width, 0.45), name in latent, variances.get(name, ""))
            column_of[name] = k
    obstacles = [node.box for node in diagram.nodes.values()]
    obstacles += [Box(node.box.x, node.box.y - 0.36, len(node.variance) * CHAR_WIDTH, LINE_HEIGHT)
                  for node in diagram.nodes.values() if node.variance]
    for source, target, kind, text in directed + covariances:
        a, b = diagram.nodes[source].box, diagram.nodes[target].box
        if kind == "covariance":
            start, end, rad = _covariance_path(a, b, column_of[source], column_of[target])
        else:  # arrows that jump a column arc over it
            start, end, rad = (a.x, a.y), (b.x, b.y), -0.25 if column_of[target] - column_of[source] > 1 else 0.0
        label = _place_label(text, start, end, rad, obstacles,
                             LOADING_CANDIDATES if kind == "loading" else CANDIDATES)
        obstacles.append(label)
        diagram.edges.append(DiagramEdge(source, target, kind, text, rad, label, start, end))
    return _fit_to_content(diagram)


def _fit_to_content(diagram: Diagram) -> Diagram:
    """Shift everything so that boxes, numbers and the bulge of every arc lie
    inside the margins, and size the diagram to them."""
    boxes = [n.box for n in diagram.nodes.values()] + [e.label for e in diagram.edges]
    points = [(b.x + sx * b.width / 2, b.y + sy * b.height / 2) for b in boxes for sx in (-1, 1) for sy in (-1, 1)]
    points += [_curve_point(edge.start, edge.end, edge.rad, 0.5) for edge in diagram.edges]
    left, bottom = min(x for x, _ in points) - MARGIN, min(y for _, y in points) - MARGIN - 0.4  # variances under boxes
    right, top = max(x for x, _ in points) + MARGIN, max(y for _, y in points) + MARGIN

    def shift(box: Box) -> Box:
        return Box(box.x - left, box.y - bottom, box.width, box.height)

    def move(point: tuple[float, float]) -> tuple[float, float]:
        return point[0] - left, point[1] - bottom
    return Diagram(width=right - left, height=top - bottom,
                   nodes={k: DiagramNode(n.name, shift(n.box), n.latent, n.variance) for k, n in diagram.nodes.items()},
                   edges=[DiagramEdge(e.source, e.target, e.kind, e.text, e.rad, shift(e.label), move(e.start),
                                      move(e.end)) for e in diagram.edges])
