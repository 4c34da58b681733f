"""Ordinal (and binary) variables, part of stage 3: ``ordered=`` resolved and
checked against the data, and each ordinal column coded 0..K-1.

An ordinal variable is modelled through a latent response u*, cut by the
thresholds t1 < ... < t(K-1) into the K observed categories (a probit model).
Here only the data are read: which categories each column has, in which order,
and which declared categories no row uses (merged, with a message, because a
threshold between two categories needs rows on both sides to be estimated).

Example
-------
>>> import pandas as pd
>>> frame = pd.DataFrame({"u": [1, 3, 2, 3], "y": [0.5, 1.5, 0.2, 0.1]})
>>> coded, coding = code_ordinal(frame, ["u"], modelled=("u", "y"))
>>> coded["u"].tolist(), coding.categories["u"]
([0.0, 2.0, 1.0, 2.0], (1, 2, 3))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_msem.errors import DataError

__all__ = ["MAX_CATEGORIES", "ORDERED_TRUE_MAX", "OrdinalCoding", "code_ordinal"]

MAX_CATEGORIES = 20  # beyond this a continuous model does as well and costs less
ORDERED_TRUE_MAX = 10  # ``ordered=True`` takes integer columns with at most this many values


@dataclass(frozen=True)
class OrdinalCoding:
    """The ordinal variables and, for each, its categories in order (the
    values of the user's column that codes 0, 1, ... stand for)."""

    categories: dict[str, tuple]

    @property
    def n_categories(self) -> dict[str, int]:
        return {name: len(values) for name, values in self.categories.items()}


def _candidates(frame: pd.DataFrame, modelled: tuple[str, ...]) -> list[str]:
    """``ordered=True``: the modelled columns that hold few integer values."""
    names = []
    for name in modelled:
        column = frame[name] if name in frame else None
        if column is None:
            continue
        if isinstance(column.dtype, pd.CategoricalDtype):
            if column.cat.ordered:
                names.append(name)
            continue
        if not pd.api.types.is_numeric_dtype(column):
            continue
        values = np.unique(column.dropna().to_numpy(dtype=float))
        if 1 < len(values) <= ORDERED_TRUE_MAX and np.array_equal(values, np.round(values)):
            names.append(name)
    if not names:
        raise DataError(f"ordered=True found no modelled variable with at most {ORDERED_TRUE_MAX} integer values; "
                        "name the ordinal variables, as in ordered=['u1', 'u2']")
    return names


def _column_categories(name: str, column: pd.Series) -> tuple[list, np.ndarray]:
    """The categories of one column in order (only those some row uses) and
    each row's code (NaN where missing). Refuses what cannot be ordered."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        if not column.cat.ordered:
            raise DataError(f"ordinal variable {name!r} is an unordered categorical; declare its order, as in "
                            f"data[{name!r}] = pd.Categorical(data[{name!r}], categories=[...], ordered=True)")
        declared = list(column.cat.categories)
        used = [c for c in declared if (column == c).any()]
        empty = [c for c in declared if c not in used]
        codes = column.map({c: float(k) for k, c in enumerate(used)}).astype(float).to_numpy()
        return used, codes, empty
    if pd.api.types.is_bool_dtype(column):
        column = column.astype(float)
    if not pd.api.types.is_numeric_dtype(column):
        values = column.dropna()
        numeric = pd.to_numeric(values.astype(object), errors="coerce")
        if numeric.isna().any():
            shown = str(values[numeric.isna()].iloc[0])
            raise DataError(f"ordinal variable {name!r} holds text such as {shown!r}, whose order is unknown. Make it "
                            f"an ordered categorical: data[{name!r}] = pd.Categorical(data[{name!r}], categories=["
                            "lowest, ..., highest], ordered=True)")
        column = pd.to_numeric(column, errors="coerce")
    values = column.to_numpy(dtype=float)
    observed = values[~np.isnan(values)]
    if np.isinf(observed).any() or not np.array_equal(observed, np.round(observed)):
        bad = observed[np.isinf(observed) | (observed != np.round(observed))][0]
        raise DataError(f"ordinal variable {name!r} has the non-integer value {bad:g}; ordinal categories are coded "
                        "by whole numbers (or an ordered categorical). Model it as continuous by leaving it out of "
                        "ordered=.")
    used = np.unique(observed)
    empty = [v for v in range(int(used.min()), int(used.max()) + 1) if v not in used] if len(used) else []
    codes = np.where(np.isnan(values), np.nan, np.searchsorted(used, np.nan_to_num(values)))
    return [int(v) for v in used], codes.astype(float), empty


def code_ordinal(frame: pd.DataFrame, ordered, modelled: tuple[str, ...]) -> tuple[pd.DataFrame, OrdinalCoding]:
    """Resolve ``ordered=`` and code each ordinal column 0..K-1 (missing values kept).

    Parameters
    ----------
    frame
        The user's data.
    ordered
        Names of ordinal variables, or True for every modelled column with at
        most ``ORDERED_TRUE_MAX`` integer values (and every ordered categorical).
    modelled
        The model's modelled observed variables (outcomes and indicators).

    Raises
    ------
    DataError
        Naming the column: text without an order, non-integer values, one
        category, more than ``MAX_CATEGORIES``.
    """
    if ordered is None or ordered is False:
        return frame, OrdinalCoding({})
    if ordered is True:
        names = _candidates(frame, modelled)
    elif isinstance(ordered, str):
        names = [ordered]
    else:
        names = list(dict.fromkeys(ordered))
    categories, columns = {}, {}
    for name in names:
        if name not in frame.columns:
            raise DataError(f"ordered= names {name!r}, which is not a column of the data")
        if name not in modelled:
            raise DataError(f"{name!r} is declared ordinal but the model does not model it (it is a predictor, which "
                            f"enters with its values as they are, or not in the model); remove it from ordered=")
        used, codes, empty = _column_categories(name, frame[name])
        if len(used) < 2:
            raise DataError(f"ordinal variable {name!r} has {len(used)} observed category; it needs at least two. "
                            "Drop it from the model.")
        if len(used) > MAX_CATEGORIES:
            raise DataError(f"ordinal variable {name!r} has {len(used)} categories (more than {MAX_CATEGORIES}); "
                            "model it as continuous by leaving it out of ordered=")
        if empty:
            shown = ", ".join(str(c) for c in empty)
            warnings.warn(f"ordinal variable {name!r}: no row is in category {shown}; empty categories are merged "
                          f"with their neighbours, leaving {len(used)} categories ({len(used) - 1} thresholds)",
                          UserWarning, stacklevel=3)
        categories[name] = tuple(used)
        columns[name] = codes
    return frame.assign(**columns), OrdinalCoding(categories)
