"""MLflow's search filter, parsed by hand and compiled to parameterized SQL over the runs.

The grammar is MLflow's ``filter_string`` plus ``OR`` and parentheses (keywords in any
case; AND binds tighter than OR)::

    filter  := [or_expr]
    or_expr := and_expr (OR and_expr)*
    and_expr:= primary (AND primary)*
    primary := "(" or_expr ")" | clause
    clause  := ident ("=" | "!=" | ">" | ">=" | "<" | "<=" | LIKE | ILIKE) value
             | ident IS [NOT] NULL | ident [NOT] IN "(" string ("," string)* [","] ")"
    ident   := [entity "."] key        entity: metric(s) param(s) parameter(s) tag(s)
                                               attribute(s) attr run; none = attribute
    key     := bare | `backticked` | "double" | 'single'   (bare: letters, digits, _ . - / :)
    value   := 'single' | "double" | number    (a quote inside is doubled: 'it''s')

Semantics, following MLflow's SQL store unless said otherwise:

* A clause on a param, tag or metric the run lacks is false (``!=`` too); ``IS NULL`` is
  true exactly when the run lacks the key. A NaN metric (stored as NULL) satisfies only
  ``!=``. A NULL comparison (``end_time`` of a running run) counts as false; with AND
  and OR but no NOT, SQL's three-valued logic then selects exactly the same runs.
* ``LIKE`` is case-sensitive and compiles to ``GLOB`` with the pattern translated, so it
  needs no connection state (``PRAGMA case_sensitive_like`` is per connection).
  ``ILIKE`` folds case per character over all of Unicode (SQLite's ``lower()`` and
  ``LIKE`` only know ASCII) through ``evstore_ilike``, a function that
  ``register_search_functions`` adds to the connection.
* In a LIKE/ILIKE pattern ``%`` matches any run of characters, ``_`` exactly one, and a
  backslash makes the next character literal (``'50\\%'``), as on MLflow over PostgreSQL
  or MySQL. MLflow over SQLite and its file store have no escape at all: there a
  backslash is literal. A trailing lone backslash is literal here.
* Beyond MLflow: OR, parentheses, the ``lifecycle_stage`` attribute, case-insensitive
  entity prefixes, doubled quotes inside values (MLflow keeps both quotes), a leading
  ``+`` on numbers.

Order: each ``order_by`` key puts runs lacking the value last (for metrics: values, then
NaN, then missing), then ``start_time DESC`` (unless ordered by it) and ``run_id``; at
most ``MAX_ORDER_KEYS`` keys (MLflow has no limit), each one subquery, never a join.
Paging: ``max_results`` in 1..50,000 (or None for all) and MLflow's opaque page token,
base64 JSON of the offset.

A search runs within a time budget (``time_budget``: $EVSTORE_SEARCH_TIMEOUT seconds,
default 10) and past it raises ``SearchTimeout``. ``search_experiments`` filters parse with
the same parser under the experiments' grammar (``experiment_filter``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import operator
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from evstore.errors import FilterParseError, InvalidParameterValue, SearchTimeout

if TYPE_CHECKING:
    from evstore.entities import Experiment

METRIC, PARAM, TAG, ATTRIBUTE = "metric", "param", "tag", "attribute"
ENTITY_ALIASES: dict[str, str] = {
    "metric": METRIC, "metrics": METRIC,
    "param": PARAM, "params": PARAM, "parameter": PARAM, "parameters": PARAM,
    "tag": TAG, "tags": TAG,
    "attribute": ATTRIBUTE, "attributes": ATTRIBUTE, "attr": ATTRIBUTE, "run": ATTRIBUTE,
}  # fmt: skip
STRING_ATTRIBUTES = frozenset(
    {"run_id", "run_name", "status", "user_id", "artifact_uri", "lifecycle_stage"}
)
NUMERIC_ATTRIBUTES = frozenset({"start_time", "end_time"})
ATTRIBUTE_ALIASES: dict[str, str] = {
    "created": "start_time", "Created": "start_time",
    "run name": "run_name", "Run name": "run_name", "Run Name": "run_name",
}  # fmt: skip
LIST_ATTRIBUTES = frozenset({"run_id"})
MAX_RESULTS_LIMIT = 50_000
#: MLflow sets no limit; this one only bounds the work a single request may ask for.
MAX_ORDER_KEYS = 1000
VIEW_TYPES: dict[str, tuple[str, ...]] = {
    "ACTIVE_ONLY": ("active",), "DELETED_ONLY": ("deleted",), "ALL": ("active", "deleted"),
}  # fmt: skip

_COMPARISONS = frozenset({"=", "!=", ">", ">=", "<", "<="})
_STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE"})
_NULL_OPS = frozenset({"IS NULL", "IS NOT NULL"})
_ALLOWED_OPS: dict[str, frozenset[str]] = {
    METRIC: _COMPARISONS,
    PARAM: _STRING_OPS | _NULL_OPS,
    TAG: _STRING_OPS | _NULL_OPS,
}
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE", "ASC", "DESC"})
_MAX_DEPTH = 50
_MAX_CLAUSES = 1000
_BARE = re.compile(r"[\w.\-/:]+")
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s*")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Grammar:
    """What a filter may name: entity prefixes, attributes, and the operators of each."""

    entities: dict[str, str]
    string_attributes: frozenset[str]
    numeric_attributes: frozenset[str]
    attribute_aliases: dict[str, str]
    list_attributes: frozenset[str]
    key_hint: str
    entity_hint: str
    #: Attributes that take only these operators (experiment_id: =, !=, IN, NOT IN).
    attribute_ops: dict[str, frozenset[str]]
    integers_only: bool = False

    @property
    def attributes(self) -> frozenset[str]:
        return self.string_attributes | self.numeric_attributes

    def allowed_ops(self, entity: str, key: str) -> frozenset[str]:
        """The operators a clause on this entity and key may use."""
        if entity != ATTRIBUTE:
            return _ALLOWED_OPS[entity]
        if key in self.attribute_ops:
            return self.attribute_ops[key]
        if key in self.numeric_attributes:
            return _COMPARISONS
        return _STRING_OPS | {"IN", "NOT IN"} if key in self.list_attributes else _STRING_OPS


RUNS = Grammar(
    ENTITY_ALIASES, STRING_ATTRIBUTES, NUMERIC_ATTRIBUTES, ATTRIBUTE_ALIASES, LIST_ATTRIBUTES,
    key_hint="a key such as metrics.acc, params.lr, tags.`my tag` or attributes.status",
    entity_hint="metrics., params., tags. or attributes. (or an alias: metric, param,"
    " parameter, tag, attr, run)",
    attribute_ops={},
)  # fmt: skip
EXPERIMENTS = Grammar(
    {"tag": TAG, "tags": TAG, "attribute": ATTRIBUTE, "attributes": ATTRIBUTE, "attr": ATTRIBUTE},
    frozenset({"name", "experiment_id"}), frozenset({"creation_time", "last_update_time"}),
    {}, frozenset({"experiment_id"}),
    key_hint="a key such as name, creation_time, experiment_id or tags.`my tag`",
    entity_hint="tags. or attributes.",
    attribute_ops={"experiment_id": frozenset({"=", "!=", "IN", "NOT IN"})},
    integers_only=True,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Clause:
    """One comparison; ``op`` is upper-case, ``position`` is where its key starts."""

    entity: str
    key: str
    op: str
    value: float | int | str | tuple[str, ...] | None
    position: int


@dataclass(frozen=True, slots=True)
class BoolOp:
    """Two or more expressions joined by ``op``, AND or OR."""

    op: str
    items: tuple[Expr, ...]


Expr = Clause | BoolOp


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One ``order_by`` entry."""

    entity: str
    key: str
    ascending: bool


class _Parser:
    """Recursive descent over the text itself; each method consumes from ``self.pos``."""

    def __init__(self, text: str, what: str, grammar: Grammar = RUNS) -> None:
        self.text, self.what, self.pos, self.depth, self.clauses = text, what, 0, 0, 0
        self.grammar = grammar
        self.backslash_quote = False  # a quoted text ended in \' : the user meant an escape

    def fail(self, message: str, position: int | None = None) -> FilterParseError:
        position = self.pos if position is None else position
        # Show control characters as spaces so the caret stays under the right column.
        shown = "".join(" " if ch < " " or "\x7f" <= ch < "\xa0" else ch for ch in self.text)
        error = FilterParseError(f"Invalid {self.what}: {message}", shown, position)
        error.text = self.text
        return error

    def reject_surrogates(self) -> None:
        try:
            self.text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise self.fail("a lone surrogate is not text", e.start) from None

    def skip_space(self) -> None:
        self.pos = _SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def found(self) -> str:
        if self.pos >= len(self.text):
            return "the end of the text"
        word = _WORD.match(self.text, self.pos)
        return repr(word.group() if word else self.text[self.pos])

    def keyword(self, *expected: str) -> str | None:
        """Consume and return the (upper-cased) keyword if the next word is one of these."""
        self.skip_space()
        word = _WORD.match(self.text, self.pos)
        if word and word.group().isascii() and word.group().upper() in expected:
            self.pos = word.end()
            return word.group().upper()
        return None

    def hint(self) -> str:
        if not self.backslash_quote:
            return ""
        return (
            " (a backslash does not escape a quote: double it, as in 'it''s', "
            "or quote with the other kind)"
        )

    def expect(self, char: str, message: str) -> None:
        self.skip_space()
        if not self.text.startswith(char, self.pos):
            raise self.fail(f"{message}, found {self.found()}")
        self.pos += 1

    # --- boolean structure -------------------------------------------------------

    def parse_or(self) -> Expr:
        items = [self.parse_and()]
        while self.keyword("OR"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else BoolOp("OR", tuple(items))

    def parse_and(self) -> Expr:
        items = [self.parse_primary()]
        while self.keyword("AND"):
            items.append(self.parse_primary())
        return items[0] if len(items) == 1 else BoolOp("AND", tuple(items))

    def parse_primary(self) -> Expr:
        self.skip_space()
        if not self.text.startswith("(", self.pos):
            return self.parse_clause()
        opening = self.pos
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(f"parentheses nested deeper than {_MAX_DEPTH}")
        self.pos += 1
        expr = self.parse_or()
        self.skip_space()
        if not self.text.startswith(")", self.pos):
            raise self.fail(
                f"expected AND, OR or ')' closing the '(' at {opening}, "
                f"found {self.found()}{self.hint()}"
            )
        self.pos += 1
        self.depth -= 1
        return expr

    # --- one clause --------------------------------------------------------------

    def quoted(self) -> str:
        """A quoted string at ``self.pos``; the quote character doubled stands for itself."""
        quote, start = self.text[self.pos], self.pos
        parts, i = [], start + 1
        while True:
            end = self.text.find(quote, i)
            if end < 0:
                raise self.fail(f"unterminated {quote}-quoted text starting here", start)
            parts.append(self.text[i:end])
            if self.text.startswith(quote, end + 1):
                parts.append(quote)
                i = end + 2
                continue
            self.pos = end + 1
            self.backslash_quote = self.text[end - 1] == "\\"
            return "".join(parts)

    def key_after_prefix(self, prefix: str) -> str:
        if self.pos < len(self.text) and self.text[self.pos] in "`\"'":
            return self.quoted()
        bare = _BARE.match(self.text, self.pos)
        if bare is None:
            raise self.fail(f"expected a key after '{prefix}.', found {self.found()}")
        self.pos = bare.end()
        return bare.group()

    def identifier(self, attributes: frozenset[str]) -> tuple[str, str, int]:
        """Parse ``[entity.]key``; return (entity, key, position of the key)."""
        self.skip_space()
        start = self.pos
        prefix: str | None = None
        if self.pos < len(self.text) and self.text[self.pos] in "`\"":
            key, key_at = self.quoted(), start
            if self.text.startswith(".", self.pos):
                self.pos += 1
                prefix, key = key, ""
        else:
            bare = _BARE.match(self.text, self.pos)
            if bare is None or bare.group().upper() in _KEYWORDS:
                raise self.fail(f"expected {self.grammar.key_hint}, found {self.found()}")
            self.pos = bare.end()
            head, dot, rest = bare.group().partition(".")
            key, key_at = (rest, start + len(head) + 1) if dot else (head, start)
            prefix = head if dot else None
        entity = ATTRIBUTE
        if prefix is not None:
            aliases = self.grammar.entities
            found = aliases.get(prefix.lower()) if prefix.isascii() else None
            if found is None:
                raise self.fail(
                    f"unknown entity {prefix!r}: expected {self.grammar.entity_hint}", start
                )
            entity = found
            if not key:
                key_at = self.pos
                key = self.key_after_prefix(prefix)
        if key == "":
            raise self.fail("the key is empty", key_at)
        if entity == ATTRIBUTE:
            key = self.grammar.attribute_aliases.get(key, key)
            if key not in attributes:
                raise self.fail(
                    f"unknown attribute {key!r}: expected one of {', '.join(sorted(attributes))}",
                    key_at,
                )
        return entity, key, key_at

    def operator(self, entity: str, key: str) -> str:
        self.skip_space()
        at = self.pos
        for symbol in (">=", "<=", "!=", "<>", "==", "=", "<", ">"):
            if self.text.startswith(symbol, at):
                self.pos += len(symbol)
                op = symbol
                break
        else:
            word = self.keyword("LIKE", "ILIKE", "IN", "IS", "NOT")
            if word == "IS":
                op = "IS NOT NULL" if self.keyword("NOT") else "IS NULL"
                if not self.keyword("NULL"):
                    raise self.fail(f"expected NULL after {op[:-5]}, found {self.found()}")
            elif word == "NOT":
                if not self.keyword("IN"):
                    raise self.fail(f"expected IN after NOT, found {self.found()}")
                op = "NOT IN"
            elif word is None:
                raise self.fail(
                    f"expected an operator ({' '.join(sorted(self.grammar.allowed_ops(entity, key)))}), "
                    f"found {self.found()}"
                )
            else:
                op = word
        if op in ("<>", "=="):
            raise self.fail(f"unknown operator {op!r}: use {'!=' if op == '<>' else '='}", at)
        allowed = self.grammar.allowed_ops(entity, key)
        if op not in allowed:
            raise self.fail(
                f"operator {op} cannot be used on {_describe(entity, key)}; "
                f"expected one of: {', '.join(sorted(allowed))}",
                at,
            )
        return op

    def string_list(self) -> tuple[str, ...]:
        self.expect("(", "expected '(' starting a list of quoted strings")
        items: list[str] = []
        while True:
            self.skip_space()
            if items and self.text.startswith(")", self.pos):
                break
            if self.pos >= len(self.text) or self.text[self.pos] not in "'\"":
                raise self.fail(f"expected a quoted string in the list, found {self.found()}")
            items.append(self.quoted())
            self.skip_space()
            if not self.text.startswith(",", self.pos):
                break
            self.pos += 1
        self.expect(")", "expected ',' or ')' in the list")
        return tuple(items)

    def value(self, entity: str, key: str) -> float | int | str:
        self.skip_space()
        at = self.pos
        numeric = entity == METRIC or (
            entity == ATTRIBUTE and key in self.grammar.numeric_attributes
        )
        if self.pos < len(self.text) and self.text[self.pos] in "'\"":
            text = self.quoted()
            if numeric:
                raise self.fail(f"{_describe(entity, key)} compares with a number, not a string", at)
            return text
        number = _NUMBER.match(self.text, self.pos)
        if number is None or _WORD.match(self.text, number.end()) or self.text.startswith(
            ".", number.end()
        ):
            kind = "a number" if numeric else "a quoted string such as 'value'"
            raise self.fail(f"expected {kind}, found {self.found()}")
        if not numeric:
            raise self.fail(
                f"{_describe(entity, key)} compares with a quoted string such as "
                f"'{number.group()}', not a number",
                at,
            )
        if self.grammar.integers_only and not number.group().lstrip("+-").isdigit():
            raise self.fail(f"{_describe(entity, key)} compares with an integer", at)
        self.pos = number.end()
        return _to_number(number.group(), as_float=entity == METRIC)

    def parse_clause(self) -> Clause:
        self.clauses += 1
        if self.clauses > _MAX_CLAUSES:
            self.skip_space()
            raise self.fail(
                f"more than {_MAX_CLAUSES} clauses (SQLite slows down past that); "
                "for a long list of runs use run_id IN (...)"
            )
        entity, key, key_at = self.identifier(self.grammar.attributes)
        op = self.operator(entity, key)
        value: float | int | str | tuple[str, ...] | None = None
        if op in ("IN", "NOT IN"):
            value = self.string_list()
        elif op not in _NULL_OPS:
            value = self.value(entity, key)
        return Clause(entity, key, op, value, key_at)


def _describe(entity: str, key: str) -> str:
    return f"{entity} {key!r}"


def _to_number(text: str, as_float: bool) -> float | int:
    if as_float or not text.lstrip("+-").isdigit() or len(text) > 18:
        return float(text)  # huge literals become inf, which SQLite compares fine
    return int(text)


def parse_filter(filter_string: str | None, grammar: Grammar = RUNS) -> Expr | None:
    """Parse an MLflow-style filter; None when it is empty; FilterParseError if bad."""
    if filter_string is None:
        return None
    if not isinstance(filter_string, str):
        raise InvalidParameterValue(f"filter_string must be a string, not {filter_string!r}")
    parser = _Parser(filter_string, "filter", grammar)
    parser.reject_surrogates()
    if parser.at_end():
        return None
    expr = parser.parse_or()
    if not parser.at_end():
        found = parser.found()
        if found == "')'":
            raise parser.fail("this ')' closes no '('")
        raise parser.fail(
            f"expected AND, OR or the end of the filter, found {found}{parser.hint()}"
        )
    return expr


def parse_order_by(order_by: Sequence[str] | str | None) -> list[OrderKey]:
    """Parse ``order_by`` entries like ``metrics.acc DESC``; duplicates are an error."""
    if order_by is None:
        return []
    if isinstance(order_by, str):
        order_by = [order_by]
    if len(order_by) > MAX_ORDER_KEYS:
        raise InvalidParameterValue(
            f"order_by has {len(order_by)} entries; at most {MAX_ORDER_KEYS} are accepted"
        )
    keys: list[OrderKey] = []
    seen: set[tuple[str, str]] = set()
    for entry in order_by:
        if not isinstance(entry, str):
            raise InvalidParameterValue(f"order_by entries must be strings, not {entry!r}")
        parser = _Parser(entry, "order_by clause")
        parser.reject_surrogates()
        entity, key, _ = parser.identifier(RUNS.attributes)
        direction = parser.keyword("ASC", "DESC")
        if not parser.at_end():
            raise parser.fail(f"expected ASC, DESC or the end, found {parser.found()}")
        if (entity, key) in seen:
            raise InvalidParameterValue(f"order_by names {entity} {key!r} twice: {order_by}")
        seen.add((entity, key))
        keys.append(OrderKey(entity, key, direction != "DESC"))
    return keys


# --- experiments -----------------------------------------------------------------------


def experiment_filter(filter_string: str) -> Callable[[Experiment], bool]:
    """The test an experiment must pass for a ``search_experiments`` filter.

    MLflow's grammar: ``name`` (=, !=, LIKE, ILIKE), ``experiment_id`` (=, !=, IN, NOT IN
    with quoted integers), ``creation_time`` and ``last_update_time`` (comparisons with
    integers), ``tags.<key>`` (=, !=, LIKE, ILIKE, IS NULL, IS NOT NULL), joined by AND.
    Beyond MLflow, as for runs: OR, parentheses, the ``attributes.`` prefix. A clause on a
    tag the experiment lacks is false (``!=`` too), as in MLflow.
    """
    if not isinstance(filter_string, str):
        raise InvalidParameterValue(f"filter_string must be a string, not {filter_string!r}")
    return _experiment_filter(filter_string)


@functools.lru_cache(maxsize=64)
def _experiment_filter(filter_string: str) -> Callable[[Experiment], bool]:
    expr = parse_filter(filter_string, EXPERIMENTS)
    return (lambda experiment: True) if expr is None else _experiment_test(expr)


def _experiment_test(expr: Expr) -> Callable[[Experiment], bool]:
    if isinstance(expr, BoolOp):
        tests = [_experiment_test(item) for item in expr.items]
        if expr.op == "AND":
            return lambda experiment: all(test(experiment) for test in tests)
        return lambda experiment: any(test(experiment) for test in tests)
    clause = expr
    if clause.entity == TAG:
        if clause.op in _NULL_OPS:
            present = clause.op == "IS NOT NULL"
            return lambda experiment: (clause.key in experiment.tags) == present
        compare = _string_compare(clause.op, clause.value)
        return lambda experiment: (
            clause.key in experiment.tags and compare(experiment.tags[clause.key])
        )
    if clause.key == "experiment_id":
        wanted = {_experiment_id(clause, v) for v in _as_tuple(clause.value)}
        inside = clause.op in ("=", "IN")
        return lambda experiment: (_id_number(experiment.experiment_id) in wanted) == inside
    if clause.key in EXPERIMENTS.numeric_attributes:
        compare_number = _NUMBER_TESTS[clause.op]
        key, value = clause.key, clause.value
        return lambda experiment: (
            getattr(experiment, key) is not None and compare_number(getattr(experiment, key), value)
        )
    compare = _string_compare(clause.op, clause.value)
    return lambda experiment: compare(experiment.name)


_NUMBER_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}  # fmt: skip


def _string_compare(op: str, value: Any) -> Callable[[str], bool]:
    if op == "=":
        return lambda found: found == value
    if op == "!=":
        return lambda found: found != value
    return like_matcher(value, ignore_case=op == "ILIKE")


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


def _experiment_id(clause: Clause, value: str) -> int:
    """An experiment id of a filter as MLflow reads it: an integer in quotes."""
    try:
        return int(value)
    except ValueError:
        raise InvalidParameterValue(
            f"Invalid experiment ID {value!r} in the filter: an experiment ID is an integer"
            " in quotes, as in experiment_id = '1'"
        ) from None


def _id_number(experiment_id: str) -> int | None:
    return int(experiment_id) if experiment_id.isdigit() else None


# --- time budget -----------------------------------------------------------------------

#: Seconds a search may run before it is stopped, unless $EVSTORE_SEARCH_TIMEOUT says.
DEFAULT_SEARCH_TIMEOUT = 10.0
#: SQLite virtual-machine steps between two looks at the clock.
_BUDGET_STEPS = 10_000


def search_timeout() -> float:
    """The time budget of one search in seconds: $EVSTORE_SEARCH_TIMEOUT, else 10
    (``inf`` for none)."""
    text = os.environ.get("EVSTORE_SEARCH_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_SEARCH_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise InvalidParameterValue(
            f"EVSTORE_SEARCH_TIMEOUT must be a number of seconds (0 or more, inf for no"
            f" limit), not {text!r}"
        )
    return seconds


@contextmanager
def time_budget(connection: sqlite3.Connection, seconds: float | None = None) -> Iterator[None]:
    """Stop the statements run on ``connection`` inside the block once ``seconds`` (default:
    ``search_timeout()``) have passed, raising ``SearchTimeout``."""
    budget = search_timeout() if seconds is None else seconds
    own_budget = getattr(connection, "time_budget", None)
    if own_budget is not None:  # a backend whose connection keeps its own clock
        with own_budget(budget):
            yield
        return
    if budget == math.inf:
        yield
        return
    deadline = time.monotonic() + budget
    connection.set_progress_handler(lambda: time.monotonic() >= deadline, _BUDGET_STEPS)
    try:
        yield
    except sqlite3.OperationalError as e:
        if "interrupted" not in str(e):
            raise
        raise SearchTimeout(
            f"The search ran past its time budget of {budget:g} s and was stopped: narrow"
            " the filter (fewer experiments, fewer LIKE/ILIKE clauses), or raise"
            " EVSTORE_SEARCH_TIMEOUT on the server."
        ) from e
    finally:
        connection.set_progress_handler(None, 0)


# --- LIKE patterns -------------------------------------------------------------------

_ANY, _ONE = object(), object()
_GLOB_SPECIAL = {"*": "[*]", "?": "[?]", "[": "[[]"}
_GLOB_MAX_BYTES = 40_000  # SQLite refuses LIKE/GLOB patterns over 50,000 bytes


def _like_items(pattern: str) -> list[object]:
    """Split a LIKE pattern into literal characters, _ONE and _ANY (backslash escapes)."""
    items: list[object] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            items.append(next(chars, "\\"))
        else:
            items.append(_ANY if ch == "%" else _ONE if ch == "_" else ch)
    return items


def like_to_glob(pattern: str) -> str:
    """Translate a LIKE pattern (``%``, ``_``, backslash escapes) to an SQLite GLOB."""
    return "".join(
        "*" if it is _ANY else "?" if it is _ONE else _GLOB_SPECIAL.get(it, it)  # type: ignore[call-overload]
        for it in _like_items(pattern)
    )


@functools.lru_cache(maxsize=256)
def like_matcher(pattern: str, ignore_case: bool) -> Callable[[str], bool]:
    """A matcher for a LIKE pattern; ILIKE folds case per character over all of Unicode.

    No backtracking across ``%`` (a regex's ``.*`` can blow up): the pattern splits at
    each ``%`` into fixed-length chunks, the first anchored at the start, the last at
    the end, the rest found leftmost in between; at worst len(value) * len(pattern).
    """
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    chunks: list[list[object]] = [[]]
    for item in _like_items(pattern):
        if item is _ANY:
            chunks.append([])
        else:
            chunks[-1].append(item)
    compiled = [
        (re.compile("".join("." if it is _ONE else re.escape(cast(str, it)) for it in c), flags), len(c))
        for c in chunks
    ]

    def match(value: str) -> bool:
        if len(compiled) == 1:
            return compiled[0][0].fullmatch(value) is not None
        (first, first_len), (last, last_len) = compiled[0], compiled[-1]
        tail = len(value) - last_len
        if tail < first_len or not first.match(value) or not last.match(value, tail):
            return False
        pos = first_len
        for chunk, _length in compiled[1:-1]:
            found = chunk.search(value, pos, tail)
            if found is None:
                return False
            pos = found.end()
        return True

    return match


def _sql_like(value: Any, pattern: Any) -> int | None:
    if value is None or pattern is None:
        return None
    return int(like_matcher(str(pattern), False)(str(value)))


def _sql_ilike(value: Any, pattern: Any) -> int | None:
    if value is None or pattern is None:
        return None
    return int(like_matcher(str(pattern), True)(str(value)))


def register_search_functions(connection: sqlite3.Connection) -> None:
    """Add evstore_like/evstore_ilike to a connection; compiled searches may call them."""
    connection.create_function("evstore_like", 2, _sql_like, deterministic=True)
    connection.create_function("evstore_ilike", 2, _sql_ilike, deterministic=True)


def _ensure_search_functions(connection: sqlite3.Connection) -> None:
    """Register the functions once per connection: registering again would expire every
    statement SQLite has prepared on it, and re-preparing them tripled a search's time."""
    try:
        connection.execute("SELECT evstore_like('', '')").fetchone()
    except sqlite3.OperationalError:
        register_search_functions(connection)


# --- compiling -----------------------------------------------------------------------

_ENTITY_TABLES = {METRIC: "latest_metrics", PARAM: "params", TAG: "tags"}
_SHORT_LIST = 50


class CompiledSearch(NamedTuple):
    """Parameterized SQL selecting the page's run ids (one more row than the page).

    ``sql`` walks the runs of the chosen experiments. When the filter ANDs clauses that
    only runs having a key can pass, ``plans`` also holds, per such clause, the same
    search driven from that clause's index instead, and ``probes`` the counts that pick
    one (``choose_plan``). Every plan selects the same rows in the same order.
    """

    sql: str
    params: tuple[Any, ...]
    offset: int
    max_results: int | None
    plans: tuple[str, ...] = ()
    probes: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def page(self, run_ids: Sequence[str]) -> tuple[list[str], str | None]:
        """Trim the fetched ids to the page; return them and the next page token."""
        if self.max_results is None or len(run_ids) <= self.max_results:
            return list(run_ids), None
        return list(run_ids[: self.max_results]), create_page_token(
            self.offset + self.max_results
        )


class SearchDialect:
    """What a compiled search says differently per database; this one is SQLite's.

    A backend subclasses it (``evstore.stores.postgres_readmodels``) and its read
    connection names its own as ``search_dialect``.
    """

    name = "sqlite"
    #: Put before a column to keep the planner from looking rows up through its index.
    unindexed = "+"
    #: What a subquery in FROM is named (SQLite needs no name).
    probe_alias = ""
    #: The LIMIT that means no limit.
    no_limit: int | None = -1
    #: A list of no values, after IN.
    empty_list = "()"

    def like(self, column: str, pattern: str, params: list[Any], ignore_case: bool) -> str:
        """A LIKE (or ILIKE) test of ``column``: GLOB, or a function for what GLOB cannot."""
        if ignore_case:
            params.append(pattern)
            return f"evstore_ilike({column}, ?)"
        glob = like_to_glob(pattern)
        if "\x00" in pattern or len(glob.encode("utf-8")) > _GLOB_MAX_BYTES:
            params.append(pattern)
            return f"evstore_like({column}, ?)"
        params.append(glob)
        return f"{column} GLOB ?"

    def long_list(self, params: list[Any], encoded: str) -> str:
        """A list of values bound once, as a JSON array."""
        params.append(encoded)
        return "(SELECT value FROM json_each(?))"

    def order_metric(self, found: str, ascending: bool) -> str:
        """A metric's sort term: values, then NaN, then missing, whatever the direction.
        ``found`` selects ``{value}`` of the run's row."""
        value = "coalesce(o.value, 'nan')" if ascending else "coalesce(-o.value, 'nan')"
        return f"coalesce({found.format(value=value)}, x'')"

    def order_text(self, found: str, ascending: bool) -> str:
        """A param's or tag's sort term, missing values last."""
        found = found.format(value="o.value")
        return f"coalesce({found}, x'')" if ascending else f"{found} DESC"

    def text_column(self, column: str) -> str:
        """A text column as it sorts: by bytes."""
        return column


SQLITE_SEARCH = SearchDialect()


def like_items_escaped(pattern: str) -> str:
    """A LIKE pattern with every escape explicit (a trailing lone backslash as a literal
    one), for a database whose LIKE takes backslash escapes."""
    escaped = []
    for it in _like_items(pattern):
        if it is _ANY or it is _ONE:
            escaped.append("%" if it is _ANY else "_")
        else:
            text = cast(str, it)
            escaped.append("\\" + text if text in "%_\\" else text)
    return "".join(escaped)


def _string_test(
    column: str, op: str, value: Any, params: list[Any], d: SearchDialect = SQLITE_SEARCH
) -> str:
    """SQL testing ``column`` with a string operator; appends its parameters."""
    if op in ("IN", "NOT IN"):
        return f"{column} {op} {_in_list(value, params, d)}"
    if op in ("LIKE", "ILIKE"):
        return d.like(column, value, params, op == "ILIKE")
    params.append(value)
    return f"{column} {op} ?"


def _in_list(values: Sequence[str], params: list[Any], d: SearchDialect = SQLITE_SEARCH) -> str:
    """``(?, ?)`` for a short list; a long one binds once as JSON, whatever its length."""
    if not values:
        return d.empty_list
    if len(values) <= _SHORT_LIST:
        params.extend(values)
        return f"({', '.join('?' * len(values))})"
    return d.long_list(params, json.dumps(list(values)))


def _has_key_test(clause: Clause, params: list[Any], d: SearchDialect = SQLITE_SEARCH) -> str:
    """The subquery of the runs that have the clause's key and pass its test (any value
    for IS NULL and IS NOT NULL, which test for the key)."""
    params.append(clause.key)
    table = _ENTITY_TABLES[clause.entity]
    sql = f"SELECT e.run_id FROM {table} e WHERE e.key = ?"
    if clause.op in _NULL_OPS:
        return sql
    if clause.entity == METRIC:
        params.append(clause.value)
        if clause.op == "!=":  # NaN is stored as NULL and differs from every number
            return f"{sql} AND (e.value IS NULL OR e.value != ?)"
        return f"{sql} AND e.value {clause.op} ?"
    return f"{sql} AND {_string_test('e.value', clause.op, clause.value, params, d)}"


def _compile_clause(
    clause: Clause, params: list[Any], driver: Clause | None, d: SearchDialect
) -> str:
    if clause.entity == ATTRIBUTE:
        column = f"r.{clause.key}"  # the key is one of the fixed attribute names
        if clause.key in NUMERIC_ATTRIBUTES:
            params.append(clause.value)
            return f"{column} {clause.op} ?"
        return _string_test(column, clause.op, clause.value, params, d)
    # A non-correlated subquery: SQLite builds its list once through the (key, value)
    # index, rather than probing once per run as a correlated EXISTS would. A unary +
    # keeps SQLite from looking runs up through it unless this clause drives the plan.
    if clause.op == "IS NULL":
        return f"{d.unindexed}r.run_id NOT IN ({_has_key_test(clause, params, d)})"
    lookup = "" if clause is driver else d.unindexed
    return f"{lookup}r.run_id IN ({_has_key_test(clause, params, d)})"


def _compile_expr(expr: Expr, params: list[Any], driver: Clause | None, d: SearchDialect) -> str:
    if isinstance(expr, Clause):
        return _compile_clause(expr, params, driver, d)
    return _join(expr.op, expr.items, params, driver, d)


def _join(
    op: str, items: Sequence[Expr], params: list[Any], driver: Clause | None, d: SearchDialect
) -> str:
    # Split in halves so a long flat OR chain stays shallow in SQLite's expression tree.
    if len(items) == 1:
        return _compile_expr(items[0], params, driver, d)
    middle = len(items) // 2
    left = _join(op, items[:middle], params, driver, d)
    return f"({left} {op} {_join(op, items[middle:], params, driver, d)})"


def _driver_candidates(expr: Expr | None) -> list[Clause]:
    """Clauses ANDed at the top that only runs having their key pass: each can drive."""
    if expr is None:
        return []
    if isinstance(expr, Clause):
        return [expr] if expr.entity != ATTRIBUTE and expr.op != "IS NULL" else []
    if expr.op != "AND":
        return []
    return [clause for item in expr.items for clause in _driver_candidates(item)]


def _order_value(key: OrderKey, params: list[Any], d: SearchDialect) -> str:
    """One sortable value per run for a param, tag or metric key, from one correlated
    subquery, so the number of keys never multiplies joins (31 LEFT JOINs crashed SQLite
    3.40). SQLite sorts NULL < numbers < text < blobs: a missing value becomes a blob when
    ascending, NULL when descending, so it sorts last; a NaN metric (stored NULL) becomes
    the text 'nan', after every number; a descending metric sorts its negation ascending,
    so that NaN and missing still come last."""
    params.append(key.key)
    table = _ENTITY_TABLES[key.entity]
    found = f"(SELECT {{value}} FROM {table} o WHERE o.run_id = r.run_id AND o.key = ?)"
    if key.entity == METRIC:
        return d.order_metric(found, key.ascending)
    return d.order_text(found, key.ascending)


def _compile_order(
    keys: list[OrderKey], params: list[Any], d: SearchDialect = SQLITE_SEARCH
) -> list[str]:
    terms: list[str] = []
    for key in keys:
        if key.entity == ATTRIBUTE:
            direction = "" if key.ascending else " DESC"
            column = f"r.{key.key}"
            if key.key not in NUMERIC_ATTRIBUTES:
                column = d.text_column(column)
            terms += [f"r.{key.key} IS NULL", f"{column}{direction}"]
        else:
            terms.append(_order_value(key, params, d))
    if not any(k.entity == ATTRIBUTE and k.key == "start_time" for k in keys):
        terms.append("r.start_time DESC")
    terms.append(d.text_column("r.run_id"))
    return terms


def view_type_stages(run_view_type: str | int) -> tuple[str, ...]:
    """The lifecycle stages a view type selects: ACTIVE_ONLY/DELETED_ONLY/ALL or 1/2/3."""
    if isinstance(run_view_type, int) and not isinstance(run_view_type, bool):
        names = {1: "ACTIVE_ONLY", 2: "DELETED_ONLY", 3: "ALL"}
        run_view_type = names.get(run_view_type, str(run_view_type))
    if isinstance(run_view_type, str) and run_view_type.upper() in VIEW_TYPES:
        return VIEW_TYPES[run_view_type.upper()]
    raise InvalidParameterValue(
        f"run_view_type must be ACTIVE_ONLY, DELETED_ONLY or ALL (or 1, 2, 3), "
        f"not {run_view_type!r}"
    )


def validate_max_results(max_results: int | None) -> None:
    """MLflow's bounds: a positive integer up to 50,000, or None for every run."""
    if max_results is None:
        return
    if not isinstance(max_results, int) or isinstance(max_results, bool):
        raise InvalidParameterValue(f"max_results must be an integer, not {max_results!r}")
    if not 1 <= max_results <= MAX_RESULTS_LIMIT:
        raise InvalidParameterValue(
            f"Invalid value {max_results} for parameter 'max_results': it must be a "
            f"positive integer of at most {MAX_RESULTS_LIMIT}"
        )


def create_page_token(offset: int) -> str:
    """MLflow's opaque page token: base64 of JSON holding the offset."""
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def parse_page_token(page_token: str | bytes | None) -> int:
    """The offset a page token stands for; 0 for no token."""
    if not page_token:
        return 0
    try:
        decoded = json.loads(base64.b64decode(page_token, validate=True))
        offset = decoded["offset"]
    except (binascii.Error, ValueError, TypeError, KeyError) as e:
        raise InvalidParameterValue(f"Invalid page token {page_token!r}") from e
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidParameterValue(f"Invalid page token {page_token!r}")
    return offset


def compile_search(
    filter_string: str | None,
    *,
    experiment_ids: Iterable[str | int] | str | int,
    run_view_type: str | int = "ACTIVE_ONLY",
    order_by: Sequence[str] | str | None = None,
    max_results: int | None = 1000,
    page_token: str | bytes | None = None,
    dialect: SearchDialect = SQLITE_SEARCH,
) -> CompiledSearch:
    """Compile a search to SQL selecting run ids in order; values only ever bind."""
    d = dialect
    expr = parse_filter(filter_string)
    keys = parse_order_by(order_by)
    stages = view_type_stages(run_view_type)
    validate_max_results(max_results)
    offset = parse_page_token(page_token)
    ids = [experiment_ids] if isinstance(experiment_ids, (str, int)) else experiment_ids
    ids = list(ids) if isinstance(ids, Iterable) else [None]
    if not all(isinstance(e, (str, int)) and not isinstance(e, bool) for e in ids):
        raise InvalidParameterValue(
            f"experiment_ids must be a list of experiment ids, not {experiment_ids!r}"
        )
    experiments = [str(e) for e in ids]

    def plan(driver: Clause | None) -> tuple[str, list[Any]]:
        params: list[Any] = []
        by_experiment = "" if driver is None else d.unindexed  # a driver: no lookup by experiment
        where = [
            f"{by_experiment}r.experiment_id IN {_in_list(experiments, params, d)}",
            f"{by_experiment}r.lifecycle_stage IN ({', '.join('?' * len(stages))})",
        ]
        params += stages
        if expr is not None:
            where.append(_compile_expr(expr, params, driver, d))
        order = _compile_order(keys, params, d)  # binds after the WHERE's values, as it reads
        params += [d.no_limit if max_results is None else max_results + 1, offset]
        sql = (
            "SELECT r.run_id FROM runs r WHERE "
            + " AND ".join(where)
            + " ORDER BY "
            + ", ".join(order)
            + " LIMIT ? OFFSET ?"
        )
        return sql, params

    sql, params = plan(None)
    drivers = _driver_candidates(expr)
    if not drivers:
        return CompiledSearch(sql, tuple(params), offset, max_results)
    listed: list[Any] = []
    experiment_runs = (
        f"SELECT count(*) FROM (SELECT 1 FROM runs r WHERE r.experiment_id IN"
        f" {_in_list(experiments, listed, d)} AND r.lifecycle_stage IN"
        f" ({', '.join('?' * len(stages))}) LIMIT ?){d.probe_alias}"
    )
    probes = [(experiment_runs, (*listed, *stages))]
    for driver in drivers:
        found: list[Any] = []
        having = f"SELECT count(*) FROM ({_has_key_test(driver, found, d)} LIMIT ?){d.probe_alias}"
        probes.append((having, tuple(found)))
    plans = (sql, *(plan(driver)[0] for driver in drivers))
    return CompiledSearch(sql, tuple(params), offset, max_results, plans, tuple(probes))


#: Counting past this many runs would cost more than any plan it picks could save.
_PROBE_LIMIT = 20_000


def choose_plan(connection: sqlite3.Connection, compiled: CompiledSearch) -> str:
    """The SQL of the cheaper plan: look runs up from the rows of the most selective
    driving clause, or walk the experiments' runs, whichever visits fewer runs. Each
    count stops at the fewest found so far, so probing costs less than either plan."""
    if not compiled.plans:
        return compiled.sql
    walk, *drivers = compiled.probes
    best, fewest = 0, _PROBE_LIMIT
    for index, (sql, params) in enumerate(drivers, start=1):
        counted = connection.execute(sql, (*params, fewest)).fetchone()[0]
        if counted < fewest:
            best, fewest = index, counted
    if best and connection.execute(walk[0], (*walk[1], fewest)).fetchone()[0] < fewest:
        best = 0
    return compiled.plans[best]


def search_run_ids(
    connection: sqlite3.Connection,
    filter_string: str | None,
    *,
    timeout: float | None = None,
    **options: Any,
) -> tuple[list[str], str | None]:
    """Run ``compile_search`` on a connection: the page's run ids and the next token.
    Raises ``SearchTimeout`` past ``timeout`` seconds (default: ``search_timeout()``)."""
    dialect = getattr(connection, "search_dialect", SQLITE_SEARCH)
    compiled = compile_search(filter_string, dialect=dialect, **options)
    if "evstore_" in compiled.sql:
        _ensure_search_functions(connection)
    with time_budget(connection, timeout):
        sql = choose_plan(connection, compiled)
        rows = connection.execute(sql, compiled.params).fetchall()
    return compiled.page([row[0] for row in rows])
