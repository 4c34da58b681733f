"""Stage 4b: where every variable sits at every level, worked out once per model.

A model is a list of levels: one (single-level: rows), or two (rows within
clusters). Every stage after the matrices (engines, predictive checks,
simulation, cluster effects) reads this one frozen :class:`ModelLayout`
instead of working the positions out again. Level ``k`` of the list holds
its :class:`~bayes_msem.matrices.LevelStructure` and, for ``k >= 1``, how it
connects to level ``k - 1`` below it:

- the *split* variables, named at both levels, whose part at this level is a
  random intercept of the level below (lavaan's latent decomposition), and
  ``place``, which puts those parts into the positions of the observed
  variables below; at level 3 also the random slopes with a part there
  (``lift`` and ``lifted_slopes`` say which slopes below they move);
- the level's own observed *outcomes* (observed only at this level);
- the *cluster effects*: this level's variables that are not observed, one
  value per unit (latent cluster means, between factors, random slopes);
- the nodes with a random innovation (variance not fixed at zero);
- the *random effects* of the level below as the collapsed engine integrates
  them: the split variables' parts and the random slopes, each with the entry
  of (1, x) it multiplies.

The layout depends on the parameter table alone, not on data, so simulation
builds the same object as a fit.

Example
-------
>>> from bayes_msem.partable import build_partable
>>> layout = build_layout(build_partable("level: 1\\n f =~ y1 + y2\\nlevel: 2\\n fb =~ y1 + y2"))
>>> [level.name for level in layout.levels], layout.levels[1].effects
(['within', 'between'], ('y1', 'y2', 'fb'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from bayes_msem.matrices import LevelStructure, level_structures
from bayes_msem.partable import ParameterTable

__all__ = ["Placement", "LevelLayout", "ModelLayout", "build_layout"]


class Placement(NamedTuple):
    """How a level's variables meet the rows: ``split_at`` indexes this level's
    nodes that are parts of variables below (split variables, which come
    first among the nodes as observed ones, then a three-level model's slopes
    with a part at level 3), ``outcomes_at`` its own observed outcomes;
    ``place`` (the rows' observed x split) puts the split parts into the
    observed variables of the rows (level 1)."""

    split_at: np.ndarray
    outcomes_at: np.ndarray
    place: np.ndarray


def _int_array(values) -> np.ndarray:
    return np.array(list(values), dtype=int)


def _no_indices() -> np.ndarray:
    return _int_array(())


@dataclass(frozen=True, eq=False)
class LevelLayout:
    """One level of a model (see the module docstring). Arrays are never written to."""

    structure: LevelStructure
    name: str  # as the summary's level column shows it ("within", "between"; "" in a single-level model)
    units: str | None  # the column whose values are this level's units (None: rows)
    split: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    placement: Placement | None = None  # None at the lowest level
    effects: tuple[str, ...] = ()  # per-unit variables that are not observed: the cluster effects
    effect_nodes: np.ndarray = field(default_factory=_no_indices)
    innovations: np.ndarray = field(default_factory=_no_indices)  # nodes with a random innovation
    random_effects: tuple[str, ...] = ()  # the level below's random effects: split parts, then random slopes
    random_effect_nodes: np.ndarray = field(default_factory=_no_indices)
    random_effect_columns: np.ndarray = field(default_factory=_no_indices)  # the entry of (1, x) below each multiplies
    # random slopes of the level below on its covariates: the covariate and the node each sits on
    slope_covariates: np.ndarray = field(default_factory=_no_indices)
    slope_outcomes: np.ndarray = field(default_factory=_no_indices)
    # (the level below's random effects x split): puts a slope's part at this level into the slope of every
    # unit below it, as a move of that unit's prior mean (a three-level model's slope over schools)
    lift: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    # per split part: which of the level below's own random slopes (on its covariates) it is, else -1
    lifted_slopes: np.ndarray = field(default_factory=_no_indices)
    # (the level below's own outcomes x split): puts a part into an outcome observed at the level below (a class
    # outcome with a part at level 3), as ``place`` puts parts into the rows' variables
    outcome_place: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def observation_place(self) -> np.ndarray:
        """``place`` over the observation of a unit below: the rows' variables
        (their means), then the unit's own outcomes (``outcome_place``)."""
        return np.concatenate([self.placement.place, self.outcome_place], axis=0)

    @property
    def slope_parts(self) -> tuple[str, ...]:
        """The split parts that are random slopes of a level below (they move its units' slopes)."""
        return tuple(n for k, n in enumerate(self.split) if self.lift[:, k].any() or self.lifted_slopes[k] >= 0)

    def unit_lift(self, below_total, covariates, backend):
        """M_j (units below, the level below's random effects, split): how each
        split part moves the prior mean of every unit below's random effects.
        A slope of the rows is moved by its part (``lift``); a slope of the
        level below on its covariate w moves the node it sits on by w_j times
        the part, and through that node every effect that depends on it
        (``below_total`` rows of the effects: (I - A)^-1 of the level below)."""
        xp = backend.xp
        columns = []
        for k, slope in enumerate(self.lifted_slopes):
            column = xp.zeros((covariates.shape[0], self.lift.shape[0])) + self.lift[:, k][None]
            if slope >= 0:
                column = column + covariates[:, self.slope_covariates[slope]][:, None] * \
                    below_total[:, self.slope_outcomes[slope]][None]
            columns.append(column)
        return xp.stack(columns, axis=2)

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.structure.nodes

    @property
    def outcome_nodes(self) -> np.ndarray:
        """Node indices of the level's own outcomes (observed variables come first among nodes)."""
        return self.placement.outcomes_at if self.placement is not None else _int_array(())

    def effect_design(self, below_total, backend):
        """``D`` (observed below, random effects): the outcomes below that each
        random effect moves per unit of its entry of (1, x): a split part its own
        variable, a random slope the column of the level below's (I - A)^-1 for
        the node it sits on (``below_total``)."""
        rows = self.placement.place.shape[0]
        return backend.concatenate([self.placement.place, below_total[:rows][:, self.slope_outcomes]], axis=1)


@dataclass(frozen=True, eq=False)
class ModelLayout:
    """The levels of a model, lowest (rows) first."""

    levels: tuple[LevelLayout, ...]

    @property
    def multilevel(self) -> bool:
        return len(self.levels) > 1

    @property
    def rows(self) -> LevelLayout:
        """The lowest level: one unit per row."""
        return self.levels[0]

    @property
    def placement(self) -> Placement:
        """Level 2's :class:`Placement`, or an empty one where the model has one level."""
        if self.multilevel:
            return self.levels[1].placement
        p = self.rows.structure.n_observed
        return Placement(_int_array(()), _int_array(()), np.zeros((p, 0)))

    def structures(self) -> tuple[LevelStructure, ...]:
        return tuple(level.structure for level in self.levels)

    def crossed_slope_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Where each random slope of the rows sits among the first
        classification's effects, and among the second's (-1 where it has no
        part there): in a cross-classified model a row's slope is the sum of
        its two units' parts."""
        first, second = list(self.levels[1].effects), list(self.levels[2].effects)
        slopes = self.rows.structure.slopes
        return (_int_array([first.index(name) for name in slopes]),
                _int_array([second.index(name) if name in self.levels[2].slope_parts else -1 for name in slopes]))

    def refuse_beyond_two_levels(self, what: str) -> None:
        """Raise a ValueError naming ``what`` where the model has more than two levels."""
        if len(self.levels) > 2:
            raise ValueError(f"{what} is not available for three-level or cross-classified models yet; it takes "
                             "one or two levels")


def _upper_level(table: ParameterTable, structure: LevelStructure, below: LevelStructure, rows: LevelStructure,
                 units: str | None, below_effects: tuple[str, ...] = ()) -> LevelLayout:
    """Layout of a level above the rows, given the level below it (its
    structure, and the random effects it holds) and the rows' level (a split
    part adds to the observed variable of the rows, whichever levels lie
    between; a slope's part adds to the slope of the level below)."""
    observed_split = table.split_at(structure.level)
    slope_parts = tuple(n for n in structure.nodes[structure.n_observed:] if n in table.slopes) if structure.level > 2 else ()
    split = observed_split + slope_parts
    outcomes = tuple(n for n in structure.observed if n not in split)
    place = np.zeros((rows.n_observed, len(split)))
    of_rows = [k for k, n in enumerate(observed_split) if n in rows.observed]
    place[[rows.observed.index(observed_split[k]) for k in of_rows], of_rows] = 1.0
    # a part of an outcome of the level below (observed there, not in the rows)
    below_outcomes = tuple(n for n in below.observed if n not in table.split_at(below.level)) if below.level > 1 else ()
    outcome_place = np.array([[float(a == b) for b in split] for a in below_outcomes]).reshape(len(below_outcomes),
                                                                                                 len(split))
    lift = np.zeros((len(below_effects), len(split)))
    lifted_slopes = np.full(len(split), -1)
    for k, name in enumerate(slope_parts, start=len(observed_split)):
        if name in below_effects:  # a slope of the rows, with a part in every unit below
            lift[below_effects.index(name), k] = 1.0
        else:  # a slope of the level below on its covariate: a part at this level only
            lifted_slopes[k] = below.slopes.index(name)
    placement = Placement(_int_array(structure.nodes.index(n) for n in split),
                          _int_array(structure.observed.index(n) for n in outcomes), place)
    effects = tuple(n for n in structure.nodes if n not in outcomes)
    below_slopes = tuple(n for n in below.slopes if n not in split)  # random effects of the level below, not parts
    effect_nodes = _int_array(structure.nodes.index(n) for n in effects)
    slope_covariates, slope_outcomes = _slope_positions(below)
    return LevelLayout(
        structure=structure, name=table.level_name(structure.level), units=units, split=split, outcomes=outcomes,
        placement=placement, effects=effects, effect_nodes=effect_nodes,
        innovations=np.flatnonzero(~structure.fixed_zero_variance()),
        random_effects=split + below_slopes,
        random_effect_nodes=_int_array(structure.nodes.index(n) for n in split + below_slopes),
        random_effect_columns=_int_array([0] * len(split)
                                         + [1 + slope_covariates[below.slopes.index(n)] for n in below_slopes]),
        slope_covariates=slope_covariates, slope_outcomes=slope_outcomes, lift=lift, lifted_slopes=lifted_slopes,
        outcome_place=outcome_place)


def _slope_positions(structure: LevelStructure) -> tuple[np.ndarray, np.ndarray]:
    """For each random slope of ``structure`` on a covariate: the covariate it
    multiplies and the node it sits on (0, 0 for a slope on a modelled variable,
    which the collapsed engine does not take)."""
    if structure.slope_A_x is None:
        return _int_array(()), _int_array(())
    on = [structure.slope_A_x[k] for k in range(len(structure.slopes))]
    first = lambda flags: int(np.argmax(flags)) if flags.any() else 0  # noqa: E731
    return _int_array(first(s.any(axis=0)) for s in on), _int_array(first(s.any(axis=1)) for s in on)


def build_layout(table: ParameterTable, structures: list[LevelStructure] | None = None,
                 cluster: str | tuple[str, ...] | list[str] | None = None) -> ModelLayout:
    """The :class:`ModelLayout` of a parameter table (``structures`` from
    :func:`~bayes_msem.matrices.level_structures`, built here when not given;
    ``cluster`` the column naming level 2's units, or the columns of every
    level above the rows, level 2 first)."""
    structures = list(structures if structures is not None else level_structures(table))
    columns = list(cluster) if isinstance(cluster, list | tuple) else [cluster]
    lowest = structures[0]
    levels = [LevelLayout(structure=lowest, name=table.level_name(lowest.level), units=None)]
    for k, (below, structure) in enumerate(zip(structures, structures[1:])):
        levels.append(_upper_level(table, structure, below, lowest, columns[k] if k < len(columns) else None,
                                   levels[-1].random_effects))
    return ModelLayout(levels=tuple(levels))
