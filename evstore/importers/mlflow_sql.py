"""MLflow's SQL store (SQLAlchemy schema, versioned by alembic), read with DB-API only.

SQLite is opened read-only with the standard library; PostgreSQL with psycopg 3 (the
``[postgres]`` extra), in one read-only REPEATABLE READ transaction, so the whole import
reads one snapshot of a database the MLflow server may be writing to, and long metric
histories stream through server-side cursors. The SQL is written once, with ``?``
placeholders and a ``{key}`` slot for the reserved column name ``key``; a ``SqlDialect``
adapts both, so PostgreSQL (``%s``, ``"key"``) and MySQL (``%s``, ```key```) need only a
connection and a dialect.

What the schema says about values (MLflow's ``SqlAlchemyStore``):
- NaN is stored as ``value = 0`` with ``is_nan = 1``; read back as NaN.
- +-inf cannot be stored: MLflow writes +-1.7976931348623157e308 (the largest double)
  instead, and its own client returns those. They are read as stored; the infinity
  itself was lost when MLflow wrote the row.
- A deleted run has ``lifecycle_stage = 'deleted'`` and ``deleted_time``; deleting an
  experiment sets its ``lifecycle_stage`` and ``last_update_time`` and deletes its runs.
- MLflow 3 records a metric's model and dataset context only in
  ``logged_model_metrics``; it is joined back onto the run's points here.
- A logged model's status is an int (0 UNSPECIFIED, 1 PENDING, 2 READY, 3 FAILED).
- ``inputs`` links a run to what it used and made: (DATASET -> RUN) a dataset input with
  ``input_tags``, (RUN_INPUT -> MODEL_INPUT) a logged model it used, (RUN_OUTPUT ->
  MODEL_OUTPUT) one it produced, at ``step``. Nothing records the order of a run's inputs,
  so they are read by dataset name and digest.
- A deleted registered model is gone with its rows; a deleted version keeps its row with
  ``current_stage = 'Deleted_Internal'``. Model versions have no model id column: it is
  read from a ``models:/m-<hex>`` source, as evstore's registry does.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Generator, Iterator
from typing import Any, NamedTuple

import msgspec

from evstore.errors import InvalidParameterValue, StoreError, StoreFormatError
from evstore.events import DatasetInput, MetricPoint, ModelOutput
from evstore.importers.mlflow_source import (
    Experiment,
    LoggedModel,
    MlflowSource,
    ModelVersion,
    RegisteredModel,
    Run,
    RunLinks,
    _sqlite_error,
    model_id_of,
)


class SchemaRevision(NamedTuple):
    """What the importer knows about one alembic head of MLflow's schema."""

    mlflow_version: str
    has_workspaces: bool
    has_logged_model_metrics: bool


#: The alembic heads this reader was checked against, with the MLflow release that made them.
KNOWN_REVISIONS: dict[str, SchemaRevision] = {
    "0584bdc529eb": SchemaRevision("2.22", has_workspaces=False, has_logged_model_metrics=False),
    "dc11669786a5": SchemaRevision("3.17", has_workspaces=True, has_logged_model_metrics=True),
}


class SqlDialect(NamedTuple):
    """How one database spells placeholders and the reserved column name ``key``, and
    whether long results stream through named (server-side) cursors."""

    placeholder: str
    key_column: str
    server_cursors: bool = False


SQLITE = SqlDialect(placeholder="?", key_column='"key"')
POSTGRES = SqlDialect(placeholder="%s", key_column='"key"', server_cursors=True)

SELECT_REVISIONS = "SELECT version_num FROM alembic_version"
SELECT_EXPERIMENTS = (
    "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
    "last_update_time, {workspace} FROM experiments ORDER BY experiment_id"
)
SELECT_EXPERIMENT_TAGS = (
    "SELECT {key}, value FROM experiment_tags WHERE experiment_id = ? ORDER BY {key}"
)
SELECT_RUNS = (
    "SELECT run_uuid, experiment_id, name, user_id, status, start_time, end_time, "
    "lifecycle_stage, artifact_uri, deleted_time FROM runs WHERE experiment_id = ? "
    "ORDER BY CASE WHEN start_time IS NULL THEN 0 ELSE 1 END, start_time, run_uuid"
)
SELECT_RUN_TAGS = "SELECT {key}, value FROM tags WHERE run_uuid = ? ORDER BY {key}"
SELECT_RUN_PARAMS = "SELECT {key}, value FROM params WHERE run_uuid = ? ORDER BY {key}"
# MLflow's get_metric_history orders by (timestamp, step, value); key and is_nan only
# break its ties, so each key's points come in MLflow's own order. NaN comes out as
# NULL, so a row maps straight onto a MetricPoint (key, value, step, timestamp).
SELECT_METRICS = (
    "SELECT {key}, CASE WHEN is_nan THEN NULL ELSE value END, step, timestamp "
    "FROM metrics WHERE run_uuid = ? ORDER BY timestamp, step, {key}, value, is_nan"
)
SELECT_LOGGED_MODELS = (
    "SELECT model_id, experiment_id, name, artifact_location, creation_timestamp_ms, "
    "last_updated_timestamp_ms, status, status_message, model_type, source_run_id, "
    "lifecycle_stage FROM logged_models WHERE experiment_id = ? "
    "ORDER BY creation_timestamp_ms, model_id"
)
SELECT_LOGGED_MODEL_TAGS = (
    "SELECT tag_key, tag_value FROM logged_model_tags WHERE model_id = ? ORDER BY tag_key"
)
SELECT_LOGGED_MODEL_PARAMS = (
    "SELECT param_key, param_value FROM logged_model_params WHERE model_id = ? ORDER BY param_key"
)
# A LEFT JOIN, so that an input whose dataset row is missing is reported, not dropped.
SELECT_DATASET_INPUTS = (
    "SELECT i.input_uuid, i.source_id, d.name, d.digest, d.dataset_source_type, "
    "d.dataset_source, d.dataset_schema, d.dataset_profile FROM inputs i LEFT JOIN datasets d "
    "ON d.dataset_uuid = i.source_id WHERE i.source_type = 'DATASET' "
    "AND i.destination_type = 'RUN' AND i.destination_id = ? "
    "ORDER BY d.name, d.digest, i.source_id"
)
SELECT_INPUT_TAGS = "SELECT name, value FROM input_tags WHERE input_uuid = ? ORDER BY name"
SELECT_MODEL_INPUTS = (
    "SELECT DISTINCT destination_id FROM inputs WHERE source_type = 'RUN_INPUT' "
    "AND source_id = ? AND destination_type = 'MODEL_INPUT' ORDER BY destination_id"
)
SELECT_MODEL_OUTPUTS = (
    "SELECT DISTINCT destination_id, step FROM inputs WHERE source_type = 'RUN_OUTPUT' "
    "AND source_id = ? AND destination_type = 'MODEL_OUTPUT' ORDER BY destination_id, step"
)
SELECT_REGISTERED_MODELS = (
    "SELECT name, creation_time, last_updated_time, description, {workspace} "
    "FROM registered_models ORDER BY {workspace_order}name"
)
SELECT_REGISTERED_MODEL_TAGS = (
    "SELECT {key}, value FROM registered_model_tags WHERE name = ?{in_workspace} ORDER BY {key}"
)
SELECT_MODEL_VERSIONS = (
    "SELECT version, creation_time, last_updated_time, description, user_id, current_stage, "
    "source, run_id, run_link, status FROM model_versions WHERE name = ?{in_workspace} "
    "ORDER BY version"
)
SELECT_MODEL_VERSION_TAGS = (
    "SELECT version, {key}, value FROM model_version_tags WHERE name = ?{in_workspace} "
    "ORDER BY version, {key}"
)
SELECT_ALIASES = (
    "SELECT alias, version FROM registered_model_aliases WHERE name = ?{in_workspace} "
    "ORDER BY alias"
)
# A run's point carries one model id: a point MLflow linked to more models keeps the first.
COUNT_EXTRA_MODEL_LINKS = (
    "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT run_id, metric_name, "
    "metric_timestamp_ms, metric_step, metric_value FROM logged_model_metrics) AS points) "
    "FROM logged_model_metrics"
)
#: MLflow's LoggedModelStatus as the SQL store writes it.
LOGGED_MODEL_STATUSES = {0: "UNSPECIFIED", 1: "PENDING", 2: "READY", 3: "FAILED"}
SELECT_RUNS_WITH_MODEL_METRICS = "SELECT DISTINCT run_id FROM logged_model_metrics"
SELECT_MODEL_METRIC_CONTEXT = (
    "SELECT metric_name, metric_timestamp_ms, metric_step, metric_value, model_id, "
    "dataset_name, dataset_digest FROM logged_model_metrics WHERE run_id = ? "
    "ORDER BY model_id DESC"
)

_NAN = float("nan")
_FETCH_SIZE = 10_000
_POINTS = list[MetricPoint]
_Context = dict[tuple[str, int, int, float], tuple[str, str | None, str | None]]


class SqlSource(MlflowSource):
    """An MLflow SQL store read through a DB-API connection, at a known schema revision."""

    def __init__(
        self,
        connection: Any,
        uri: str,
        dialect: SqlDialect = SQLITE,
        relative_base: str | None = None,
    ) -> None:
        super().__init__()
        self.uri = uri
        self._connection = connection
        self._dialect = dialect
        self._base = relative_base or os.getcwd()
        self._cursors = 0
        self.schema_revision = self._check_revision()
        self.schema = KNOWN_REVISIONS[self.schema_revision]
        self._model_metric_runs: set[str] | None = None

    @classmethod
    def from_sqlite(cls, path: str | os.PathLike[str]) -> SqlSource:
        """Open an MLflow SQLite file read-only; refuse an unknown schema revision."""
        absolute = os.path.abspath(os.fspath(path))
        try:
            connection = sqlite3.connect(f"{_file_uri(absolute)}?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise _sqlite_error(absolute, e) from e
        try:
            return cls(connection, f"sqlite:///{absolute}", relative_base=os.path.dirname(absolute))
        except BaseException:
            connection.close()
            raise

    @classmethod
    def from_postgres(cls, uri: str) -> SqlSource:
        """Open MLflow's PostgreSQL database (``postgresql://``, also SQLAlchemy's
        ``postgresql+psycopg2://`` spelling) for reading; refuse an unknown revision."""
        dsn = postgres_dsn(uri)
        shown = without_password(dsn)
        try:
            import psycopg
        except ImportError:
            raise InvalidParameterValue(
                f"reading {shown} needs psycopg: pip install 'evstore[postgres]'"
            ) from None
        try:
            connection = psycopg.connect(dsn, connect_timeout=10)
            connection.read_only = True
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        except psycopg.Error as e:
            raise StoreError(f"cannot read the MLflow store {shown}: {_first_line(e)}") from e
        try:
            return cls(connection, shown, dialect=POSTGRES)
        except BaseException:
            connection.close()
            raise

    def _check_revision(self) -> str:
        try:
            rows = self._query(self._sql(SELECT_REVISIONS), ())
            revisions = sorted(str(row[0]) for row in rows)
        except Exception as e:  # the driver's error type varies by database
            raise StoreFormatError(
                f"{self.uri} is not an MLflow tracking database (no alembic_version: {e})"
            ) from e
        if len(revisions) != 1:
            raise StoreFormatError(
                f"{self.uri} has {len(revisions)} alembic revisions {revisions}: expected one"
            )
        revision = revisions[0]
        if revision not in KNOWN_REVISIONS:
            known = ", ".join(
                f"{r} (MLflow {s.mlflow_version})" for r, s in KNOWN_REVISIONS.items()
            )
            raise StoreFormatError(
                f"{self.uri} is at MLflow schema revision {revision!r}, which this importer "
                f"does not know (known: {known}); nothing was read"
            )
        return revision

    def logged_models(self, experiment: Experiment) -> Iterator[LoggedModel]:
        """The experiment's logged models by (creation time, id); none before MLflow 3."""
        if not self.schema.has_logged_model_metrics:
            return
        rows = list(self._query(self._sql(SELECT_LOGGED_MODELS), (int(experiment.experiment_id),)))
        for row in rows:
            model_id, experiment_id, name, location, created, updated, status = row[:7]
            message, model_type, source_run_id, stage = row[7:]
            if status not in LOGGED_MODEL_STATUSES:
                self.skipped.append((f"logged model {model_id}", f"unknown status {status!r}"))
                continue
            yield LoggedModel(
                model_id=model_id,
                experiment_id=str(experiment_id),
                name=name or "",
                artifact_location=location or "",
                creation_time=created or 0,
                last_updated_time=updated,
                status=LOGGED_MODEL_STATUSES[status],
                status_message=message or "",
                model_type=model_type or "",
                source_run_id=source_run_id or None,
                lifecycle_stage=stage or "active",
                tags=self._pairs(SELECT_LOGGED_MODEL_TAGS, model_id),
                params=self._pairs(SELECT_LOGGED_MODEL_PARAMS, model_id),
            )

    def not_imported(self) -> dict[str, int]:
        """Links of a metric point to a second logged model (evstore keeps one per point)."""
        if not self.schema.has_logged_model_metrics:
            return {}
        (extra,) = next(self._query(self._sql(COUNT_EXTRA_MODEL_LINKS), ()))
        return {"metric links to a second logged model": int(extra)} if extra else {}

    def run_links(self, run: Run) -> RunLinks:
        """The run's dataset inputs (by name, digest), model inputs and outputs."""
        datasets = []
        for row in list(self._query(self._sql(SELECT_DATASET_INPUTS), (run.run_id,))):
            input_uuid, dataset_id, name, digest, source_type, source, schema, profile = row
            if name is None:
                self.skipped.append((f"run {run.run_id} dataset input {dataset_id}",
                                     f"MLflow's datasets table has no dataset {dataset_id}"))  # fmt: skip
                continue
            tags = self._pairs(SELECT_INPUT_TAGS, input_uuid)
            datasets.append(DatasetInput(name=name, digest=digest, source_type=source_type,
                                         source=source, schema=schema, profile=profile, tags=tags))  # fmt: skip
        if not self.schema.has_logged_model_metrics:  # MLflow 2: datasets only
            return RunLinks(datasets=datasets)
        inputs = [row[0] for row in self._query(self._sql(SELECT_MODEL_INPUTS), (run.run_id,))]
        outputs = [ModelOutput(model_id=m, step=int(step or 0))
                   for m, step in self._query(self._sql(SELECT_MODEL_OUTPUTS), (run.run_id,))]  # fmt: skip
        return RunLinks(datasets=datasets, model_inputs=inputs, outputs=outputs)

    def registered_models(self) -> Iterator[RegisteredModel]:
        """Every registered model by (workspace, name), with its versions, tags, aliases."""
        workspaces = self.schema.has_workspaces
        slots = {"workspace": "workspace" if workspaces else "NULL",
                 "workspace_order": "workspace, " if workspaces else ""}  # fmt: skip
        owner = {"in_workspace": " AND workspace = ?" if workspaces else ""}
        rows = list(self._query(self._sql(SELECT_REGISTERED_MODELS, **slots), ()))
        for name, created, updated, description, workspace in rows:
            key: tuple[Any, ...] = (name, workspace) if workspaces else (name,)
            tags = {k: "" if v is None else v
                    for k, v in self._query(self._sql(SELECT_REGISTERED_MODEL_TAGS, **owner), key)}  # fmt: skip
            version_tags: dict[int, dict[str, str]] = {}
            for version, tag, value in self._query(self._sql(SELECT_MODEL_VERSION_TAGS, **owner), key):
                version_tags.setdefault(int(version), {})[tag] = "" if value is None else value
            versions = [
                ModelVersion(
                    version=int(row[0]), creation_time=row[1], last_updated_time=row[2],
                    description=row[3] or "", user_id=row[4] or "", current_stage=row[5] or "None",
                    source=row[6] or "", run_id=row[7] or None, run_link=row[8] or "",
                    model_id=model_id_of(row[6] or ""), status=row[9] or "READY",
                    tags=version_tags.get(int(row[0]), {}),
                )
                for row in list(self._query(self._sql(SELECT_MODEL_VERSIONS, **owner), key))
            ]  # fmt: skip
            aliases = {alias: int(version)
                       for alias, version in self._query(self._sql(SELECT_ALIASES, **owner), key)}  # fmt: skip
            yield RegisteredModel(name=name, creation_time=created, last_updated_time=updated,
                                  description=description or "", tags=tags, aliases=aliases,
                                  versions=versions, workspace=workspace)  # fmt: skip

    def close(self) -> None:
        """Close the database connection."""
        self._connection.close()

    def _relative_base(self) -> str:
        return self._base

    def _sql(self, text: str, **slots: str) -> str:
        """A statement in this database's spelling."""
        sql = text.format(key=self._dialect.key_column, **slots)
        return sql.replace("?", self._dialect.placeholder)

    def _chunks(
        self, sql: str, params: tuple[Any, ...], size: int = _FETCH_SIZE
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of a statement (already spelled), in lists; the cursor closes when done."""
        if self._dialect.server_cursors:  # streamed from the server, ``size`` rows a trip
            self._cursors += 1
            cursor = self._connection.cursor(name=f"evstore_import_{self._cursors}")
            cursor.itersize = size
        else:
            cursor = self._connection.cursor()
        try:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            cursor.close()

    def _query(self, sql: str, params: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        """Rows of a statement (already spelled), one by one."""
        for rows in self._chunks(sql, params):
            yield from rows

    def _pairs(self, sql: str, owner: Any) -> dict[str, str]:
        rows = self._query(self._sql(sql), (owner,))
        return {key: "" if value is None else value for key, value in rows}

    def experiments(self) -> Iterator[Experiment]:
        """Every experiment, active and deleted, by numeric id."""
        workspace = "workspace" if self.schema.has_workspaces else "NULL"
        for row in self._query(self._sql(SELECT_EXPERIMENTS, workspace=workspace), ()):
            experiment_id, name, location, stage, created, updated, workspace = row
            yield Experiment(
                experiment_id=str(experiment_id),
                name=name,
                artifact_location=location or "",
                lifecycle_stage=stage or "active",
                creation_time=created,
                last_update_time=updated,
                tags=self._pairs(SELECT_EXPERIMENT_TAGS, experiment_id),
                workspace=workspace,
            )

    def runs(self, experiment: Experiment) -> Iterator[Run]:
        """The experiment's runs by (start_time, run_id), with their tags and params."""
        experiment_key = int(experiment.experiment_id)
        for row in self._query(self._sql(SELECT_RUNS), (experiment_key,)):
            run_id, experiment_id, name, user, status, start, end, stage, uri, deleted = row
            tags = self._pairs(SELECT_RUN_TAGS, run_id)
            yield Run(
                run_id=run_id,
                experiment_id=str(experiment_id),
                run_name=name or tags.get("mlflow.runName", ""),
                user_id=user or "",
                status=status or "RUNNING",
                start_time=start,
                end_time=end,
                lifecycle_stage=stage or "active",
                artifact_uri=uri or "",
                deleted_time=deleted,
                tags=tags,
                params=self._pairs(SELECT_RUN_PARAMS, run_id),
            )

    def metric_points(self, run: Run) -> Iterator[MetricPoint]:
        """The run's metric history ordered by (timestamp, step, key, value)."""
        for batch in self.metric_batches(run):
            yield from batch

    def metric_batches(
        self, run: Run, batch_size: int = 10_000
    ) -> Generator[list[MetricPoint], None, None]:
        """The run's metric history in lists of at most ``batch_size`` points, in order."""
        if batch_size < 1:
            raise InvalidParameterValue(f"batch_size must be positive, not {batch_size}")
        context = self._model_metric_context(run.run_id)
        for rows in self._chunks(self._sql(SELECT_METRICS), (run.run_id,), batch_size):
            if context:
                yield [_point_in_context(row, context) for row in rows]
                continue
            try:  # the fast path: msgspec builds the points from the rows in C
                yield msgspec.convert(rows, _POINTS)
            except msgspec.ValidationError:  # a NaN (NULL) in this batch
                yield [MetricPoint(k, _NAN if v is None else v, s, t) for k, v, s, t in rows]

    def _model_metric_context(self, run_id: str) -> _Context:
        """(key, timestamp, step, stored value) -> (model_id, dataset_name, dataset_digest)."""
        if not self.schema.has_logged_model_metrics:
            return {}
        if self._model_metric_runs is None:  # one scan per source, usually of an empty table
            sql = self._sql(SELECT_RUNS_WITH_MODEL_METRICS)
            self._model_metric_runs = {row[0] for row in self._query(sql, ())}
        if run_id not in self._model_metric_runs:
            return {}
        context = {}
        # MLflow stores a model metric's NaN as 0 there too, so the stored values match.
        # Ordered by model_id descending so that, if two models share a point, the
        # smallest model_id is the one kept.
        rows = self._query(self._sql(SELECT_MODEL_METRIC_CONTEXT), (run_id,))
        for key, timestamp, step, value, model_id, name, digest in rows:
            stored = 0.0 if value is None or math.isnan(value) else value
            context[(key, timestamp, step, stored)] = (model_id, name, digest)
        return context


def _point_in_context(row: tuple[Any, ...], context: _Context) -> MetricPoint:
    key, value, step, timestamp = row
    found = context.get((key, timestamp, step, 0.0 if value is None else value))
    return MetricPoint(key, _NAN if value is None else value, step, timestamp, *(found or ()))


def postgres_dsn(uri: str) -> str:
    """A libpq URI from MLflow's spellings: ``postgres://``, ``postgresql://`` and
    SQLAlchemy's ``postgresql+driver://``."""
    scheme, _, rest = uri.partition("://")
    if scheme.split("+", 1)[0].lower() not in ("postgres", "postgresql") or not rest:
        raise InvalidParameterValue(f"not a PostgreSQL URI: {without_password(uri)!r}")
    return "postgresql://" + rest


def without_password(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, for messages and records."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _file_uri(path: str) -> str:
    """An SQLite ``file:`` URI for an absolute path, with URI-special characters escaped."""
    from urllib.parse import quote

    return "file:" + quote(path)
