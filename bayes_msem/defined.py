"""Defined parameters (``name := expression``), computed for every posterior draw.

Expressions may use labels of free or fixed parameters and earlier defined
names. Definitions are ordered by dependency and circular ones rejected, as
lavaan does (``lav_partable_constraints.R``); evaluation walks the checked
syntax tree, so no arbitrary code can run.

Example
-------
>>> import numpy as np
>>> evaluate_definitions([("ab", "a * b")], {"a": np.array([1.0, 2.0]), "b": np.array([3.0, 4.0])})
{'ab': array([3., 8.])}
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

import numpy as np
import pandas as pd

from bayes_msem.errors import ModelSyntaxError

__all__ = ["evaluate_definitions", "order_definitions", "check_definitions"]

_FUNCTIONS = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "tanh": np.tanh,
              "sin": np.sin, "cos": np.cos}
_OPERATORS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
              ast.Pow: np.power}


def _names(expression: str) -> set[str]:
    tree = ast.parse(expression.replace("^", "**"), mode="eval")
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _FUNCTIONS}


def order_definitions(definitions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Sort definitions so each comes after those it uses; raise on a cycle."""
    pending = dict(definitions)
    ordered: list[tuple[str, str]] = []
    while pending:
        ready = [name for name, expr in pending.items() if not (_names(expr) & set(pending) - {None})]
        if not ready:
            raise ValueError(f"circular definitions among {', '.join(sorted(pending))}")
        for name in ready:
            ordered.append((name, pending.pop(name)))
    return ordered


def check_definitions(rows: pd.DataFrame) -> None:
    """Check every ``:=`` row against the labels in the table; errors point at the model text."""
    defined = rows[rows.op == ":="]
    labels = set(rows.loc[rows.op != ":=", "label"].dropna())
    names = set(defined.lhs)
    for row in defined.itertuples():
        if row.lhs in labels:
            raise ModelSyntaxError(f"{row.lhs!r} is already a parameter label", line=row.line, column=row.column,
                                   text=row.text, hint="give the defined parameter a new name")
        unknown = _names(row.rhs) - labels - names
        if unknown:
            raise ModelSyntaxError(f"unknown label(s) {', '.join(sorted(unknown))} in {row.lhs} := {row.rhs}",
                                   line=row.line, column=row.column, text=row.text,
                                   hint="label the parameters first, as in y ~ b*m")
    if len(names) != len(defined):
        row = defined[defined.lhs.duplicated()].iloc[0]
        raise ModelSyntaxError(f"{row.lhs!r} is defined twice", line=row.line, column=row.column, text=row.text)
    try:
        order_definitions(list(zip(defined.lhs, defined.rhs)))
    except ValueError as err:
        row = defined.iloc[0]
        raise ModelSyntaxError(str(err), line=row.line, column=row.column, text=row.text) from err


def _evaluate(node: ast.AST, values: Mapping[str, np.ndarray]):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, values)
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        return _OPERATORS[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](*(_evaluate(a, values) for a in node.args))
    raise ValueError(f"unsupported expression element {ast.dump(node)}")


def evaluate_definitions(definitions: list[tuple[str, str]], values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate ``(name, expression)`` pairs draw by draw on arrays of label values."""
    scope = dict(values)
    results = {}
    for name, expression in order_definitions(definitions):
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
        results[name] = np.asarray(_evaluate(tree, scope), dtype=float)
        scope[name] = results[name]
    return results
