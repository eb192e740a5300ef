"""MLflow filter expressions (``evstore.search.parse_filter``'s tree) as Python tests over
entities held in memory: logged models and the registry filter the few they hold."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

_NUMBERS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}  # fmt: skip


def comparison(op: str, wanted: Any) -> Callable[[Any], bool]:
    """A test of one found value (None: absent) against a clause's operator and value."""
    from evstore.search import like_matcher

    if op in _NUMBERS:
        compare = _NUMBERS[op]
        return lambda found: found is not None and compare(found, wanted)
    if op in ("IN", "NOT IN"):
        return lambda found: (found in wanted) == (op == "IN")
    if op in ("IS NULL", "IS NOT NULL"):
        return lambda found: (found is None) == (op == "IS NULL")
    match = like_matcher(wanted, ignore_case=op == "ILIKE")
    return lambda found: found is not None and match(found)


def expression_test(expr: Any, clause_test: Callable[[Any], Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """The test of a whole expression: AND/OR of the tests ``clause_test`` makes per clause
    (everything passes an empty filter, ``expr`` None)."""
    from evstore.search import BoolOp

    if expr is None:
        return lambda _entity: True
    if isinstance(expr, BoolOp):
        tests = [expression_test(item, clause_test) for item in expr.items]
        join = all if expr.op == "AND" else any
        return lambda entity: join(test(entity) for test in tests)
    return clause_test(expr)
