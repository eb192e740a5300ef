"""MlflowClient's object-logging methods (text, dicts, figures, images, tables) for
``Client``, built on its public methods, so both transports serve them: ``record_artifact_bytes``,
``read_artifact``, ``list_artifacts``, ``get_run`` and ``set_tag``.

Files are laid out as MLflow lays them out, so MLflow's UI and client read them back:
tables are JSON in pandas' "split" orientation listed in the ``mlflow.loggedArtifacts``
tag; ``log_image(key=...)`` writes ``images/<key>+step+<n>+timestamp+<ms>+<uuid>.png``
with a ``+compressed.webp`` beside it and sets ``mlflow.loggedImages``. numpy, pandas,
Pillow, matplotlib and plotly are imported only by the method that needs them.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import sys
import tempfile
import uuid
import warnings
from typing import Any

from evstore import codec
from evstore.artifacts import logical_path
from evstore.entities import Run
from evstore.errors import InvalidParameterValue
from evstore.validation import check_text, shown

PARENT_RUN_TAG = "mlflow.parentRunId"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
LOGGED_IMAGES_TAG = "mlflow.loggedImages"
COMPRESSED_IMAGE_SIZE = 256  # MLflow's longest side of an image's compressed copy
_IMAGE_KEY = re.compile(r"^[a-zA-Z0-9_\-./ ]+$")


class ArtifactLogging:
    """MlflowClient's ``get_parent_run`` and ``log_text/dict/figure/image/table``."""

    record_artifact_bytes: Any
    read_artifact: Any
    list_artifacts: Any
    get_run: Any
    set_tag: Any

    def get_parent_run(self, run_id: str) -> Run | None:
        """The run named by a run's ``mlflow.parentRunId`` tag, or None."""
        parent_id = self.get_run(run_id).data.tags.get(PARENT_RUN_TAG)
        return None if parent_id is None else self.get_run(parent_id)

    def _store_bytes(self, run_id: str, artifact_file: str, data: bytes) -> None:
        self.record_artifact_bytes(run_id, _artifact_file(artifact_file), io.BytesIO(data))

    def _store_written(self, run_id: str, artifact_file: str, write: Any) -> None:
        """Call ``write(path)`` on a temporary file named as the artifact, then store it."""
        logical = _artifact_file(artifact_file)
        with tempfile.TemporaryDirectory(prefix="evstore-log-") as folder:
            path = os.path.join(folder, posixpath.basename(logical))
            write(path)
            with open(path, "rb") as source:
                self.record_artifact_bytes(run_id, logical, source)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Store a string as a UTF-8 artifact file."""
        self._store_bytes(run_id, artifact_file, check_text("text", text).encode("utf-8"))

    def log_dict(self, run_id: str, dictionary: dict[str, Any], artifact_file: str) -> None:
        """Store a dict as JSON (or YAML for ``.yml``/``.yaml``), as MLflow writes it."""
        self.log_text(run_id, dict_text(dictionary, artifact_file), artifact_file)

    def log_figure(
        self, run_id: str, figure: Any, artifact_file: str, *, save_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Store a matplotlib or plotly figure; the file's extension picks the format."""
        kwargs = dict(save_kwargs or {})
        extension = posixpath.splitext(artifact_file)[1]
        if "matplotlib" in sys.modules and _is_matplotlib_figure(figure):
            self._store_written(run_id, artifact_file, lambda p: figure.savefig(p, **kwargs))
        elif "plotly" in sys.modules and _is_plotly_figure(figure):
            if extension == ".html":
                kwargs.setdefault("include_plotlyjs", "cdn")
                kwargs.setdefault("auto_open", False)
                self._store_written(run_id, artifact_file, lambda p: figure.write_html(p, **kwargs))
            elif extension in (".png", ".jpeg", ".webp", ".svg", ".pdf"):
                self._store_written(run_id, artifact_file, lambda p: figure.write_image(p, **kwargs))
            else:
                raise InvalidParameterValue(f"Unsupported file extension for plotly figure: {extension!r}")
        else:
            raise InvalidParameterValue(f"Unsupported figure object type: {type(figure)!r}")

    def log_image(
        self,
        run_id: str,
        image: Any,
        artifact_file: str | None = None,
        key: str | None = None,
        step: int | None = None,
        timestamp: int | None = None,
        synchronous: bool | None = None,
    ) -> None:
        """Store a numpy array or PIL image: as ``artifact_file``, or as a step of ``key``."""
        if artifact_file is not None and any(a is not None for a in (key, step, timestamp)):
            raise InvalidParameterValue(
                "The `artifact_file` parameter cannot be used in conjunction with `key`, `step`,"
                " or `timestamp` parameters."
            )
        if artifact_file is None and key is None:
            raise InvalidParameterValue(
                "Invalid arguments: Please specify exactly one of `artifact_file` or `key`."
            )
        picture = to_pil_image(image)
        if artifact_file is not None:
            self._store_written(run_id, artifact_file, picture.save)
            return
        assert key is not None
        if not isinstance(key, str) or not _IMAGE_KEY.match(key):
            raise InvalidParameterValue(
                "The `key` parameter may only contain alphanumerics, underscores (_), dashes (-),"
                f" periods (.), spaces ( ), and slashes (/). The provided key {shown(key)} does not."
            )
        stem = (
            f"images/{key.replace('/', '~')}+step+{step or 0}"
            f"+timestamp+{timestamp or codec.now_ms()}+{uuid.uuid4()}"
        )
        self._store_written(run_id, f"{stem}.png", picture.save)
        self._store_written(run_id, f"{stem}+compressed.webp", compress_image(picture).save)
        self.set_tag(run_id, LOGGED_IMAGES_TAG, True)

    def log_table(self, run_id: str, data: Any, artifact_file: str) -> None:
        """Store a dict or DataFrame as MLflow does (``split`` JSON, or parquet), appending
        to a table already at ``artifact_file``, and list it in ``mlflow.loggedArtifacts``."""
        import pandas as pd

        logical = _artifact_file(artifact_file)
        if not logical.endswith((".json", ".parquet")):
            raise InvalidParameterValue(
                f"Invalid artifact file path {artifact_file!r}: a table's file name must end"
                " in '.json' or '.parquet'."
            )
        if not isinstance(data, (pd.DataFrame, dict)):
            raise InvalidParameterValue("data must be a pandas.DataFrame or a dictionary")
        if isinstance(data, dict):
            try:
                data = pd.DataFrame(data)
            except ValueError:  # all scalars: one row, as MLflow
                data = pd.DataFrame([data])
        folder = posixpath.dirname(logical) or None
        if logical in {f.path for f in self.list_artifacts(run_id, folder)}:
            data = pd.concat([read_table(self.read_artifact(run_id, logical), logical), data],
                             ignore_index=True)  # fmt: skip

        def write(path: str) -> None:
            try:
                if logical.endswith(".json"):
                    data.to_json(path, orient="split", index=False, date_format="iso")
                else:
                    data.to_parquet(path, index=False)
            except (TypeError, ValueError, OverflowError) as e:
                raise InvalidParameterValue(f"Cannot store the table: {e}") from None

        self._store_written(run_id, logical, write)
        listed = json.loads(self.get_run(run_id).data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
        entry = {"path": artifact_file, "type": "table"}
        if entry not in listed:
            listed.append(entry)
            self.set_tag(run_id, LOGGED_ARTIFACTS_TAG, json.dumps(listed))


def dict_text(dictionary: Any, artifact_file: str) -> str:
    """A dict as MLflow's log_dict writes it: YAML for .yml/.yaml, else indented JSON."""
    if posixpath.splitext(check_text("artifact file", artifact_file))[1] in (".yml", ".yaml"):
        try:
            import yaml
        except ImportError:
            raise InvalidParameterValue("log_dict to a .yaml file needs PyYAML") from None
        try:
            return str(yaml.dump(dictionary, indent=2, default_flow_style=False))
        except yaml.YAMLError as e:
            raise InvalidParameterValue(f"Cannot store the dict as YAML: {e}") from None
    try:
        return json.dumps(dictionary, indent=2, default=str)
    except (TypeError, ValueError) as e:
        raise InvalidParameterValue(f"Cannot store the dict as JSON: {e}") from None


def artifact_file_path(artifact_file: Any) -> str:
    """MLflow's run-relative file path (normalized), refusing absolute paths and '..'."""
    return _artifact_file(artifact_file)


def _artifact_file(artifact_file: Any) -> str:
    """MLflow's run-relative file path (normalized), refusing absolute paths and '..'."""
    return logical_path(posixpath.normpath(check_text("artifact file", artifact_file)))


def _is_matplotlib_figure(figure: Any) -> bool:
    import matplotlib.figure

    return isinstance(figure, matplotlib.figure.Figure)


def _is_plotly_figure(figure: Any) -> bool:
    import plotly.graph_objects

    return isinstance(figure, plotly.graph_objects.Figure)


def to_pil_image(image: Any) -> Any:
    """A PIL image from a PIL image or a numpy array, with MLflow's pixel rules."""
    if type(image).__module__.startswith("PIL."):
        return image
    if type(image).__module__ == "numpy" and type(image).__name__ == "ndarray":
        return _array_to_pil(image)
    if hasattr(image, "to_pil"):  # mlflow.Image
        return image.to_pil()
    raise InvalidParameterValue(
        f"Unsupported image object type: {type(image)!r}. `image` must be one of numpy.ndarray,"
        " PIL.Image.Image, and mlflow.Image."
    )


def _array_to_pil(array: Any) -> Any:
    import numpy as np
    from PIL import Image

    if array.dtype.kind not in "biuf":
        raise InvalidParameterValue(
            f"Invalid array data type: '{array.dtype}'. Must be one of ['bool', 'signed integer',"
            " 'unsigned integer', 'floating']"
        )
    if array.ndim not in (2, 3):
        raise InvalidParameterValue(f"`image` must be a 2D or 3D array but got image shape: {array.shape}")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        raise InvalidParameterValue(f"Invalid channel length: {array.shape[2]}. Must be one of [1, 3, 4]")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    is_int = np.issubdtype(array.dtype, np.integer)
    high = 255 if is_int else 1
    if array.size and (array.min() < 0 or array.max() > high):
        if is_int:
            raise InvalidParameterValue(
                "Integer pixel values out of acceptable range [0, 255]. Found minimum value"
                f" {array.min()} and maximum value {array.max()}."
            )
        warnings.warn(
            "Float pixel values out of acceptable range [0.0, 1.0]. Found minimum value"
            f" {array.min()} and maximum value {array.max()}. Rescaling values to [0.0, 1.0]"
            " with min/max scaler.",
            stacklevel=4,
        )
        array = (array - array.min()) / (array.max() - array.min())
    if not is_int:
        array = array * 255
    return Image.fromarray(array.astype(np.uint8))


def compress_image(image: Any, max_size: int = COMPRESSED_IMAGE_SIZE) -> Any:
    """The image scaled so its longer side is ``max_size``, keeping its aspect ratio."""
    width, height = image.size
    if width > height:
        return image.resize((max_size, int(height * (max_size / width))))
    return image.resize((int(width * (max_size / height)), max_size))


def read_table(data: bytes, artifact_file: str) -> Any:
    """A table stored by ``log_table``, as a DataFrame."""
    import pandas as pd

    if artifact_file.endswith(".json"):
        return pd.read_json(io.StringIO(data.decode("utf-8")), orient="split")
    return pd.read_parquet(io.BytesIO(data))
