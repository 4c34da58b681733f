"""Errors users see: one class for model text, one for data, one helper that
points at the spot in the model text (line, column, caret), as lavaan does."""

from __future__ import annotations

__all__ = ["ModelSyntaxError", "ModelSpecificationError", "DataError", "point_at"]


def point_at(source_line: str, column: int) -> str:
    """Return the source line with a caret under 1-based ``column``."""
    return f"    {source_line}\n    {' ' * max(column - 1, 0)}^"


class ModelSyntaxError(ValueError):
    """Model text that cannot be parsed.

    Attributes ``line`` and ``column`` are 1-based; ``text`` is the source line.
    """

    def __init__(self, message: str, *, line: int, column: int, text: str, hint: str | None = None):
        self.message = message
        self.line = line
        self.column = column
        self.text = text
        self.hint = hint
        full = f"line {line}, column {column}: {message}\n{point_at(text, column)}"
        if hint:
            full += f"\n  hint: {hint}"
        super().__init__(full)


class ModelSpecificationError(ValueError):
    """A model that parses but cannot be estimated as written (duplicate
    parameters, circular definitions, unsupported constructs)."""


class DataError(ValueError):
    """Data that do not fit the model: names the variable, what is wrong and how to fix it."""
