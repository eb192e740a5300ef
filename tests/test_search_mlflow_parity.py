"""search_experiments filters and metric history order, against the real mlflow package.

MLflow (its SQLAlchemy store on SQLite) runs in a subprocess, an oracle answering one JSON
line per question, so that hypothesis can ask it about every filter it draws. The same
experiments exist on both sides, created in the same order (so with the same ids).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import close_cached_stores
from differential import EMPTY_MLFLOW_DB
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import Lines

from evstore import Client, fluent
from evstore.entities import Metric
from evstore.errors import InvalidParameterValue

pytest.importorskip("mlflow")

EXPERIMENTS: list[tuple[str, dict[str, str]]] = [
    ("alpha", {"team": "red", "Mix": "A b"}),
    ("Beta", {"team": "blue"}),
    ("gamma", {}),
    ('q"uote', {"x": "it's"}),
    ("delta_1", {"team": "Red", "a.b": "x"}),
]

ORACLE = r"""
import json, logging, math, os, sys, warnings
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

client = MlflowClient(tracking_uri=f"sqlite:///{sys.argv[1]}")
for name, tags in json.loads(sys.argv[2]):
    client.create_experiment(name, tags=tags)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    question = json.loads(line)
    try:
        if "filter" in question:
            found = client.search_experiments(filter_string=question["filter"])
            answer = {"names": sorted(e.name for e in found)}
        else:
            run_id = client.create_run("0").info.run_id
            points = [Metric("m", float(v), ts, step) for ts, step, v in question["points"]]
            client.log_batch(run_id, metrics=points)
            history = client.get_metric_history(run_id, "m")
            answer = {"history": [[m.timestamp, m.step, repr(m.value)] for m in history]}
    except MlflowException as e:
        answer = {"error": e.error_code, "message": e.message[:300]}
    print(json.dumps(answer), flush=True)
"""


class Oracle:
    """MLflow in a subprocess: ask it a question, get its answer."""

    def __init__(self, directory: Path) -> None:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        # An empty MLflow database as mlflow 3.17.2 makes it, not a new file it would spend
        # seconds migrating (the questions' times are 0, -1, 1.5 and 99999999999999, never
        # near the default experiment's creation time, which is the template's).
        shutil.copyfile(EMPTY_MLFLOW_DB, directory / "mlflow.db")
        self.process = subprocess.Popen(
            [sys.executable, "-c", ORACLE, str(directory / "mlflow.db"), json.dumps(EXPERIMENTS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=directory,
        )  # fmt: skip
        self.answers = Lines(self.process.stdout, "the MLflow oracle")
        assert self.read() == {"ready": True}

    def read(self) -> dict[str, Any]:
        return json.loads(self.answers.next())  # type: ignore[no-any-return]

    def ask(self, question: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(question) + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(60)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oracle]:
    found = Oracle(tmp_path_factory.mktemp("mlflow"))
    yield found
    found.close()


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    directory = tmp_path_factory.mktemp("evstore")
    fluent._state.__dict__.clear()
    client = Client(str(directory / "evstore.db"))
    for name, tags in EXPERIMENTS:
        client.create_experiment(name, tags=tags)
    yield client
    fluent._state.__dict__.clear()
    close_cached_stores(directory)


def our_answer(client: Client, filter_string: str) -> dict[str, Any]:
    try:
        return {"names": sorted(e.name for e in client.search_experiments(filter_string=filter_string))}
    except InvalidParameterValue as e:
        return {"error": e.error_code, "message": str(e)}


def same(expected: dict[str, Any], found: dict[str, Any]) -> bool:
    if "error" in expected:
        return found.get("error") == expected["error"]
    return found == expected


# --- the cases of the brief, one by one ------------------------------------------------

CASES = [
    "tags.team IS NULL", "tags.team IS NOT NULL", "tags.team is not null", "tags.`team` IS NULL",
    "creation_time > 0", "last_update_time >= 0", "creation_time >= -1", "creation_time != 0",
    "experiment_id = '0'", "experiment_id != '0'", "experiment_id IN ('0', '2')",
    "experiment_id NOT IN ('0')", 'name = "alpha"', "name = 'alpha'", "name LIKE 'a%'",
    "name LIKE 'B%'", "name LIKE 'b%'", "name ILIKE 'b%'", "name LIKE '%a'", "name LIKE 'delta_1'",
    "name != 'alpha'", "tags.team = 'red' AND name LIKE 'a%'", "tags.team = 'red' and name = 'alpha'",
    "tags.team LIKE 'r%'", "tags.team ILIKE 'R%'", "tags.team != 'red'", "tag.team = 'red'",
    "attribute.name = 'alpha'", "tags.Mix = 'A b'", "tags.\"team\" = 'red'", "tags.a.b = 'x'",
    "name = 'q\"uote'", "tags.x = \"it's\"", "creation_time > 0 AND tags.team IS NOT NULL",
    "tags.team = 'red' AND tags.team = 'blue'", "name LIKE 'alpha' AND creation_time < 99999999999999",
    # Refused by MLflow (INVALID_PARAMETER_VALUE), and by evstore:
    "creation_time > '0'", "creation_time = 1.5", "last_update_time < 1e20", "experiment_id = 0",
    "experiment_id > '0'", "experiment_id LIKE '1'", "experiment_id = 'abc'", "name IN ('alpha')",
    "tags.team > 'a'", "name > 'a'", "name IS NULL", "creation_time IS NULL", "name = alpha",
    "params.x = '1'", "metrics.x > 1", "lifecycle_stage = 'active'", "tags.team IN ('red')",
]  # fmt: skip


@pytest.mark.parametrize("filter_string", CASES)
def test_experiment_filter_as_mlflow_answers(
    oracle: Oracle, ours: Client, filter_string: str
) -> None:
    expected = oracle.ask({"filter": filter_string})
    found = our_answer(ours, filter_string)
    assert same(expected, found), (expected, found)


# Beyond MLflow, as for runs: OR, parentheses and the attributes. prefix. MLflow refuses
# them; it also accepts a dangling AND ("name = 'alpha' AND"), which evstore refuses. A
# backslash escapes % and _ in LIKE as on MLflow over PostgreSQL or MySQL (over SQLite
# MLflow takes it literally and finds nothing here).
@pytest.mark.parametrize(
    ("filter_string", "names"),
    [
        ("tags.team = 'red' OR name = 'gamma'", ["alpha", "gamma"]),
        ("(name = 'alpha')", ["alpha"]),
        ("attributes.name = 'alpha'", ["alpha"]),
        ("name LIKE 'delta\\_1'", ["delta_1"]),
    ],
)
def test_experiment_filter_beyond_mlflow(ours: Client, filter_string: str, names: list[str]) -> None:
    assert our_answer(ours, filter_string) == {"names": names}


def test_a_bad_experiment_filter_says_where(ours: Client) -> None:
    with pytest.raises(InvalidParameterValue, match="unknown entity 'params'"):
        ours.search_experiments(filter_string="params.x = '1'")
    with pytest.raises(InvalidParameterValue, match="Invalid experiment ID 'abc'"):
        ours.search_experiments(filter_string="experiment_id = 'abc'")
    with pytest.raises(InvalidParameterValue, match="compares with an integer"):
        ours.search_experiments(filter_string="creation_time = 1.5")


# --- drawn filters -----------------------------------------------------------------------

FIELDS = ["name", "attribute.name", "experiment_id", "creation_time", "last_update_time",
          "tags.team", "tags.Mix", "tags.x", "tags.missing", "tags.`a.b`"]  # fmt: skip
OPERATORS = ["=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL", "IN", "NOT IN", ">", "<="]
TEXTS = ["'alpha'", "'Beta'", "'red'", "'Red'", "'r%'", "'%e%'", "'_eta'", "'%'", "'A b'",
         "\"it's\"", "'0'", "'2'", "'x'", "'%A%'", "'delta_1'"]  # fmt: skip
NUMBERS = ["0", "-1", "99999999999999", "1.5"]
LISTS = ["('0', '2')", "('alpha')", "('4')"]


@st.composite
def experiment_clause(draw: st.DrawFn) -> str:
    field, op = draw(st.sampled_from(FIELDS)), draw(st.sampled_from(OPERATORS))
    if op in ("IS NULL", "IS NOT NULL"):
        return f"{field} {op}"
    values = LISTS if op in ("IN", "NOT IN") else draw(st.sampled_from([TEXTS, NUMBERS]))
    return f"{field} {op} {draw(st.sampled_from(values))}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(experiment_clause(), min_size=1, max_size=3).map(" AND ".join))
def test_drawn_experiment_filters_agree_with_mlflow(
    oracle: Oracle, ours: Client, filter_string: str
) -> None:
    expected = oracle.ask({"filter": filter_string})
    found = our_answer(ours, filter_string)
    assert same(expected, found), (filter_string, expected, found)


# --- metric history order ----------------------------------------------------------------

MAX = 1.7976931348623157e308
VALUES = [0.0, -1.0, 2.0, 0.5, math.nan, math.inf, -math.inf]


def _clamped(value: float) -> float:
    """A value as MLflow hands it back: +-inf becomes +-max float."""
    return value if math.isnan(value) else max(-MAX, min(MAX, value))


def _mlflow_key(point: tuple[int, int, float]) -> tuple[int, int, float, bool]:
    """A point as MLflow's table keys it: NaN is 0 (flagged), +-inf is +-max float."""
    ts, step, value = point
    return (ts, step, 0.0, True) if math.isnan(value) else (ts, step, _clamped(value), False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from(VALUES)),
        min_size=1, max_size=25, unique_by=_mlflow_key,
    )
)  # fmt: skip
def test_metric_history_in_mlflow_order(
    oracle: Oracle, ours: Client, points: list[tuple[int, int, float]]
) -> None:
    expected = oracle.ask({"points": [[ts, step, repr(v)] for ts, step, v in points]})["history"]
    run_id = ours.create_run("0").info.run_id
    ours.log_batch(run_id, metrics=[Metric("m", v, ts, step) for ts, step, v in points])
    found = ours.get_metric_history(run_id, "m")
    # MLflow hands infinities back as +-max float; evstore keeps them.
    shown = [[m.timestamp, m.step, repr(_clamped(m.value))] for m in found]
    assert shown == expected
