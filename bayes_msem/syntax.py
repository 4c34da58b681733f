"""Stage 1: lavaan model text -> flat rows.

The parser is hand-written so that every error can name the line, the column
and the text (semopy's regex parser cannot). It knows nothing about defaults,
variable roles or data: it only turns text into :class:`SyntaxRow` objects, one
per ``lhs op rhs`` element the user wrote. :mod:`bayes_msem.partable` takes it
from there.

Example
-------
>>> rows = parse_model("f =~ y1 + a*y2\\nf ~ x").rows
>>> [(r.lhs, r.op, r.rhs, r.label) for r in rows]
[('f', '=~', 'y1', None), ('f', '=~', 'y2', 'a'), ('f', '~', 'x', None)]
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bayes_msem.errors import ModelSyntaxError

__all__ = ["SyntaxRow", "ParsedModel", "parse_model", "LEVEL_NAMES"]

LEVEL_NAMES = {1: "within", 2: "between", 3: "level 3"}
_LEVEL_WORDS = {"1": 1, "within": 1, "2": 2, "between": 2, "3": 3}
_LEVELS_HINT = ("levels are 1 (or within), 2 (or between) and, in a three-level model, 3; or the name of a "
                "level's cluster column (level: class with cluster=[\"class\", \"school\"])")

# Longest operators first so that "=~" is not read as "=" then "~".
_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>(?:[^\W\d]|\.)[\w.]*)  # letters of any script, as R allows: ä, é, ø
  | (?P<op>=~|~~|:=|==|<~|<=|>=|~|<|>|\||\+|\*|\(|\)|,|-|:|;|=|\^|/)
    """,
    re.VERBOSE,
)
_MODEL_OPS = ("=~", "~~", "~", ":=")
_UNSUPPORTED_OPS = {
    "==": "equality constraints are not supported yet; give both parameters the same label instead",
    "<": "inequality constraints are not supported yet",
    ">": "inequality constraints are not supported yet",
    "<=": "inequality constraints are not supported yet",
    ">=": "inequality constraints are not supported yet",
    "<~": "formative (composite) variables are not supported yet",
}
_MATH_FUNCTIONS = frozenset({"exp", "log", "sqrt", "abs", "tanh", "sin", "cos"})


@dataclass(frozen=True)
class Token:
    kind: str  # "name", "number", "string", "op"
    text: str
    line: int
    column: int
    source: str  # the whole source line, for error messages


@dataclass(frozen=True)
class SyntaxRow:
    """One model element as the user wrote it.

    ``op`` is one of ``=~ ~ ~~ ~1 | :=``; for ``~1`` the ``rhs`` is empty, for
    ``:=`` it is the expression text, for ``|`` (a threshold of an ordinal
    variable) the threshold's name ``t1``, ``t2``, ... ``fixed`` holds a fixed value, ``free``
    is True where the user wrote ``NA*``.
    """

    lhs: str
    op: str
    rhs: str
    level: int  # 0 = single-level model, 1 = within, 2 = between, 3 = the third level
    label: str | None = None
    fixed: float | None = None
    free: bool = False
    start: float | None = None
    prior: str | None = None
    random: str | None = None  # name of the random slope (`s | y ~ x` or `y ~ rv("s")*x`)
    line: int = 0
    column: int = 0
    text: str = ""


@dataclass(frozen=True)
class ParsedModel:
    """Result of :func:`parse_model`: the rows and whether level blocks were used."""

    rows: tuple[SyntaxRow, ...]
    has_levels: bool
    source_lines: tuple[str, ...] = field(default=(), repr=False)
    n_levels: int = 0  # the number of level blocks (0 without blocks)
    cluster_columns: tuple[str, ...] = ()  # the columns naming the units of levels 2, 3, ... (parse_model's cluster)

    @property
    def level_names(self) -> tuple[str, ...]:
        """How results name each level, lowest first: within and a cluster
        column per higher level in a model of more than two levels whose
        columns are known; empty otherwise (then :data:`LEVEL_NAMES`)."""
        if self.n_levels > 2 and len(self.cluster_columns) == self.n_levels - 1:
            return ("within",) + self.cluster_columns
        return ()

    @property
    def levels(self) -> tuple[int, ...]:
        """The level numbers: (0,) for a single-level model, else 1, 2, ..."""
        return tuple(range(1, self.n_levels + 1)) if self.has_levels else (0,)


def _error(token: Token, message: str, hint: str | None = None) -> ModelSyntaxError:
    return ModelSyntaxError(message, line=token.line, column=token.column, text=token.source, hint=hint)


def _strip_comment(line: str) -> str:
    """Drop a ``#`` or ``!`` comment, ignoring those inside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "#!":
            return line[:i]
    return line


def _tokenize_line(line: str, line_no: int) -> list[Token]:
    code = _strip_comment(line)
    tokens, pos = [], 0
    while pos < len(code):
        match = _TOKEN_RE.match(code, pos)
        if match is None:
            bad = Token("op", code[pos], line_no, pos + 1, line)
            if code[pos] in "\"'":
                raise _error(bad, "unterminated string", "close the quote, as in prior(\"normal(0, 1)\")")
            raise _error(bad, f"unexpected character {code[pos]!r}")
        kind = match.lastgroup
        if kind != "space":
            tokens.append(Token(kind, match.group(), line_no, pos + 1, line))
        pos = match.end()
    return tokens


class _StatementParser:
    """Parses the tokens of one statement into rows."""

    def __init__(self, tokens: list[Token], level: int):
        self.tokens = tokens
        self.pos = 0
        self.level = level

    # -- token helpers -------------------------------------------------
    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def next(self) -> Token:
        token = self.peek()
        if token is None:
            raise _error(self.tokens[-1], "statement ends too early", None)
        self.pos += 1
        return token

    def end_token(self) -> Token:
        last = self.tokens[-1]
        return Token("op", "", last.line, last.column + len(last.text), last.source)

    # -- grammar -------------------------------------------------------
    def parse(self) -> list[SyntaxRow]:
        if self._is_threshold_statement():
            return self._parse_thresholds()
        slope = self._random_slope_prefix()
        op_index = self._find_operator()
        op_token = self.tokens[op_index]
        lhs_tokens = self.tokens[:op_index]
        if not lhs_tokens:
            raise _error(op_token, f"expected a variable name before `{op_token.text}`")
        if op_token.text == ":=":
            return [self._parse_definition(lhs_tokens, op_index)]
        lhs_names = self._parse_lhs(lhs_tokens, op_token)
        self.pos = op_index + 1
        if self.peek() is None:
            raise _error(self.end_token(), f"expected a term after `{op_token.text}`")
        rows = []
        while True:
            rows.extend(self._parse_term(lhs_names, op_token))
            token = self.peek()
            if token is None:
                if slope is not None:
                    return self._attach_slope(rows, slope, op_token)
                return rows
            if token.text != "+":
                hint = "did you forget a `+` between terms?" if token.kind == "name" else None
                if token.text in ("=", "=~", "~", "~~"):
                    hint = "only one operator per statement; start a new line for the next one"
                raise _error(token, f"expected `+` or the end of the statement, found {token.text!r}", hint)
            self.next()
            if self.peek() is None:
                raise _error(self.end_token(), "expected a term after `+`")

    def _is_threshold_statement(self) -> bool:
        """``u | t1 + t2`` (lavaan's thresholds of an ordinal variable): a name,
        ``|``, and no model operator after it. A random slope ``s | y ~ x`` has one."""
        return (len(self.tokens) > 2 and self.tokens[1].text == "|"
                and not any(t.text in _MODEL_OPS for t in self.tokens[2:]))

    def _parse_thresholds(self) -> list[SyntaxRow]:
        """Rows ``u | t1``, ``u | t2``, ... with their modifiers (labels, fixed
        values, priors); each term must be named t1, t2, ... in order."""
        variable = self.tokens[0]
        if variable.kind != "name":
            raise _error(variable, "expected the name of an ordinal variable before `|`", "as in u | t1 + t2")
        self.pos = 2
        op_token = self.tokens[1]
        rows = []
        while True:
            term = self._parse_term([variable.text], op_token)
            expected = f"t{len(rows) + 1}"
            if term[0].rhs != expected:
                raise _error(self.tokens[self.pos - 1], f"threshold {len(rows) + 1} of {variable.text} is named "
                             f"{term[0].rhs!r}", f"name the thresholds t1, t2, ... in order, as in {variable.text} | "
                             "t1 + t2 + t3")
            rows.extend(term)
            token = self.peek()
            if token is None:
                return rows
            if token.text != "+":
                raise _error(token, f"expected `+` or the end of the statement, found {token.text!r}",
                             "as in u | t1 + t2 + t3")
            self.next()
            if self.peek() is None:
                raise _error(self.end_token(), "expected a threshold after `+`")

    def _random_slope_prefix(self) -> Token | None:
        """Consume ``s |`` (Mplus-style random slope) at the start of a statement."""
        if len(self.tokens) > 2 and self.tokens[1].text == "|":
            name = self.tokens[0]
            if name.kind != "name":
                raise _error(name, "expected the name of the random slope before `|`", "as in s | y ~ x")
            self.tokens = self.tokens[2:]
            return name
        if len(self.tokens) == 2 and self.tokens[1].text == "|":
            raise _error(self.tokens[0], "`|` needs thresholds (u | t1 + t2) or a random slope's regression "
                         "(s | y ~ x) after it")
        bar = next((t for t in self.tokens if t.text == "|"), None)
        if bar is not None:
            raise _error(bar, "`|` is only allowed after a single slope name at the start of a statement",
                         "write a random slope as s | y ~ x, or thresholds as u | t1 + t2")
        return None

    def _attach_slope(self, rows: list[SyntaxRow], slope: Token, op_token: Token) -> list[SyntaxRow]:
        if op_token.text != "~" or len(rows) != 1 or rows[0].op != "~":
            raise _error(slope, "a random slope names one regression of one outcome on one predictor",
                         "as in s | y ~ x; write one line per slope")
        row = rows[0]
        if row.random is not None or row.fixed is not None or row.label is not None or row.prior is not None:
            raise _error(slope, "a random slope takes no modifiers on its regression",
                         "its mean, variance and prior belong to the slope at level 2, as in s ~ 1")
        return [replace(row, random=slope.text)]

    def _find_operator(self) -> int:
        for index, token in enumerate(self.tokens):
            if token.kind != "op":
                continue
            if token.text in _MODEL_OPS:
                return index
            if token.text in _UNSUPPORTED_OPS:
                raise _error(token, _UNSUPPORTED_OPS[token.text])
            if token.text == "=":
                following = self.tokens[index + 1] if index + 1 < len(self.tokens) else None
                hint = "did you mean `=~` (is measured by) or `~` (is regressed on)?"
                if following is not None and following.text == "~" and following.column == token.column + 1:
                    hint = "did you mean `=~`?"
                raise _error(token, "`=` is not a model operator", hint)
        first = self.tokens[0]
        hint = "a statement needs an operator: =~ (measured by), ~ (regressed on), ~~ (covaries with), := (defined as)"
        if first.kind == "name" and first.text.lower() in ("level", "group"):
            hint = "write a level block as `level: 1` or `level: 2`"
        raise _error(first, "no model operator in this statement", hint)

    def _parse_lhs(self, tokens: list[Token], op_token: Token) -> list[str]:
        names = []
        expect_name = True
        for token in tokens:
            if expect_name:
                if token.kind != "name":
                    raise _error(token, f"expected a variable name before `{op_token.text}`, found {token.text!r}")
                names.append(token.text)
            elif token.text != "+":
                hint = "did you mean `=~`?" if token.text == "=" else "join several left-hand variables with `+`"
                raise _error(token, f"unexpected {token.text!r} before `{op_token.text}`", hint)
            expect_name = not expect_name
        if expect_name:
            raise _error(tokens[-1], f"expected a variable name after `+`, before `{op_token.text}`")
        return names

    def _parse_number(self) -> float:
        sign = 1.0
        if self.peek() is not None and self.peek().text == "-":
            self.next()
            sign = -1.0
        token = self.next()
        if token.kind != "number":
            raise _error(token, f"expected a number, found {token.text!r}")
        return sign * float(token.text)

    def _parse_call_argument(self, kind: str) -> Token:
        open_paren = self.next()
        if open_paren.text != "(":
            raise _error(open_paren, f"expected `(` after {kind}")
        if kind == "start" or kind == "fixed":
            value_token = self.peek()
            value = self._parse_number()
            argument = Token("number", repr(value), value_token.line, value_token.column, value_token.source)
        else:
            argument = self.next()
            if argument.kind != "string":
                raise _error(argument, f'{kind}() takes a quoted string, as in {kind}("...")')
        close = self.next()
        if close.text != ")":
            raise _error(close, f"expected `)` to close {kind}(")
        return argument

    def _parse_term(self, lhs_names: list[str], op_token: Token) -> list[SyntaxRow]:
        modifiers: dict[str, object] = {}
        first = self.peek()

        def set_modifier(key: str, value: object, token: Token) -> None:
            if key in modifiers:
                raise _error(token, f"this term has two {key} modifiers")
            modifiers[key] = value

        while True:
            token = self.peek()
            if token is None:
                raise _error(self.end_token(), "expected a variable name")
            after = self.peek(1)
            is_modifier = after is not None and after.text == "*"
            if token.kind == "name" and token.text in ("prior", "start", "equal", "rv", "label", "fixed") and (
                after is not None and after.text == "("
            ):
                self.next()
                argument = self._parse_call_argument(token.text)
                if token.text == "rv" and op_token.text != "~":
                    raise _error(token, "rv() marks a random slope and belongs to a regression (~)",
                                 'as in y ~ rv("s")*x')
                key = {"equal": "label", "label": "label", "fixed": "fixed", "rv": "random"}.get(token.text, token.text)
                value = argument.text if argument.kind == "number" else ast.literal_eval(argument.text)
                if key in ("start", "fixed"):
                    value = float(value)
                set_modifier(key, value, token)
                star = self.next() if self.peek() is not None else None
                if star is None or star.text != "*":
                    raise _error(star or self.end_token(), f"expected `*` after {token.text}(...)")
                continue
            if token.kind == "name" and after is not None and after.text == "(":
                raise _error(token, f"unknown modifier {token.text}()",
                             'modifiers are prior("..."), start(...), equal("..."), label("..."), fixed(...), rv("...")')
            if is_modifier and token.kind == "name":
                self.next()
                self.next()
                if token.text == "NA":
                    set_modifier("free", True, token)
                else:
                    set_modifier("label", token.text, token)
                continue
            if token.kind == "number" or token.text == "-":
                start = self.pos
                value = self._parse_number()
                star = self.peek()
                if star is not None and star.text == "*":
                    self.next()
                    set_modifier("fixed", value, token)
                    continue
                if op_token.text == "~" and value == 1.0 and self.pos == start + 1:
                    return self._rows(lhs_names, "~1", "", modifiers, first)
                raise _error(token, f"a number here must be followed by `*` and a variable name, found {token.text!r}",
                             "fix a parameter as in 0.5*x; an intercept is written y ~ 1")
            if token.kind != "name":
                hint = "did you mean `=~`?" if token.text == "=" else None
                raise _error(token, f"expected a variable name, found {token.text!r}", hint)
            self.next()
            if "fixed" in modifiers and "free" in modifiers:
                raise _error(first, "a term cannot be both fixed and free (NA*)")
            if "fixed" in modifiers and "prior" in modifiers:
                raise _error(first, "a fixed parameter takes no prior")
            if "random" in modifiers and len(modifiers) > 1:
                raise _error(first, "a random slope takes no other modifiers",
                             "its mean, variance and prior belong to the slope at level 2, as in s ~ 1")
            return self._rows(lhs_names, op_token.text, token.text, modifiers, first)

    def _rows(self, lhs_names, op, rhs, modifiers, token: Token) -> list[SyntaxRow]:
        return [
            SyntaxRow(
                lhs=lhs, op=op, rhs=rhs, level=self.level,
                label=modifiers.get("label"), fixed=modifiers.get("fixed"),
                free=bool(modifiers.get("free", False)), start=modifiers.get("start"),
                prior=modifiers.get("prior"), random=modifiers.get("random"),
                line=token.line, column=token.column, text=token.source,
            )
            for lhs in lhs_names
        ]

    def _parse_definition(self, lhs_tokens: list[Token], op_index: int) -> SyntaxRow:
        if len(lhs_tokens) != 1 or lhs_tokens[0].kind != "name":
            raise _error(lhs_tokens[0], "the left side of `:=` must be one new parameter name")
        expression_tokens = self.tokens[op_index + 1:]
        if not expression_tokens:
            raise _error(self.end_token(), "expected an expression after `:=`", "as in ab := a*b")
        expression = " ".join(t.text for t in expression_tokens)
        check_expression(expression, expression_tokens[0])
        name = lhs_tokens[0]
        return SyntaxRow(lhs=name.text, op=":=", rhs=expression, level=self.level,
                         line=name.line, column=name.column, text=name.source)


def check_expression(expression: str, token: Token) -> ast.Expression:
    """Parse a ``:=`` expression; only numbers, labels, + - * / ^ and a few
    math functions are allowed, so evaluating it can never run other code."""
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as err:
        raise _error(token, f"cannot read the expression {expression!r}", "as in ab := a*b") from err
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _MATH_FUNCTIONS) or node.keywords:
                raise _error(token, f"unknown function in {expression!r}",
                             f"allowed functions: {', '.join(sorted(_MATH_FUNCTIONS))}")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float)) or isinstance(node.value, bool):
                raise _error(token, f"only numbers and labels can appear in {expression!r}")
        elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load,
                                   ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)):
            raise _error(token, f"unsupported construct in {expression!r}", "use + - * / ^ and labels")
    return tree


def _level_directive(tokens: list[Token], columns: tuple[str, ...] = ()) -> int | None:
    """Return the level of a ``level: N`` line, or None if the statement is not
    one; ``columns`` name the levels from 2 upwards (``level: class``)."""
    first = tokens[0]
    if first.kind != "name" or first.text.lower() not in ("level", "group", "block"):
        return None
    if len(tokens) < 2 or tokens[1].text != ":":
        return None
    if first.text.lower() != "level":
        raise _error(first, f"`{first.text}:` blocks are not supported; only `level: 1`, `level: 2`, `level: 3`")
    if len(tokens) != 3:
        raise _error(tokens[-1] if len(tokens) > 3 else tokens[1], "expected `level: 1` or `level: 2`", _LEVELS_HINT)
    word = tokens[2].text.lower()
    if word in _LEVEL_WORDS:
        return _LEVEL_WORDS[word]
    if tokens[2].text in columns:
        return 2 + columns.index(tokens[2].text)
    named = f"; the cluster columns here are {', '.join(columns)}" if columns else ""
    raise _error(tokens[2], f"unknown level {tokens[2].text!r}{named}", _LEVELS_HINT)


def _tokenize(text: str) -> list[list[Token]]:
    """Tokenize, then split at ``;`` and join continued lines."""
    statements: list[list[Token]] = []
    current: list[Token] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        pieces: list[list[Token]] = [[]]
        for token in _tokenize_line(line, line_no):
            if token.text == ";":
                pieces.append([])
            else:
                pieces[-1].append(token)
        for piece_index, tokens in enumerate(pieces):
            if not tokens:
                continue
            continues = bool(current) and piece_index == 0 and (
                current[-1].text in ("+", "*", "=~", "~", "~~", ":=", "(", ",") or tokens[0].text == "+"
            )
            if current and not continues:
                statements.append(current)
                current = []
            current.extend(tokens)
    if current:
        statements.append(current)
    return statements


def parse_model(text: str, cluster: str | Sequence[str] | None = None) -> ParsedModel:
    """Parse lavaan-style model text into rows.

    Parameters
    ----------
    text
        The model, statements separated by new lines or ``;``.
    cluster
        The cluster column(s), level 2 first: a level block may be named by
        its column (``level: class``), and a model of three levels names its
        levels by them in the results.

    Raises
    ------
    ModelSyntaxError
        With line, column, the offending text and a hint.

    Examples
    --------
    >>> parse_model("level: 1\\n fw =~ y1 + y2\\nlevel: 2\\n fb =~ y1 + y2").has_levels
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"model text must be a string, not {type(text).__name__}")
    rows: list[SyntaxRow] = []
    level = 0
    seen_levels: list[int] = []
    columns = cluster_names(cluster)
    for tokens in _tokenize(text):
        directive = _level_directive(tokens, columns)
        if directive is not None:
            if directive in seen_levels:
                raise _error(tokens[0], f"level {directive} appears twice", "put all statements of a level in one block")
            seen_levels.append(directive)
            level = directive
            continue
        rows.extend(_StatementParser(tokens, level).parse())
    if seen_levels:
        first_level_row = next((r for r in rows if r.level == 0), None)
        if first_level_row is not None:
            raise ModelSyntaxError("statement before the first `level:` line", line=first_level_row.line,
                                   column=first_level_row.column, text=first_level_row.text,
                                   hint="in a two-level model every statement belongs to `level: 1` or `level: 2`")
        wanted = list(range(1, max(max(seen_levels), 2) + 1))
        if sorted(seen_levels) != wanted:
            last = text.splitlines()
            missing = next(k for k in wanted if k not in seen_levels)
            raise ModelSyntaxError(f"level {missing} block is missing", line=len(last), column=1,
                                   text=last[-1] if last else "",
                                   hint="a two-level model needs both `level: 1` and `level: 2`; a three-level "
                                        "model `level: 1`, `level: 2` and `level: 3`")
    if not rows:
        raise ModelSyntaxError("the model is empty", line=1, column=1, text=text.splitlines()[0] if text.strip() else "",
                               hint="write at least one statement, as in f =~ y1 + y2 + y3")
    return ParsedModel(rows=tuple(rows), has_levels=bool(seen_levels), source_lines=tuple(text.splitlines()),
                       n_levels=len(seen_levels), cluster_columns=columns)


def cluster_names(cluster: str | Sequence[str] | None) -> tuple[str, ...]:
    """The cluster column(s) as a tuple, level 2 first (none: ``()``)."""
    if cluster is None:
        return ()
    return (cluster,) if isinstance(cluster, str) else tuple(str(c) for c in cluster)

