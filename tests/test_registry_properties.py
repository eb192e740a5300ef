"""Properties of the registry and logged models over any sequence of calls: a refused
call appends nothing, no alias is left pointing at a deleted version, and the read models
rebuild row for row from the log (rebuild == incremental), whatever was created, moved,
renamed and deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import close_cached_stores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_projections import snapshot

from evstore.errors import EvstoreError
from evstore.rebuild import rebuild
from evstore.tracking.service import TrackingService

NAMES = st.sampled_from(["a", "b", "c"])
VERSIONS = st.integers(1, 4)
STAGES = st.sampled_from(["None", "Staging", "Production", "Archived", "bogus"])
CALLS = st.one_of(
    st.tuples(st.just("create_registered_model"), NAMES),
    st.tuples(st.just("create_model_version"), NAMES, st.just("s3://bucket/model")),
    st.tuples(st.just("set_registered_model_alias"), NAMES, st.sampled_from(["champion", "v1"]), VERSIONS),
    st.tuples(st.just("delete_registered_model_alias"), NAMES, st.just("champion")),
    st.tuples(st.just("set_registered_model_tag"), NAMES, st.just("k"), st.sampled_from(["1", "2"])),
    st.tuples(st.just("delete_registered_model_tag"), NAMES, st.just("k")),
    st.tuples(st.just("set_model_version_tag"), NAMES, VERSIONS, st.just("k"), st.just("v")),
    st.tuples(st.just("update_model_version"), NAMES, VERSIONS, st.sampled_from(["", "d"])),
    st.tuples(st.just("update_registered_model"), NAMES, st.sampled_from(["", "d"])),
    st.tuples(st.just("transition_model_version_stage"), NAMES, VERSIONS, STAGES, st.booleans()),
    st.tuples(st.just("delete_model_version"), NAMES, VERSIONS),
    st.tuples(st.just("rename_registered_model"), NAMES, NAMES),
    st.tuples(st.just("delete_registered_model"), NAMES),
    st.tuples(st.just("logged_model"), st.sampled_from(["READY", "FAILED", "bogus"])),
)


def steps(service: TrackingService, call: tuple[Any, ...], models: list[str]) -> list[Any]:
    """The service calls one drawn call stands for, each checked on its own."""
    name, *args = call
    if name == "logged_model":  # a logged model, finalized, then registered as a version of "a"
        def create() -> None:
            models.append(service.create_logged_model("0", "m", params={"p": "1"}, tags={"t": "1"}).model_id)

        return [create, lambda: service.finalize_logged_model(models[-1], args[0]),
                lambda: service.create_model_version("a", f"models:/{models[-1]}")]
    return [lambda: getattr(service, name)(*args)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(CALLS, max_size=25))
def test_refusals_append_nothing_and_rebuild_equals_incremental(tmp_path_factory: Any, calls: list[Any]) -> None:
    directory: Path = tmp_path_factory.mktemp("registry-property")
    try:
        check_calls(str(directory / "evstore.db"), calls)
    finally:
        close_cached_stores(directory)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(CALLS, max_size=25))
def test_the_same_on_postgresql(postgres_database: Any, calls: list[Any]) -> None:
    # Fewer examples: each makes a schema; the read models' SQL is what differs there.
    uri = postgres_database.new_store_uri()
    try:
        check_calls(uri, calls)
    finally:
        close_cached_stores(uri)


def check_calls(uri: str, calls: list[Any]) -> None:
    """Play ``calls``: refusals append nothing, aliases stay whole, rebuild == incremental."""
    service = TrackingService(uri)
    service.ensure_default_experiment()
    store = service.store
    models: list[str] = []
    for call in calls:
        for step in steps(service, call, models):
            head = store.head_position()
            try:
                step()
            except EvstoreError:
                assert store.head_position() == head, call
    # Every alias points at a version that exists (deleting a version takes its aliases).
    dangling = store.query(
        "SELECT count(*) FROM registered_model_aliases a LEFT JOIN model_versions v"
        " ON v.model_key = a.model_key AND v.version = a.version WHERE v.version IS NULL"
    )
    assert dangling == [(0,)]
    held = snapshot(store)
    rebuild(store)
    assert snapshot(store) == held
