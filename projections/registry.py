"""The model registry: registered models (by stream, with their current name), their
tags and aliases, and their versions with tags. A deleted model or version leaves these
tables (as in MLflow); its events, and so its history, stay in the log."""

from __future__ import annotations

from evstore.events import (
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
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def created(rec: RecordedEvent, out: Ops) -> None:
    e: RegisteredModelCreated = rec.event  # type: ignore[assignment]
    out.add("insert", (rec.stream_id, e.name, e.creation_time, e.creation_time, e.description, 0))


def renamed(rec: RecordedEvent, out: Ops) -> None:
    e: RegisteredModelRenamed = rec.event  # type: ignore[assignment]
    out.add("rename", (e.name, rec.occurred_at, rec.stream_id))


def described(rec: RecordedEvent, out: Ops) -> None:
    e: RegisteredModelDescribed = rec.event  # type: ignore[assignment]
    out.add("describe", (e.description, rec.occurred_at, rec.stream_id))


def tag_set(rec: RecordedEvent, out: Ops) -> None:
    e: RegisteredModelTagSet = rec.event  # type: ignore[assignment]
    out.add("tag", (rec.stream_id, e.key, e.value, rec.position))


def tag_deleted(rec: RecordedEvent, out: Ops) -> None:
    e: RegisteredModelTagDeleted = rec.event  # type: ignore[assignment]
    out.add("untag", (rec.stream_id, e.key))


def deleted(rec: RecordedEvent, out: Ops) -> None:
    """The model, its tags, versions, their tags and its aliases leave the tables."""
    for statement in ("drop_model", "drop_tags", "drop_versions", "drop_version_tags", "drop_aliases"):
        out.add(statement, (rec.stream_id,))


def alias_set(rec: RecordedEvent, out: Ops) -> None:
    e: RegisteredModelAliasSet = rec.event  # type: ignore[assignment]
    out.add("alias", (rec.stream_id, e.alias, e.version_number))


def alias_deleted(rec: RecordedEvent, out: Ops) -> None:
    e: RegisteredModelAliasDeleted = rec.event  # type: ignore[assignment]
    out.add("unalias", (rec.stream_id, e.alias))


def version_created(rec: RecordedEvent, out: Ops) -> None:
    e: ModelVersionCreated = rec.event  # type: ignore[assignment]
    out.add(
        "version",
        (rec.stream_id, e.version_number, e.creation_time, e.creation_time, e.description, e.user_id,
         "None", e.source, e.run_id, e.model_id, e.run_link),
    )  # fmt: skip
    out.add("count_version", (e.creation_time, e.version_number, rec.stream_id))


def version_described(rec: RecordedEvent, out: Ops) -> None:
    e: ModelVersionDescribed = rec.event  # type: ignore[assignment]
    out.add("describe_version", (e.description, rec.occurred_at, rec.stream_id, e.version_number))


def stage_changed(rec: RecordedEvent, out: Ops) -> None:
    e: ModelVersionStageChanged = rec.event  # type: ignore[assignment]
    out.add("stage", (e.stage, rec.occurred_at, rec.stream_id, e.version_number))
    out.add("touch", (rec.occurred_at, rec.stream_id))


def version_tag_set(rec: RecordedEvent, out: Ops) -> None:
    e: ModelVersionTagSet = rec.event  # type: ignore[assignment]
    out.add("version_tag", (rec.stream_id, e.version_number, e.key, e.value, rec.position))


def version_tag_deleted(rec: RecordedEvent, out: Ops) -> None:
    e: ModelVersionTagDeleted = rec.event  # type: ignore[assignment]
    out.add("version_untag", (rec.stream_id, e.version_number, e.key))


def version_deleted(rec: RecordedEvent, out: Ops) -> None:
    """The version, its tags and the aliases that point at it go."""
    e: ModelVersionDeleted = rec.event  # type: ignore[assignment]
    out.add("drop_version", (rec.stream_id, e.version_number))
    out.add("drop_one_version_tags", (rec.stream_id, e.version_number))
    out.add("drop_version_aliases", (rec.stream_id, e.version_number))
    out.add("touch", (e.deleted_time, rec.stream_id))


REGISTRY = ReadModel(
    name="registry",
    version=1,
    tables={
        "registered_models": (
            (
                "CREATE TABLE {registered_models} (model_key TEXT PRIMARY KEY, name TEXT NOT NULL,"
                " creation_time INTEGER, last_updated_time INTEGER, description TEXT,"
                " highest_version INTEGER NOT NULL)"
            ),
            "CREATE INDEX {registered_models}_name ON {registered_models} (name)",
        ),
        "registered_model_tags": (
            (
                "CREATE TABLE {registered_model_tags} (model_key TEXT NOT NULL, key TEXT NOT NULL,"
                " value TEXT, position INTEGER NOT NULL, PRIMARY KEY (model_key, key)) WITHOUT ROWID"
            ),
        ),
        "model_versions": (
            (
                "CREATE TABLE {model_versions} (model_key TEXT NOT NULL, version INTEGER NOT NULL,"
                " creation_time INTEGER, last_updated_time INTEGER, description TEXT, user_id TEXT,"
                " current_stage TEXT NOT NULL, source TEXT, run_id TEXT, model_id TEXT,"
                " run_link TEXT, PRIMARY KEY (model_key, version)) WITHOUT ROWID"
            ),
        ),
        "model_version_tags": (
            (
                "CREATE TABLE {model_version_tags} (model_key TEXT NOT NULL, version INTEGER NOT NULL,"
                " key TEXT NOT NULL, value TEXT, position INTEGER NOT NULL,"
                " PRIMARY KEY (model_key, version, key)) WITHOUT ROWID"
            ),
        ),
        "registered_model_aliases": (
            (
                "CREATE TABLE {registered_model_aliases} (model_key TEXT NOT NULL,"
                " alias TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (model_key, alias))"
                " WITHOUT ROWID"
            ),
        ),
    },
    statements={
        "insert": "INSERT INTO {registered_models} VALUES (?, ?, ?, ?, ?, ?)",
        "count_version": (
            "UPDATE {registered_models} SET last_updated_time = ?,"
            " highest_version = max(highest_version, ?) WHERE model_key = ?"
        ),
        "rename": "UPDATE {registered_models} SET name = ?, last_updated_time = ? WHERE model_key = ?",
        "describe": (
            "UPDATE {registered_models} SET description = ?, last_updated_time = ? WHERE model_key = ?"
        ),
        "touch": "UPDATE {registered_models} SET last_updated_time = ? WHERE model_key = ?",
        "drop_model": "DELETE FROM {registered_models} WHERE model_key = ?",
        # a tag set again keeps its place (MLflow lists tags in the order first set)
        "tag": (
            "INSERT INTO {registered_model_tags} VALUES (?, ?, ?, ?)"
            " ON CONFLICT (model_key, key) DO UPDATE SET value = excluded.value"
        ),
        "untag": "DELETE FROM {registered_model_tags} WHERE model_key = ? AND key = ?",
        "drop_tags": "DELETE FROM {registered_model_tags} WHERE model_key = ?",
        "version": "INSERT INTO {model_versions} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "describe_version": (
            "UPDATE {model_versions} SET description = ?, last_updated_time = ?"
            " WHERE model_key = ? AND version = ?"
        ),
        "stage": (
            "UPDATE {model_versions} SET current_stage = ?, last_updated_time = ?"
            " WHERE model_key = ? AND version = ?"
        ),
        "drop_version": "DELETE FROM {model_versions} WHERE model_key = ? AND version = ?",
        "drop_versions": "DELETE FROM {model_versions} WHERE model_key = ?",
        "version_tag": (
            "INSERT INTO {model_version_tags} VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (model_key, version, key) DO UPDATE SET value = excluded.value"
        ),
        "version_untag": (
            "DELETE FROM {model_version_tags} WHERE model_key = ? AND version = ? AND key = ?"
        ),
        "drop_one_version_tags": "DELETE FROM {model_version_tags} WHERE model_key = ? AND version = ?",
        "drop_version_tags": "DELETE FROM {model_version_tags} WHERE model_key = ?",
        "alias": "INSERT OR REPLACE INTO {registered_model_aliases} VALUES (?, ?, ?)",
        "unalias": "DELETE FROM {registered_model_aliases} WHERE model_key = ? AND alias = ?",
        "drop_version_aliases": (
            "DELETE FROM {registered_model_aliases} WHERE model_key = ? AND version = ?"
        ),
        "drop_aliases": "DELETE FROM {registered_model_aliases} WHERE model_key = ?",
    },
    handlers={
        RegisteredModelCreated: created,
        RegisteredModelRenamed: renamed,
        RegisteredModelDescribed: described,
        RegisteredModelTagSet: tag_set,
        RegisteredModelTagDeleted: tag_deleted,
        RegisteredModelDeleted: deleted,
        RegisteredModelAliasSet: alias_set,
        RegisteredModelAliasDeleted: alias_deleted,
        ModelVersionCreated: version_created,
        ModelVersionDescribed: version_described,
        ModelVersionStageChanged: stage_changed,
        ModelVersionTagSet: version_tag_set,
        ModelVersionTagDeleted: version_tag_deleted,
        ModelVersionDeleted: version_deleted,
    },
)
