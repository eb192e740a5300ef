"""The search filter parser: what it accepts, what it refuses, and that it never crashes."""

from __future__ import annotations

import pytest
from conftest import like_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evstore.errors import FilterParseError, InvalidParameterValue
from evstore.search import (
    BoolOp,
    Clause,
    OrderKey,
    like_matcher,
    like_to_glob,
    parse_filter,
    parse_order_by,
)


def clause(entity: str, key: str, op: str, value: object, position: int) -> Clause:
    return Clause(entity, key, op, value, position)  # type: ignore[arg-type]


# --- what parses, and into what ---------------------------------------------------------

PARSES = [
    ("metrics.acc > 0.5", clause("metric", "acc", ">", 0.5, 8)),
    ("metric.acc >= 1", clause("metric", "acc", ">=", 1.0, 7)),
    ("metrics.loss < -1.5e3", clause("metric", "loss", "<", -1500.0, 8)),
    ("metrics.loss <= 2E-2", clause("metric", "loss", "<=", 0.02, 8)),
    ("metrics.x = .5", clause("metric", "x", "=", 0.5, 8)),
    ("metrics.x != 3.", clause("metric", "x", "!=", 3.0, 8)),
    ("metrics.x > +3", clause("metric", "x", ">", 3.0, 8)),
    ("metrics.x>-1", clause("metric", "x", ">", -1.0, 8)),
    ("metrics.x = 1e400", clause("metric", "x", "=", float("inf"), 8)),
    ("metrics.`val loss` > 1", clause("metric", "val loss", ">", 1.0, 8)),
    ("metrics.`a/b` > 1", clause("metric", "a/b", ">", 1.0, 8)),
    ("metrics.a/b > 1", clause("metric", "a/b", ">", 1.0, 8)),
    ('metrics."a b" > 1', clause("metric", "a b", ">", 1.0, 8)),
    ("metrics.'a b' > 1", clause("metric", "a b", ">", 1.0, 8)),
    ("`metrics`.m > 1", clause("metric", "m", ">", 1.0, 10)),
    ("METRICS.m > 1", clause("metric", "m", ">", 1.0, 8)),
    ("params.lr = '0.01'", clause("param", "lr", "=", "0.01", 7)),
    ('param.lr = "0.01"', clause("param", "lr", "=", "0.01", 6)),
    ("parameter.a.b = 'x'", clause("param", "a.b", "=", "x", 10)),
    ("parameters.a != 'x'", clause("param", "a", "!=", "x", 11)),
    ("params.a = 'it''s'", clause("param", "a", "=", "it's", 7)),
    ('params.a = "say ""hi"""', clause("param", "a", "=", 'say "hi"', 7)),
    ("params.a = \"it's\"", clause("param", "a", "=", "it's", 7)),
    ("params.a = 'say \"hi\"'", clause("param", "a", "=", 'say "hi"', 7)),
    ("params.a = ''", clause("param", "a", "=", "", 7)),
    (r"params.path = 'C:\dir\'''", clause("param", "path", "=", "C:\\dir\\'", 7)),
    ("params.a like 'x%'", clause("param", "a", "LIKE", "x%", 7)),
    ("params.a ILike 'x%'", clause("param", "a", "ILIKE", "x%", 7)),
    ("params.a LIKE'x'", clause("param", "a", "LIKE", "x", 7)),
    ("tags.t IS NULL", clause("tag", "t", "IS NULL", None, 5)),
    ("tag.t is not null", clause("tag", "t", "IS NOT NULL", None, 4)),
    ("tags.`mlflow.note` IS NOT NULL", clause("tag", "mlflow.note", "IS NOT NULL", None, 5)),
    ("tags.日本 = 'é'", clause("tag", "日本", "=", "é", 5)),
    ("attributes.status = 'FINISHED'", clause("attribute", "status", "=", "FINISHED", 11)),
    ("attribute.run_name LIKE 'a%'", clause("attribute", "run_name", "LIKE", "a%", 10)),
    ("attr.user_id != 'bob'", clause("attribute", "user_id", "!=", "bob", 5)),
    ("run.artifact_uri ILIKE '%s3%'", clause("attribute", "artifact_uri", "ILIKE", "%s3%", 4)),
    ("lifecycle_stage = 'deleted'", clause("attribute", "lifecycle_stage", "=", "deleted", 0)),
    ("status = 'FAILED'", clause("attribute", "status", "=", "FAILED", 0)),
    ("`Run Name` = 'x'", clause("attribute", "run_name", "=", "x", 0)),
    ("attributes.created > 5", clause("attribute", "start_time", ">", 5, 11)),
    ("start_time >= 1700000000000", clause("attribute", "start_time", ">=", 1700000000000, 0)),
    ("end_time < 1.5", clause("attribute", "end_time", "<", 1.5, 0)),
    ("end_time < 123456789012345678901234", clause("attribute", "end_time", "<", 1.2345678901234568e23, 0)),
    ("attributes.run_id IN ('a', \"b\")", clause("attribute", "run_id", "IN", ("a", "b"), 11)),
    ("run_id not in ('a',)", clause("attribute", "run_id", "NOT IN", ("a",), 0)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_parses_clause(text: str, expected: Clause) -> None:
    assert parse_filter(text) == expected


def test_empty_filters_select_everything() -> None:
    assert parse_filter(None) is None
    assert parse_filter("") is None
    assert parse_filter(" \n\t ") is None


def test_and_binds_tighter_than_or() -> None:
    # a OR b AND c  ==  a OR (b AND c)
    expr = parse_filter("metrics.a > 1 or metrics.b > 2 AND metrics.c > 3")
    assert isinstance(expr, BoolOp) and expr.op == "OR"
    first, second = expr.items
    assert isinstance(first, Clause) and first.key == "a"
    assert isinstance(second, BoolOp) and second.op == "AND"
    assert [c.key for c in second.items if isinstance(c, Clause)] == ["b", "c"]


def test_parentheses_override_precedence() -> None:
    expr = parse_filter("(metrics.a > 1 OR metrics.b > 2) AND ((metrics.c > 3))")
    assert isinstance(expr, BoolOp) and expr.op == "AND"
    inner, last = expr.items
    assert isinstance(inner, BoolOp) and inner.op == "OR"
    assert isinstance(last, Clause) and last.key == "c"


def test_keywords_are_whole_words() -> None:
    # "ORDER" starts with OR but is not the keyword; "params.AND" is a key named AND.
    with pytest.raises(FilterParseError, match="expected AND, OR or the end"):
        parse_filter("metrics.a > 1 ORDER metrics.b > 1")
    assert parse_filter("params.AND = 'x'") == clause("param", "AND", "=", "x", 7)
    # dotless i upper-cases to I in Python, but "ın" is not the keyword IN.
    with pytest.raises(FilterParseError):
        parse_filter("run_id ın ('a')")


# --- what is refused, and where the caret points -------------------------------------

REFUSED = [
    ("metrics.m > 1 AND", "expected a key", 17),
    ("AND metrics.m > 1", "expected a key", 0),
    ("metrics.m == 1", "unknown operator '=='", 10),
    ("params.m <> 'a'", "use !=", 9),
    ("metrics.m LIKE 1", "LIKE cannot be used on metric 'm'", 10),
    ("metrics.m IS NULL", "IS NULL cannot be used on metric", 10),
    ("start_time IS NULL", "IS NULL cannot be used on attribute 'start_time'", 11),
    ("start_time LIKE '1%'", "LIKE cannot be used", 11),
    ("status IN ('A')", "IN cannot be used on attribute 'status'", 7),
    ("status > 'A'", "> cannot be used", 7),
    ("params.p > 'a'", "> cannot be used on param", 9),
    ("tags.t NOT LIKE 'a'", "expected IN after NOT", 11),
    ("tags.t IS NOT", "expected NULL after IS NOT", 13),
    ("tags.t IS", "expected NULL after IS", 9),
    ("params.x = 1", "compares with a quoted string", 11),
    ("metrics.x = '1'", "compares with a number", 12),
    ("start_time = '1'", "compares with a number", 13),
    ("metrics.x = `1`", "expected a number", 12),
    ("params.x = `1`", "expected a quoted string", 11),
    ("metrics.x = 1abc", "expected a number", 12),
    ("metrics.x = 1.2.3", "expected a number", 12),
    ("metrics.x = 0x10", "expected a number", 12),
    ("metrics.x = inf", "expected a number", 12),
    ("metrics.x >", "expected a number, found the end", 11),
    ("params.a = 'x", "unterminated '-quoted text", 11),
    ('params.a = "x', "unterminated \"-quoted text", 11),
    ("metrics.`a > 1", "unterminated `-quoted text", 8),
    ("foo.bar = 'x'", "unknown entity 'foo'", 0),
    ("datasets.name = 'x'", "unknown entity 'datasets'", 0),
    ("attributes.nope = 'x'", "unknown attribute 'nope'", 11),
    ("experiment_id = '1'", "unknown attribute 'experiment_id'", 0),
    ("'status' = 'x'", "expected a key", 0),
    ("metrics. > 1", "expected a key after 'metrics.'", 8),
    ("metrics.`` > 1", "the key is empty", 8),
    ("metrics.m", "expected an operator", 9),
    ("metrics.m 1", "expected an operator", 10),
    ("(metrics.m > 1", "closing the '(' at 0", 14),
    ("metrics.m > 1)", "closes no '('", 13),
    ("()", "expected a key", 1),
    ("metrics.a > 1 metrics.b > 1", "expected AND, OR or the end", 14),
    ("metrics.a > 1 AND OR metrics.b > 1", "expected a key", 18),
    ("run_id IN ()", "expected a quoted string in the list", 11),
    ("run_id IN ('a' 'b')", "expected ',' or ')'", 15),
    ("run_id IN ('a', 1)", "expected a quoted string in the list", 16),
    ("run_id IN 'a'", "expected '('", 10),
    ("run_id IN ('a'", "expected ',' or ')'", 14),
    (r"params.a = 'it\'s'", "a backslash does not escape a quote", 16),
    ("params.a = 'x' \ud800", "lone surrogate", 15),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message", "position"), REFUSED)
def test_refuses_with_caret(text: str, message: str, position: int) -> None:
    with pytest.raises(FilterParseError) as caught:
        parse_filter(text)
    error = caught.value
    assert message in str(error)
    assert error.position == position, str(error)
    assert error.text == text
    assert isinstance(error, InvalidParameterValue)  # the HTTP layer maps it to 400


def test_caret_sits_under_the_offending_character() -> None:
    with pytest.raises(FilterParseError) as caught:
        parse_filter("params.a = 'x' AND\tmetrics.b LIKE 'y'")
    _, shown, caret = str(caught.value).split("\n")
    # The tab is shown as a space so the caret lines up with the text above it.
    assert "\t" not in shown
    assert shown[caret.index("^")] == "L"


def test_nesting_depth_is_bounded() -> None:
    deep = "(" * 10_000 + "metrics.a > 1" + ")" * 10_000
    with pytest.raises(FilterParseError, match="nested deeper"):
        parse_filter(deep)
    fine = "(" * 40 + "metrics.a > 1" + ")" * 40
    assert parse_filter(fine) == clause("metric", "a", ">", 1.0, 48)


def test_long_flat_chains_parse_without_recursion() -> None:
    text = " OR ".join(f"metrics.m{i} > {i}" for i in range(1_000))
    expr = parse_filter(text)
    assert isinstance(expr, BoolOp) and len(expr.items) == 1_000


def test_clause_count_is_bounded() -> None:
    text = " AND ".join(f"metrics.m{i} > {i}" for i in range(1_001))
    with pytest.raises(FilterParseError, match="more than 1000 clauses") as caught:
        parse_filter(text)
    assert text[caught.value.position :] == "metrics.m1000 > 1000"


def test_non_string_filter_is_invalid_parameter() -> None:
    with pytest.raises(InvalidParameterValue):
        parse_filter(42)  # type: ignore[arg-type]


# --- never anything but FilterParseError ---------------------------------------------


def _parses_or_refuses(text: str) -> None:
    try:
        parse_filter(text)
    except FilterParseError as e:
        assert 0 <= e.position <= len(text)
        assert e.text == text


@settings(max_examples=1500, deadline=None)
@given(st.text())
def test_any_text_parses_or_raises_filter_parse_error(text: str) -> None:
    _parses_or_refuses(text)


_VOCAB = [
    "metrics.", "params.", "tags.", "attributes.", "metric.", "run.", "attr.", "`", "'", '"',
    "(", ")", ",", ".", " ", "AND", "OR", "and", "or", "NOT", "IN", "IS", "NULL", "LIKE",
    "ILIKE", "=", "!=", "==", "<>", ">", ">=", "<", "<=", "-", "+", "1", "2.5", "1e3", "e",
    "%", "_", "\\", "x", "run_id", "status", "start_time", "end_time", "created",
    "\u0131n", "\ufb00", "é", "\n", "\t",
]  # fmt: skip

keys = st.sampled_from(["acc", "`val loss`", '"a/b"', "'x y'", "lr", "日本", "m.1", "a-b:c"])
strings = st.text(max_size=6).map(lambda s: "'" + s.replace("'", "''") + "'")
numbers = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from([".5", "3.", "1e400", "-2E-5", "+7"]),
)
clauses = st.one_of(
    st.builds(lambda k, o, v: f"metrics.{k} {o} {v}", keys,
              st.sampled_from(["<", "<=", "=", "!=", ">", ">="]), numbers),
    st.builds(lambda e, k, o, v: f"{e}.{k} {o} {v}", st.sampled_from(["params", "tags"]),
              keys, st.sampled_from(["=", "!=", "LIKE", "ilike"]), strings),
    st.builds(lambda e, k, o: f"{e}.{k} {o}", st.sampled_from(["param", "tag"]), keys,
              st.sampled_from(["IS NULL", "is not null"])),
    st.builds(lambda o, vs: f"run_id {o} ({', '.join(vs)})", st.sampled_from(["IN", "NOT IN"]),
              st.lists(strings, min_size=1, max_size=3)),
    st.builds(lambda a, o, v: f"attributes.{a} {o} {v}", st.sampled_from(["start_time", "end_time"]),
              st.sampled_from(["<", ">="]), numbers),
    st.builds(lambda a, o, v: f"{a} {o} {v}", st.sampled_from(["status", "run_name", "`Run Name`"]),
              st.sampled_from(["=", "!=", "LIKE", "ILIKE"]), strings),
)  # fmt: skip
filters = st.recursive(
    clauses,
    lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["AND", "OR", "and"]), inner),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=6,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(filters)
def test_grammar_built_filters_parse(text: str) -> None:
    assert parse_filter(text) is not None


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A near-valid filter with a few characters or vocabulary words inserted, cut or swapped."""
    text = draw(filters)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        piece = draw(st.one_of(st.sampled_from(_VOCAB), st.characters()))
        if action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 5)) :]
        elif action == "replace":
            text = text[:at] + piece + text[at + 1 :]
        else:
            text = text[:at]
    return text


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_filters_parse_or_raise_filter_parse_error(text: str) -> None:
    _parses_or_refuses(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_VOCAB), max_size=12).map("".join))
def test_vocabulary_soup_parses_or_raises_filter_parse_error(text: str) -> None:
    _parses_or_refuses(text)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(_VOCAB), max_size=6).map("".join)))
def test_order_by_parses_or_raises_invalid_parameter(text: str) -> None:
    try:
        parse_order_by([text])
    except FilterParseError as e:
        assert 0 <= e.position <= len(text)


# --- order_by --------------------------------------------------------------------------


def test_order_by_entries() -> None:
    assert parse_order_by(
        ["metrics.acc DESC", "params.lr", "attributes.start_time asc", "tags.`x y`"]
    ) == [
        OrderKey("metric", "acc", False),
        OrderKey("param", "lr", True),
        OrderKey("attribute", "start_time", True),
        OrderKey("tag", "x y", True),
    ]
    assert parse_order_by(["created", "`Run Name` DESC"]) == [
        OrderKey("attribute", "start_time", True),
        OrderKey("attribute", "run_name", False),
    ]
    assert parse_order_by(None) == []
    assert parse_order_by("metrics.m") == [OrderKey("metric", "m", True)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("metrics.acc DOWN", "expected ASC, DESC or the end"),
        ("metrics.acc DESC ASC", "expected ASC, DESC or the end"),
        ("nope", "unknown attribute 'nope'"),
        ("", "expected a key"),
        ("metrics.", "expected a key after"),
    ],
)
def test_order_by_refused(entry: str, message: str) -> None:
    with pytest.raises(FilterParseError, match=message):
        parse_order_by([entry])


def test_order_by_duplicates_refused() -> None:
    with pytest.raises(InvalidParameterValue, match="twice"):
        parse_order_by(["metrics.a", "metric.a DESC"])
    with pytest.raises(InvalidParameterValue, match="twice"):
        parse_order_by(["start_time", "created DESC"])


# --- LIKE patterns ---------------------------------------------------------------------

LIKES = [
    ("a%", "abc", True), ("a%", "bac", False), ("%c", "abc", True), ("a_c", "abc", True),
    ("a_c", "abbc", False), ("%", "", True), ("", "", True), ("", "x", False),
    ("a%b%c", "aXbYc", True), ("a%b%c", "acb", False), ("%a%a%", "aa", True),
    ("%a%a%", "a", False), ("ab%ba", "aba", False), ("ab%ba", "abba", True),
    (r"50\%", "50%", True), (r"50\%", "500", False), (r"a\_b", "a_b", True),
    (r"a\_b", "axb", False), ("a\\\\b", "a\\b", True), ("a\\", "a\\", True),
    ("_", "é", True), ("__", "日本", True), ("a%", "a\nb", True), ("[a]*", "[a]*", True),
    ("ABC", "abc", False),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "value", "expected"), LIKES)
def test_like_matcher(pattern: str, value: str, expected: bool) -> None:
    assert like_matcher(pattern, False)(value) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [("ABC", "abc", True), ("é%", "École", True), ("e%", "École", False), ("É%", "école", True),
     ("%straße", "STRASSE", False), ("%STRAẞE", "straße", True), ("k", "\u212a", True),
     ("σ_", "Σx", True), ("a_c", "AbC", True)],
)  # fmt: skip
def test_ilike_folds_unicode_case(pattern: str, value: str, expected: bool) -> None:
    assert like_matcher(pattern, True)(value) is expected


def test_like_to_glob_escapes_glob_specials() -> None:
    assert like_to_glob(r"a*b?[c]%_\%\_") == "a[*]b[?][[]c]*?%_"


@settings(max_examples=300, deadline=None)
@given(st.text("ab%_\\", max_size=8), st.text("ab%_\\", max_size=8))
def test_like_matcher_agrees_with_a_regex(pattern: str, value: str) -> None:
    assert like_matcher(pattern, False)(value) is like_reference(value, pattern)
