"""System metrics as MLflow logs them: CPU, memory, disk and network sampled on a
background thread every 10 s (MLflow's default) and logged as ``system/*`` metrics at
steps 0, 1, 2, ... until the run ends. psutil is imported only when sampling starts.

``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` (what enable/disable_system_metrics_logging
set) turns it on for every run; ``start_run(log_system_metrics=...)`` decides per run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from evstore import codec
from evstore.entities import Metric
from evstore.errors import EvstoreError, InvalidParameterValue, InvalidState

PREFIX = "system/"
DEFAULT_SAMPLING_INTERVAL = 10.0
DEFAULT_SAMPLES_BEFORE_LOGGING = 1
_ENABLE = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
_INTERVAL = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
_SAMPLES = "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING"


def enable_system_metrics_logging() -> None:
    """Log system metrics for every run started from now on (unless it opts out)."""
    os.environ[_ENABLE] = "true"


def disable_system_metrics_logging() -> None:
    """Stop logging system metrics for runs that do not ask for them."""
    os.environ[_ENABLE] = "false"


def set_system_metrics_sampling_interval(interval: float | None) -> None:
    """Seconds between samples (None: MLflow's default, 10)."""
    if interval is None:
        os.environ.pop(_INTERVAL, None)
    else:
        os.environ[_INTERVAL] = str(_positive("sampling interval", interval))


def set_system_metrics_samples_before_logging(samples: int | None) -> None:
    """Samples averaged into each logged value (None: MLflow's default, 1)."""
    if samples is None:
        os.environ.pop(_SAMPLES, None)
    else:
        os.environ[_SAMPLES] = str(int(_positive("samples before logging", samples)))


def wanted(log_system_metrics: bool | None) -> bool:
    """Whether a run samples system metrics: its own choice, else the environment's."""
    if log_system_metrics is not None:
        return bool(log_system_metrics)
    return os.environ.get(_ENABLE, "false").strip().lower() in ("true", "1")


def check_available() -> None:
    """Refuse, with the install command, when psutil (which samples the figures) is missing."""
    import importlib.util

    if importlib.util.find_spec("psutil") is None:
        raise InvalidState(
            "System metrics need psutil: pip install 'evstore[system-metrics]'"
            " (or start_run(log_system_metrics=False))"
        )


def _positive(what: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if not number > 0:
        raise InvalidParameterValue(f"The system metrics {what} must be a positive number, not {value!r}")
    return number


class Sampler:
    """Reads CPU, memory, disk and network figures with MLflow's metric names and units."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        network = psutil.net_io_counters()
        self._initial_receive = network.bytes_recv / 1e6
        self._initial_transmit = network.bytes_sent / 1e6
        psutil.cpu_percent()  # the first call starts the measuring interval
        self._samples: dict[str, list[float]] = {}
        self._network: dict[str, float] = {}

    def sample(self) -> None:
        """Take one sample of every figure."""
        psutil = self._psutil
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(os.sep)
        for name, value in (
            ("cpu_utilization_percentage", psutil.cpu_percent()),
            ("system_memory_usage_megabytes", memory.used / 1e6),
            ("system_memory_usage_percentage", memory.used / memory.total * 100),
            ("disk_usage_percentage", disk.percent),
            ("disk_usage_megabytes", disk.used / 1e6),
            ("disk_available_megabytes", disk.free / 1e6),
        ):
            self._samples.setdefault(name, []).append(value)
        network = psutil.net_io_counters()
        self._network = {  # counted from when sampling began, not averaged (as MLflow)
            "network_receive_megabytes": network.bytes_recv / 1e6 - self._initial_receive,
            "network_transmit_megabytes": network.bytes_sent / 1e6 - self._initial_transmit,
        }

    def aggregate(self) -> dict[str, float]:
        """The samples since the last call: averages rounded to 0.1, network as is."""
        values = {k: round(sum(v) / len(v), 1) for k, v in self._samples.items() if v}
        values.update(self._network)
        self._samples.clear()
        return values


class SystemMetricsMonitor:
    """Samples on a daemon thread and logs ``system/<name>`` metrics to one run."""

    def __init__(self, client: Any, run_id: str, *, resume: bool = False,
                 interval: float | None = None, samples_before_logging: int | None = None) -> None:  # fmt: skip
        self._client = client
        self._run_id = run_id
        self.interval = interval or float(os.environ.get(_INTERVAL) or DEFAULT_SAMPLING_INTERVAL)
        self.samples_before_logging = samples_before_logging or int(
            os.environ.get(_SAMPLES) or DEFAULT_SAMPLES_BEFORE_LOGGING
        )
        self.step = self._next_step() if resume else 0
        self._sampler: Sampler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _next_step(self) -> int:
        """The step after the run's last system metric, so a resumed run continues."""
        with contextlib.suppress(EvstoreError):
            history = self._client.get_metric_history(self._run_id, PREFIX + "cpu_utilization_percentage")
            return max((m.step for m in history), default=-1) + 1
        return 0

    def start(self) -> None:
        """Start sampling on a daemon thread."""
        self._sampler = Sampler()
        self._thread = threading.Thread(target=self._loop, name="evstore-system-metrics", daemon=True)
        self._thread.start()

    def log_once(self) -> dict[str, float]:
        """Take ``samples_before_logging`` samples (no waiting) and log them at the next step."""
        if self._sampler is None:
            self._sampler = Sampler()
        for _ in range(self.samples_before_logging):
            self._sampler.sample()
        return self._publish()

    def _publish(self) -> dict[str, float]:
        assert self._sampler is not None
        values = {PREFIX + k: v for k, v in self._sampler.aggregate().items()}
        now = codec.now_ms()
        self._client.log_batch(self._run_id, metrics=[Metric(k, v, now, self.step) for k, v in values.items()])
        self.step += 1
        return values

    def _loop(self) -> None:
        assert self._sampler is not None
        while not self._stop.is_set():
            for _ in range(self.samples_before_logging):
                self._sampler.sample()
                if self._stop.wait(self.interval):
                    return  # the run ended mid-interval: that sample is dropped, as MLflow
            try:
                self._publish()
            except EvstoreError:
                return  # the run is gone (deleted, or its store closed): stop quietly

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def finish(self) -> None:
        """Stop sampling and wait for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
