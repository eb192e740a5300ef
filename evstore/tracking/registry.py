"""The model registry (MlflowClient's registry methods), as a part of the tracking service.

Each registered model is one stream (``registered-model-<hex>``) holding everything that
happens to it, its versions and its aliases: MLflow overwrites a description, a stage or
an alias in place, the log keeps each change with who made it and when
(``evstore.model_history``). Reads come from the ``registry`` read model.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from evstore import codec
from evstore.entities import PagedList
from evstore.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from evstore.events import (
    Event,
    LoggedModelTagSet,
    ModelVersionCreated,
    ModelVersionDeleted,
    ModelVersionDescribed,
    ModelVersionStageChanged,
    ModelVersionTagDeleted,
    ModelVersionTagSet,
    RegisteredModelAliasDeleted,
    RegisteredModelAliasSet,
    RegisteredModelCreated,
    RegisteredModelDeleted,
    RegisteredModelDescribed,
    RegisteredModelRenamed,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
)
from evstore.stores import NO_STREAM
from evstore.validation import check_text, optional_text, shown, tag_value, validate_key

STAGES = ("None", "Staging", "Production", "Archived")
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
_RESERVED_ALIAS = "latest"


@dataclass
class ModelVersion:
    """One version of a registered model, as MLflow's ``ModelVersion``."""

    name: str
    version: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str
    user_id: str
    current_stage: str
    source: str
    run_id: str | None
    model_id: str | None
    run_link: str
    status: str = "READY"
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


@dataclass
class RegisteredModel:
    """A registered model, as MLflow's ``RegisteredModel``."""

    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    latest_versions: list[ModelVersion] = field(default_factory=list)


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidParameterValue("Missing value for required parameter 'name'.")
    return check_text("registered model name", name)


def _version(version: Any) -> int:
    try:
        number = int(str(version))
    except ValueError:
        raise InvalidParameterValue(f"Parameter 'version' must be an integer, got {str(version)!r}.") from None
    return number


def _stage(stage: Any) -> str:
    found = {s.lower(): s for s in STAGES}.get(str(stage).lower())
    if found is None:
        raise InvalidParameterValue(
            f"Invalid Model Version stage: {stage}. Value must be one of {', '.join(STAGES)}."
        )
    return found


def _alias(alias: Any) -> str:
    alias = check_text("alias", alias)
    if not alias:
        raise InvalidParameterValue("Missing value for required parameter 'alias'.")
    if alias.lower() == _RESERVED_ALIAS:
        raise InvalidParameterValue(f"'{_RESERVED_ALIAS}' alias name (case insensitive) is reserved.")
    if alias[:1] in "vV" and alias[1:].isdigit():
        raise InvalidParameterValue(f"Version alias name '{alias}' is reserved.")
    return alias


class RegistryMixin:
    """The registry methods of ``TrackingService``."""

    _store: Any
    reading: Callable[..., Any]

    # --- registered models -------------------------------------------------------------

    def create_registered_model(
        self, name: str, tags: dict[str, Any] | None = None, description: str | None = None
    ) -> RegisteredModel:
        """A new registered model; names are unique."""
        name = _name(name)
        clean = {validate_key("tag", k): tag_value(k, v) for k, v in (tags or {}).items()}
        with self._store.transaction() as conn:
            if _key_of(conn, name) is not None:
                raise ResourceAlreadyExists(f"Registered Model (name={name}) already exists.")
            events: list[Event] = [RegisteredModelCreated(
                name=name, creation_time=codec.now_ms(),
                description=optional_text("description", description) or "")]  # fmt: skip
            events += [RegisteredModelTagSet(key=k, value=v) for k, v in clean.items()]
            self._store.append(f"registered-model-{uuid.uuid4().hex}", events, expected_version=NO_STREAM)
        return self.get_registered_model(name)

    def get_registered_model(self, name: str) -> RegisteredModel:
        """A registered model with its tags, aliases and latest version per stage."""
        with self.reading() as conn:
            return load_registered_model(conn, _found_key(conn, _name(name)))

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        """Give a registered model an unused name; its versions and history follow."""
        new_name = _name(new_name)
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            if new_name != name:
                if _key_of(conn, new_name) is not None:
                    raise ResourceAlreadyExists(f"Registered Model (name={new_name}) already exists.")
                self._store.append(key, [RegisteredModelRenamed(name=new_name)])
        return self.get_registered_model(new_name)

    def update_registered_model(self, name: str, description: str | None = None) -> RegisteredModel:
        """Set a registered model's description."""
        text = optional_text("description", description) or ""
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            held = conn.execute("SELECT description FROM registered_models WHERE model_key = ?", (key,)).fetchone()
            if held[0] != text:
                self._store.append(key, [RegisteredModelDescribed(description=text)])
        return self.get_registered_model(name)

    def delete_registered_model(self, name: str) -> None:
        """Delete a registered model with its versions (its history stays in the log)."""
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            self._store.append(key, [RegisteredModelDeleted(deleted_time=codec.now_ms())])

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        """Set a tag on a registered model."""
        key, value = validate_key("tag", key), tag_value(key, value)
        with self._store.transaction() as conn:
            stream = _found_key(conn, _name(name))
            held = conn.execute("SELECT value FROM registered_model_tags WHERE model_key = ? AND key = ?",
                                (stream, key)).fetchone()  # fmt: skip
            if held is None or held[0] != value:
                self._store.append(stream, [RegisteredModelTagSet(key=key, value=value)])

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Delete a tag of a registered model (none there: nothing to do, as MLflow)."""
        check_text("tag key", key)
        with self._store.transaction() as conn:
            stream = _found_key(conn, _name(name))
            if conn.execute("SELECT 1 FROM registered_model_tags WHERE model_key = ? AND key = ?",
                            (stream, key)).fetchone():  # fmt: skip
                self._store.append(stream, [RegisteredModelTagDeleted(key=key)])

    def set_registered_model_alias(self, name: str, alias: str, version: Any) -> None:
        """Point an alias at a version (moving it if it points elsewhere)."""
        alias, number = _alias(alias), _version(version)
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            _found_version(conn, key, name, number)
            held = conn.execute("SELECT version FROM registered_model_aliases WHERE model_key = ? AND alias = ?",
                                (key, alias)).fetchone()  # fmt: skip
            if held is None or held[0] != number:
                self._store.append(key, [RegisteredModelAliasSet(alias=alias, version_number=number)])

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        """Remove an alias (none: nothing to do, as MLflow)."""
        check_text("alias", alias)
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            if conn.execute("SELECT 1 FROM registered_model_aliases WHERE model_key = ? AND alias = ?",
                            (key, alias)).fetchone():  # fmt: skip
                self._store.append(key, [RegisteredModelAliasDeleted(alias=alias)])

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version an alias points at."""
        check_text("alias", alias)
        with self.reading() as conn:
            key = _found_key(conn, _name(name))
            row = conn.execute("SELECT version FROM registered_model_aliases WHERE model_key = ? AND alias = ?",
                               (key, alias)).fetchone()  # fmt: skip
            if row is None:
                raise InvalidParameterValue(f"Registered model alias {alias} not found.")
            return load_versions(conn, key, name, [row[0]])[0]

    def search_registered_models(
        self, filter_string: str | None = None, max_results: int = 100,
        order_by: list[str] | None = None, page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Registered models matching a filter (name, tags), ordered (name by default), paged."""
        from evstore.search import create_page_token, parse_page_token

        _check_max_results(max_results, 1000, 0)
        test = _filter(filter_string, _MODEL_ATTRIBUTES, frozenset())
        keys = _order(order_by, _MODEL_SORT, ["name ASC"])
        start = parse_page_token(page_token)
        with self.reading() as conn:
            found = [load_registered_model(conn, key) for (key,) in conn.execute("SELECT model_key FROM registered_models")]
        found = [m for m in found if test(m)]
        for sort_key, descending in reversed(keys):
            found.sort(key=sort_key, reverse=descending)
        end = start + max_results
        return PagedList(found[start:end], create_page_token(end) if end < len(found) else None)

    # --- versions ---------------------------------------------------------------------

    def create_model_version(
        self, name: str, source: str, run_id: str | None = None, tags: dict[str, Any] | None = None,
        run_link: str | None = None, description: str | None = None, model_id: str | None = None,
        user_id: str | None = None,
    ) -> ModelVersion:  # fmt: skip
        """The next version of a registered model, from a logged model, a run or a URI."""
        source = check_text("source", source)
        if not source:
            raise InvalidParameterValue("Missing value for required parameter 'source'.")
        optional_text("run id", run_id)
        clean = {validate_key("tag", k): tag_value(k, v) for k, v in (tags or {}).items()}
        if getattr(self, "_served", False):  # what mlflow server checks, and only it
            with self.reading() as conn:
                _found_key(conn, _name(name))
            source, run_id, model_id = self._served_version_source(source, run_id, model_id)
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            logged = None
            if model_id:
                logged = self.get_logged_model(model_id)  # type: ignore[attr-defined]
                run_id = run_id or logged.source_run_id
            # a deleted version's number is never given again
            (highest,) = conn.execute(
                "SELECT highest_version FROM registered_models WHERE model_key = ?", (key,)
            ).fetchone()
            number = highest + 1
            events: list[Event] = [ModelVersionCreated(
                version_number=number, source=source, creation_time=codec.now_ms(), run_id=run_id or None,
                model_id=model_id or None, run_link=optional_text("run link", run_link) or "",
                description=optional_text("description", description) or "",
                user_id=optional_text("user id", user_id) or "")]  # fmt: skip
            events += [ModelVersionTagSet(version_number=number, key=k, value=v) for k, v in clean.items()]
            self._store.append(key, events)
            if logged is not None:  # the logged model names its versions, as MLflow's server does
                import json

                listed = json.loads(logged.tags.get(MODEL_VERSIONS_TAG, "[]"))
                listed.append({"name": name, "version": number})
                self._store.append(model_id, [LoggedModelTagSet(key=MODEL_VERSIONS_TAG, value=json.dumps(listed))])
        return self.get_model_version(name, number)

    def _served_version_source(
        self, source: str, run_id: str | None, model_id: str | None
    ) -> tuple[str, str | None, str | None]:
        """The source, run and model of a version a server creates, checked as mlflow
        server checks them; ``models:/<name>/<version>`` takes that version's run and model."""
        from evstore.tracking import version_sources as vs
        from evstore.tracking.model_wire import served_model_location
        from evstore.tracking.wire import served_artifact_uri

        def run_roots(run_id: str) -> tuple[str, ...]:
            info = self.get_run(run_id).info  # type: ignore[attr-defined]
            return info.artifact_uri, served_artifact_uri(info)

        def model_roots(model_id: str) -> tuple[str, ...]:
            model = self.get_logged_model(model_id)  # type: ignore[attr-defined]
            return model.artifact_location, served_model_location(model)

        if urlsplit(source).scheme == "models":
            source, run_id, model_id = self._lineage_of(source, run_id, model_id)
        if model_id:
            vs.check_source_of_model(source, model_id, model_roots)
        else:
            vs.check_source_of_run(source, run_id, run_roots)
        return source, run_id, model_id

    def _lineage_of(self, source: str, run_id: str | None, model_id: str | None
                    ) -> tuple[str, str | None, str | None]:  # fmt: skip
        """A ``models:/<name>/...`` source as the version it names (MLflow's lineage rule)."""
        from evstore.tracking import version_sources as vs

        parsed = urlsplit(source)
        if parsed.netloc:
            raise InvalidParameterValue(
                f"Invalid model version source: '{source}'. Registered model sources must use the "
                "active model registry."
            )
        if vs.models_uri_model_id(source) is not None:
            return source, run_id, model_id
        found = self._version_named_by(source)
        if (run_id is not None and run_id != (found.run_id or "")) or (
            model_id is not None and model_id != (found.model_id or "")
        ):
            raise InvalidParameterValue(
                f"Invalid model version source: '{source}'. The run_id and model_id request "
                "parameters must match the referenced model version."
            )
        return (f"models:/{found.name}/{found.version}",
                found.run_id if run_id is None else run_id, found.model_id if model_id is None else model_id)  # fmt: skip

    def _version_named_by(self, source: str) -> ModelVersion:
        """The version ``models:/<name>/<version|stage|latest>`` or ``models:/<name>@<alias>`` names."""
        path = urlsplit(source).path.lstrip("/")
        if "/" in path:
            name, suffix = path.split("/", 1)
            if suffix.isdigit():
                return self.get_model_version(name, suffix)
            stages = None if suffix.lower() == "latest" else [suffix]
            latest = self.get_latest_versions(name, stages)
            if not latest:
                raise InvalidParameterValue(f"No versions of model with name '{name}' and stage '{suffix}' found")
            return max(latest, key=lambda v: int(v.version))
        name, _, alias = path.rpartition("@")
        return self.get_model_version_by_alias(name, alias)

    def get_model_version(self, name: str, version: Any) -> ModelVersion:
        """One version, with its tags and aliases."""
        number = _version(version)
        with self.reading() as conn:
            key = _found_key(conn, _name(name))
            _found_version(conn, key, name, number)
            return load_versions(conn, key, name, [number])[0]

    def update_model_version(self, name: str, version: Any, description: str | None = None) -> ModelVersion:
        """Set a version's description."""
        number, text = _version(version), optional_text("description", description) or ""
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            if _found_version(conn, key, name, number).description != text:
                self._store.append(key, [ModelVersionDescribed(version_number=number, description=text)])
        return self.get_model_version(name, number)

    def transition_model_version_stage(
        self, name: str, version: Any, stage: str, archive_existing_versions: bool = False
    ) -> ModelVersion:
        """Move a version to a stage; with ``archive_existing_versions``, the others in that
        stage (Staging or Production) go to Archived, in the same write."""
        number, stage = _version(version), _stage(stage)
        if archive_existing_versions and stage not in ("Staging", "Production"):
            raise InvalidParameterValue(
                f"Model version transition cannot archive existing model versions because '{stage}'"
                " is not an Active stage. Valid stages are Staging, Production"
            )
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            _found_version(conn, key, name, number)
            events: list[Event] = [ModelVersionStageChanged(version_number=number, stage=stage)]
            if archive_existing_versions:
                events += [ModelVersionStageChanged(version_number=v, stage="Archived") for (v,) in conn.execute(
                    "SELECT version FROM model_versions WHERE model_key = ? AND current_stage = ?"
                    " AND version != ? ORDER BY version", (key, stage, number))]  # fmt: skip
            self._store.append(key, events)
        return self.get_model_version(name, number)

    def delete_model_version(self, name: str, version: Any) -> None:
        """Delete a version; aliases pointing at it go with it."""
        number = _version(version)
        with self._store.transaction() as conn:
            key = _found_key(conn, _name(name))
            _found_version(conn, key, name, number)
            self._store.append(key, [ModelVersionDeleted(version_number=number, deleted_time=codec.now_ms())])

    def set_model_version_tag(self, name: str, version: Any, key: str, value: Any) -> None:
        """Set a tag on a version."""
        number, key, value = _version(version), validate_key("tag", key), tag_value(key, value)
        with self._store.transaction() as conn:
            stream = _found_key(conn, _name(name))
            if _found_version(conn, stream, name, number).tags.get(key) != value:
                self._store.append(stream, [ModelVersionTagSet(version_number=number, key=key, value=value)])

    def delete_model_version_tag(self, name: str, version: Any, key: str) -> None:
        """Delete a tag of a version (none there: nothing to do, as MLflow)."""
        number = _version(version)
        check_text("tag key", key)
        with self._store.transaction() as conn:
            stream = _found_key(conn, _name(name))
            if key in _found_version(conn, stream, name, number).tags:
                self._store.append(stream, [ModelVersionTagDeleted(version_number=number, key=key)])

    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> list[ModelVersion]:
        """The highest version in each stage (or in each of ``stages``)."""
        wanted = {_stage(s) for s in stages} if stages else None
        with self.reading() as conn:
            key = _found_key(conn, _name(name))
            versions = load_versions(conn, key, name, None)
        return [v for v in _latest_per_stage(versions) if wanted is None or v.current_stage in wanted]

    def get_model_version_download_uri(self, name: str, version: Any) -> str:
        """Where a version's files are: its logged model's or run's artifacts, or its source."""
        found = self.get_model_version(name, version)
        if found.model_id:
            from evstore.tracking.model_wire import served_model_location

            return served_model_location(self.get_logged_model(found.model_id))  # type: ignore[attr-defined]
        if found.source.startswith("runs:/") and found.run_id:
            from evstore.tracking.wire import served_artifact_uri

            relative = found.source.removeprefix("runs:/").partition("/")[2]
            base = served_artifact_uri(self.get_run(found.run_id).info)  # type: ignore[attr-defined]
            return f"{base}/{relative}" if relative else base
        return found.source

    def search_model_versions(
        self, filter_string: str | None = None, max_results: int = 10_000,
        order_by: list[str] | None = None, page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Versions matching a filter (name, run_id, version_number, source_path, tags),
        ordered (last updated first by default), paged."""
        from evstore.search import create_page_token, parse_page_token

        _check_max_results(max_results, 200_000, 1)
        test = _filter(filter_string, _VERSION_ATTRIBUTES, frozenset({"version_number"}))
        keys = _order(order_by, _VERSION_SORT, ["last_updated_timestamp DESC", "name ASC", "version_number DESC"])
        start = parse_page_token(page_token)
        with self.reading() as conn:
            found = [v for key, name in conn.execute("SELECT model_key, name FROM registered_models")
                     for v in load_versions(conn, key, name, None, with_aliases=False)]  # fmt: skip
        found = [v for v in found if test(v)]
        for sort_key, descending in reversed(keys):
            found.sort(key=sort_key, reverse=descending)
        end = start + max_results
        return PagedList(found[start:end], create_page_token(end) if end < len(found) else None)


# --- reads -------------------------------------------------------------------------------


def _key_of(conn: Any, name: str) -> str | None:
    row = conn.execute("SELECT model_key FROM registered_models WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def _found_key(conn: Any, name: str) -> str:
    key = _key_of(conn, name)
    if key is None:
        raise ResourceDoesNotExist(f"Registered Model with name={name} not found")
    return key


def _found_version(conn: Any, key: str, name: str, number: int) -> ModelVersion:
    found = load_versions(conn, key, name, [number])
    if not found:
        raise ResourceDoesNotExist(f"Model Version (name={name}, version={number}) not found")
    return found[0]


def load_versions(conn: Any, key: str, name: str, numbers: list[int] | None,
                   with_aliases: bool = True) -> list[ModelVersion]:  # fmt: skip
    """The versions of the registered model ``key`` (``numbers``: only those), read from
    ``conn``, a snapshot of the registry's read model."""
    where, args = ("", [key]) if numbers is None else (
        f" AND version IN ({', '.join('?' * len(numbers))})", [key, *numbers])  # fmt: skip
    versions = {
        row[0]: ModelVersion(name, str(row[0]), *row[1:])
        for row in conn.execute(
            "SELECT version, creation_time, last_updated_time, description, user_id, current_stage,"
            f" source, run_id, model_id, run_link FROM model_versions WHERE model_key = ?{where}"
            " ORDER BY version", args,
        )
    }  # fmt: skip
    for version, tag, value in conn.execute(
        f"SELECT version, key, value FROM model_version_tags WHERE model_key = ?{where} ORDER BY position", args
    ):
        if version in versions:
            versions[version].tags[tag] = value
    if with_aliases:
        for alias, version in conn.execute(
            f"SELECT alias, version FROM registered_model_aliases WHERE model_key = ?{where} ORDER BY alias", args
        ):
            if version in versions:
                versions[version].aliases.append(alias)
    return list(versions.values())


def _latest_per_stage(versions: list[ModelVersion]) -> list[ModelVersion]:
    latest: dict[str, ModelVersion] = {}
    for version in versions:
        held = latest.get(version.current_stage)
        if held is None or int(version.version) > int(held.version):
            latest[version.current_stage] = version
    return sorted(latest.values(), key=lambda v: int(v.version))


def load_registered_model(conn: Any, key: str) -> RegisteredModel:
    """The registered model ``key`` with its tags, aliases and latest versions, from ``conn``."""
    name, created, updated, description = conn.execute(
        "SELECT name, creation_time, last_updated_time, description FROM registered_models WHERE model_key = ?",
        (key,),
    ).fetchone()
    model = RegisteredModel(name, created, updated, description or "")
    model.tags = dict(conn.execute("SELECT key, value FROM registered_model_tags WHERE model_key = ? ORDER BY position", (key,)).fetchall())
    model.aliases = {alias: str(v) for alias, v in conn.execute(
        "SELECT alias, version FROM registered_model_aliases WHERE model_key = ? ORDER BY alias", (key,))}  # fmt: skip
    model.latest_versions = _latest_per_stage(load_versions(conn, key, name, None, with_aliases=False))
    return model


# --- search ------------------------------------------------------------------------------

_MODEL_ATTRIBUTES: dict[str, Callable[[Any], Any]] = {"name": lambda m: m.name}
_VERSION_ATTRIBUTES: dict[str, Callable[[Any], Any]] = {
    "name": lambda v: v.name,
    "run_id": lambda v: v.run_id or "",
    "version_number": lambda v: int(v.version),
    "source_path": lambda v: v.source,
}
_MODEL_SORT: dict[str, Callable[[Any], Any]] = {
    "name": lambda m: m.name,
    "timestamp": lambda m: m.last_updated_timestamp,
    "last_updated_timestamp": lambda m: m.last_updated_timestamp,
    "creation_timestamp": lambda m: m.creation_timestamp,
}
_VERSION_SORT: dict[str, Callable[[Any], Any]] = {
    "name": lambda v: v.name,
    "version_number": lambda v: int(v.version),
    "creation_timestamp": lambda v: v.creation_timestamp,
    "last_updated_timestamp": lambda v: v.last_updated_timestamp,
    "timestamp": lambda v: v.last_updated_timestamp,
}


def _check_max_results(max_results: Any, limit: int, smallest: int) -> None:
    """MLflow's bounds: registered models take 0 (an empty page), versions start at 1."""
    if not isinstance(max_results, int) or isinstance(max_results, bool):
        raise InvalidParameterValue(f"Invalid value for max_results: it must be an integer, not {shown(max_results)}")
    if max_results < smallest:  # MLflow's own words for a version search
        raise InvalidParameterValue(
            f"Invalid value for max_results. It must be a positive integer, but got {max_results}"
        )
    if max_results > limit:
        raise InvalidParameterValue(
            f"Invalid value for request parameter max_results. It must be at most {limit},"
            f" but got value {max_results}"
        )


def _filter(filter_string: str | None, attributes: dict[str, Callable[[Any], Any]],
            numeric: frozenset[str]) -> Callable[[Any], bool]:  # fmt: skip
    """MLflow's registry filter grammar (attributes and ``tags.``) as a test."""
    from evstore.search import ATTRIBUTE, TAG, Grammar, parse_filter
    from evstore.tracking.filters import comparison, expression_test

    grammar = Grammar(
        {"tag": TAG, "tags": TAG, "attribute": ATTRIBUTE, "attributes": ATTRIBUTE},
        frozenset(attributes) - numeric, numeric, {}, frozenset({"run_id"}),
        key_hint=f"one of {', '.join(sorted(attributes))} or tags.<key>",
        entity_hint="tags. or an attribute", attribute_ops={},
    )  # fmt: skip

    def clause_test(node: Any) -> Callable[[Any], bool]:
        test, key = comparison(node.op, node.value), node.key
        if node.entity == TAG:
            if node.op == "!=":  # MLflow's registry: a model without the tag differs from it
                return lambda x: key not in x.tags or test(x.tags[key])
            return lambda x: test(x.tags.get(key))
        value_of = attributes[key]
        return lambda x: test(value_of(x))

    return expression_test(parse_filter(optional_text("filter_string", filter_string), grammar), clause_test)


def _order(order_by: list[str] | None, fields: dict[str, Callable[[Any], Any]],
           default: list[str]) -> list[tuple[Callable[[Any], Any], bool]]:  # fmt: skip
    keys = []
    for clause in order_by or default:
        parts = clause.split() if isinstance(clause, str) else []
        name = parts[0].removeprefix("attributes.").removeprefix("attribute.") if parts else ""
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if len(parts) not in (1, 2) or name not in fields or direction not in ("ASC", "DESC"):
            raise InvalidParameterValue(
                f"Invalid order_by clause {shown(clause)}: use one of {', '.join(fields)},"
                " optionally followed by ASC or DESC"
            )
        keys.append((fields[name], direction == "DESC"))
    return keys
