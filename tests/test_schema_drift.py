"""The guard against silent schema drift, and ``evstore schema`` which shows the chains.

Each event class's current version has its schema fingerprint committed beside its
golden payload. If a class's shape changes but its version does not, stored events of
that "version" would no longer mean one thing: the fingerprint test fails and says what
to do instead.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cli_here import run_here

from evstore import codec
from evstore.events import EVENT_TYPES, Event, MetricPoint, MetricsLogged, RunStarted

EVENTS_DIR = Path(__file__).parent / "fixtures" / "events"

# --- the guard ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_current_shape_matches_the_committed_fingerprint(name: str) -> None:
    cls = EVENT_TYPES[name]
    path = EVENTS_DIR / name / f"v{cls.version}.shape.sha256"
    bump = (
        f"bump {name}.version, add an upcaster step in upcasters/, add a golden file"
        " (python tests/golden.py events) and the fingerprint"
    )
    assert path.exists(), f"tests/fixtures/events/{name}/{path.name} is missing: {bump}"
    committed = path.read_text().strip()
    assert committed == codec.schema_fingerprint(cls), (
        f"the shape of {name} changed without a version bump: {bump}"
        f" (tests/fixtures/events/{name}/{path.name} holds {committed})"
    )


@pytest.mark.parametrize("name", sorted(n for n, c in EVENT_TYPES.items() if c.version > 1))
def test_each_bumped_type_really_changed_shape(name: str) -> None:
    # A bump whose fingerprint equals the previous version's would be a bump for nothing.
    cls = EVENT_TYPES[name]
    shape = EVENTS_DIR / name / f"v{cls.version - 1}.shape.sha256"
    if shape.exists():
        assert shape.read_text().strip() != codec.schema_fingerprint(cls)
    else:  # the version before shape files: compare in the first fingerprint form
        first = (EVENTS_DIR / name / f"v{cls.version - 1}.schema.sha256").read_text().strip()
        assert first != codec.schema_fingerprint(cls, descriptions=True)


def struct_copy(
    cls: type[msgspec.Struct],
    *,
    fields: list[tuple[Any, ...]] | None = None,
    replace: dict[str, Any] | None = None,
) -> type[msgspec.Struct]:
    """An unregistered Struct with ``cls``'s name, options and doc, and the given fields.

    The copy derives from ``msgspec.Struct``, not ``Event``, so defining it never
    touches ``EVENT_TYPES``. ``replace`` maps a field name to a new type.
    """
    if fields is None:
        fields = []
        for field in msgspec.structs.fields(cls):
            kind = (replace or {}).get(field.name, field.type)
            if field.default is not msgspec.NODEFAULT:
                fields.append((field.name, kind, field.default))
            elif field.default_factory is not msgspec.NODEFAULT:
                fields.append(
                    (field.name, kind, msgspec.field(default_factory=field.default_factory))
                )
            else:
                fields.append((field.name, kind))
    config = cls.__struct_config__
    namespace: dict[str, Any] = {"__doc__": cls.__doc__}
    if hasattr(cls, "version"):
        namespace["version"] = cls.version
    return msgspec.defstruct(
        cls.__name__,
        fields,
        namespace=namespace,
        module=cls.__module__,
        frozen=config.frozen,
        array_like=config.array_like,
        kw_only=issubclass(cls, Event),
    )


def test_the_guard_sees_shape_changes() -> None:
    registered = dict(EVENT_TYPES)
    real = codec.schema_fingerprint(MetricsLogged)

    # A faithful copy has the same fingerprint: the fingerprint is about shape.
    for cls in EVENT_TYPES.values():
        assert codec.schema_fingerprint(struct_copy(cls)) == codec.schema_fingerprint(cls)

    # A changed field type, an added field, a removed field, a renamed field.
    changed_type = struct_copy(MetricsLogged, replace={"points": list[list[Any]]})
    added = struct_copy(MetricsLogged, fields=[("points", list[MetricPoint]), ("note", str, "")])
    removed = struct_copy(RunStarted, fields=[
        (f.name, f.type, f.default) if f.default is not msgspec.NODEFAULT else (f.name, f.type)
        for f in msgspec.structs.fields(RunStarted) if f.name != "artifact_uri"
    ])  # fmt: skip
    renamed = struct_copy(MetricsLogged, fields=[("metric_points", list[MetricPoint])])
    # A change deep inside: MetricPoint's step becomes a float.
    point_float_step = struct_copy(MetricPoint, replace={"step": float})
    nested = struct_copy(MetricsLogged, fields=[("points", list[point_float_step])])  # type: ignore[valid-type]

    for variant in (changed_type, added, renamed, nested):
        assert codec.schema_fingerprint(variant) != real, variant  # type: ignore[arg-type]
    assert codec.schema_fingerprint(removed) != codec.schema_fingerprint(RunStarted)  # type: ignore[arg-type]
    # None of these copies became an event type.
    assert EVENT_TYPES == registered


def test_a_docstring_edit_does_not_change_the_fingerprint() -> None:
    # msgspec's JSON schema carries the class docstring as "description"; rewording it
    # changes nothing that is stored, so the guard must not trip on it.
    reworded = msgspec.defstruct(
        "MetricsLogged",
        [("points", list[MetricPoint])],
        namespace={"__doc__": "Reworded docstring."},
        frozen=True,
        kw_only=True,
    )
    assert codec.schema_fingerprint(reworded) == codec.schema_fingerprint(MetricsLogged)  # type: ignore[arg-type]
    assert codec.schema_fingerprint(reworded, descriptions=True) != codec.schema_fingerprint(  # type: ignore[arg-type]
        MetricsLogged, descriptions=True
    )


def test_the_guard_fails_with_instructions_when_a_shape_drifts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Register, for this test only, a MetricsLogged whose shape changed at the same version.
    drifted = struct_copy(MetricsLogged, fields=[("points", list[MetricPoint]), ("note", str, "")])
    assert drifted.version == MetricsLogged.version  # type: ignore[attr-defined]
    monkeypatch.setitem(EVENT_TYPES, "MetricsLogged", drifted)

    with pytest.raises(AssertionError) as failure:
        test_current_shape_matches_the_committed_fingerprint("MetricsLogged")
    message = str(failure.value)
    assert "the shape of MetricsLogged changed without a version bump" in message
    for instruction in (
        "bump MetricsLogged.version",
        "upcaster step in upcasters/",
        "python tests/golden.py events",
        "fingerprint",
    ):
        assert instruction in message


def test_every_older_version_has_a_step_to_the_next() -> None:
    steps = codec.upcaster_steps()
    missing = [
        f"{name} v{version} -> v{version + 1}"
        for name, cls in sorted(EVENT_TYPES.items())
        for version in range(1, cls.version)
        if (name, version) not in steps
    ]
    assert not missing, f"no upcaster step for: {', '.join(missing)}"
    orphans = [
        key for key in steps if key[0] not in EVENT_TYPES or key[1] >= EVENT_TYPES[key[0]].version
    ]
    assert not orphans, f"steps for no older version of a known type: {orphans}"


# --- evstore schema -----------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``evstore ARGS`` through its entry point in this process (``cli_here``), without
    colour, on a terminal wide enough that tables never wrap."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_COLOR", "1")
        return run_here(*args, columns=200)


def test_schema_json_lists_every_type_version_and_chain() -> None:
    result = run_cli("schema", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["type"]: row for row in json.loads(result.stdout)}

    assert set(rows) == set(EVENT_TYPES)
    for name, cls in EVENT_TYPES.items():
        assert rows[name]["version"] == cls.version
        assert rows[name]["fingerprint"] == codec.schema_fingerprint(cls)
        assert [(s["from"], s["to"]) for s in rows[name]["chain"]] == [
            (v, v + 1) for v in range(1, cls.version)
        ]
    assert rows["MetricsLogged"]["chain"] == [
        {"from": 1, "to": 2, "name": "metrics_logged_v1_to_v2"}
    ]
    assert rows["RunStarted"]["chain"] == [{"from": 1, "to": 2, "name": "run_started_v1_to_v2"}]
    assert rows["TagSet"]["chain"] == []


def test_schema_table_lists_every_type_version_and_chain() -> None:
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    lines = {
        line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()
    }

    assert lines.pop("type") == ["version", "upcasters"]
    assert set(lines) == set(EVENT_TYPES)
    for name, cls in EVENT_TYPES.items():
        assert lines[name][0] == str(cls.version)
    assert lines["MetricsLogged"] == ["2", "metrics_logged_v1_to_v2"]
    assert lines["RunStarted"] == ["2", "run_started_v1_to_v2"]
    assert lines["TagSet"] == ["1", "-"]
