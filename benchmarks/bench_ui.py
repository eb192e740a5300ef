"""The web UI at scale, in headless Chromium: MLflow's UI pain points as issue 17's figures.

Writes the stores with the public Client, serves them with ``evstore server``, and opens
the pages with Playwright driving Debian's Chromium (``apt-get install chromium``). Each
figure is a ratio against the same page on a small case, measured in the same run: the
size of the data must not show. Times are from navigation to the page's data drawn
(the runs table, or every chart in view with ``data-drawn``), the median of ``--rounds``
page loads after one cold load (which also fills the server's series cache; it is
printed too).

- a run with 10 metrics of 100k points each vs 10 points each: charts drawn (<= 1.5x);
- a run with 1,000 metric keys vs 10: the page open, the charts in view drawn (<= 2x);
- compare of 200 runs x 5 metrics vs 2 runs: every chart drawn (<= 2x);
- an experiment of 10,000 runs and 5,000 param and metric keys vs 100 runs: the runs
  table's first page shown (<= 2x);
- a chart of 300 points shows 300; a series of 1M points downsampled to 2,000 keeps the
  minimum and maximum of every bucket (checked against the points written);
- the series endpoint, 1M points to 2,000, against sending all of them (MLflow's
  ``metrics/get-history`` on the same server): >= 10x faster, cold and warm.

    python benchmarks/bench_ui.py               # the issue's sizes (a few minutes)
    python benchmarks/bench_ui.py --scale 0.1   # everything 10x smaller
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx

from evstore import Client
from evstore.entities import Metric, Param

CHROMIUM = "/usr/bin/chromium"
EVSTORE = os.path.join(os.path.dirname(sys.executable), "evstore")
T0 = 1_700_000_000_000
BATCH = 1000


def log_points(client: Client, run_id: str, keys: list[str], points: int, spike: bool = False) -> None:
    """``points`` points of each key: a noisy decay, with a spike and a dip when asked."""
    batch: list[Metric] = []
    for key_index, key in enumerate(keys):
        for step in range(points):
            value = math.exp(-step / (points / 3 + 1)) + 0.01 * math.sin(step + key_index)
            if spike and step == points // 3:
                value = 25.0
            if spike and step == 2 * points // 3:
                value = -25.0
            batch.append(Metric(key, value, T0 + step, step))
            if len(batch) == BATCH:
                client.log_batch(run_id, metrics=batch)
                batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)


def build(directory: str, scale: float) -> dict[str, Any]:
    """Write every case's runs; the ids and sizes the measurements need."""
    client = Client(os.path.join(directory, "ui.db"))
    ids: dict[str, Any] = {}

    def n(count: int) -> int:
        return max(1, int(count * scale))

    experiment = client.create_experiment("charts")
    for name, points in (("small", 10), ("big", n(100_000))):
        run = client.create_run(experiment, run_name=f"{name}-history").info.run_id
        log_points(client, run, [f"metric_{i}" for i in range(10)], points)
        ids[name] = run
    for name, keys in (("keys10", 10), ("keys1000", n(1000))):
        run = client.create_run(experiment, run_name=f"{keys}-keys").info.run_id
        log_points(client, run, [f"m{i:04d}" for i in range(keys)], 50)
        ids[name] = run
    ids["three_hundred"] = client.create_run(experiment, run_name="300-points").info.run_id
    log_points(client, ids["three_hundred"], ["loss"], 300)
    ids["million"] = client.create_run(experiment, run_name="1M-points").info.run_id
    log_points(client, ids["million"], ["loss"], n(1_000_000), spike=True)
    ids["million_points"] = n(1_000_000)
    compare = client.create_experiment("compare")
    ids["compared"] = []
    for i in range(n(200)):
        run = client.create_run(compare, run_name=f"trial-{i:03d}").info.run_id
        log_points(client, run, [f"metric_{k}" for k in range(5)], 100)
        ids["compared"].append(run)
    rng = random.Random(17)
    for name, runs, key_space in (("runs100", 100, 50), ("runs10000", n(10_000), n(2500))):
        experiment_id = client.create_experiment(name)
        for i in range(runs):
            run = client.create_run(experiment_id, run_name=f"r{i}", start_time=T0 + i).info.run_id
            params = [Param(f"p{k:04d}", str(rng.random())) for k in rng.sample(range(key_space), 10)]
            metrics = [Metric(f"m{k:04d}", rng.random(), T0, 0) for k in rng.sample(range(key_space), 10)]
            client.log_batch(run, metrics=metrics, params=params)
        ids[name] = experiment_id
    client.close()
    return ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``evstore server`` on the benchmark's store."""

    def __init__(self, directory: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [EVSTORE, "server", "--store", os.path.join(directory, "ui.db"), "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise SystemExit("evstore server did not start within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# Every chart card whose top is inside the viewport has drawn (or the page has none).
CHARTS_IN_VIEW_DRAWN = """() => {
  if (!document.querySelector('main[data-ready]')) return false;
  const cards = [...document.querySelectorAll('figure.chart')]
    .filter(c => c.getBoundingClientRect().top < window.innerHeight);
  return cards.every(c => c.dataset.drawn === 'true');
}"""
ALL_CHARTS_DRAWN = """(n) => document.querySelectorAll('figure.chart[data-drawn=true]').length === n"""
TABLE_SHOWN = """() => !!document.querySelector('main[data-ready] #runs tbody tr')"""


def page_time(browser: Any, url: str, done: str, arg: Any = None, height: int = 1000) -> float:
    """Seconds from navigation to ``done`` being true, in a fresh browser context."""
    context = browser.new_context(viewport={"width": 1400, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_function(done, arg=arg, timeout=300_000, polling=10)
    elapsed = time.perf_counter() - started
    context.close()
    if errors:
        raise SystemExit(f"{url}: page error {errors[0]}")
    return elapsed


def measured(load: Callable[[], float], rounds: int) -> tuple[float, float]:
    """(cold, median of ``rounds`` warm) seconds."""
    cold = load()
    return cold, statistics.median(load() for _ in range(rounds))


def check_extremes(server: Server, ids: dict[str, Any]) -> tuple[bool, int]:
    """Whether a 2,000-point answer for the 1M series holds every bucket's min and max."""
    answer = httpx.get(server.url + "/ui/api/series", timeout=300,
                       params={"runs": ids["million"], "key": "loss", "points": 2000}).json()  # fmt: skip
    (series,) = answer["series"]
    kept = set(zip(series["x"], series["y"], strict=True))
    total = ids["million_points"]
    values = []
    for step in range(total):  # the values as log_points wrote them
        value = math.exp(-step / (total / 3 + 1)) + 0.01 * math.sin(step)
        value = 25.0 if step == total // 3 else -25.0 if step == 2 * total // 3 else value
        values.append(value)
    buckets = 2000 // 4
    width = (total - 1) / buckets
    ok = True
    for b in range(buckets):
        lo = math.ceil(b * width)
        hi = total if b == buckets - 1 else math.ceil((b + 1) * width)
        chunk = values[lo:hi]
        low, high = min(chunk), max(chunk)
        ok &= (lo + chunk.index(low), low) in kept and (lo + chunk.index(high), high) in kept
    return ok, len(series["x"])


def series_times(server: Server, ids: dict[str, Any], rounds: int) -> dict[str, float]:
    """The series endpoint (2,000 points) cold and warm, and all points via get-history.

    Both through one HTTP client made beforehand: a client per request costs ~40 ms of
    its own (httpx loads its TLS certificates), which is not the server's time.
    """
    client = httpx.Client(timeout=600)

    def downsampled() -> float:
        started = time.perf_counter()
        client.get(server.url + "/ui/api/series",
                   params={"runs": ids["million"], "key": "loss", "points": 2000}).json()  # fmt: skip
        return time.perf_counter() - started

    def everything() -> float:
        started = time.perf_counter()
        client.get(server.url + "/api/2.0/mlflow/metrics/get-history",
                   params={"run_id": ids["million"], "metric_key": "loss"}).json()  # fmt: skip
        return time.perf_counter() - started

    with client:
        client.get(server.url + "/health")  # the connection, opened before the clock starts
        cold = downsampled()
        warm = statistics.median(downsampled() for _ in range(rounds))
        full = statistics.median(everything() for _ in range(max(1, rounds // 2)))
    return {"cold": cold, "warm": warm, "full": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    parser.add_argument("--rounds", type=int, default=3, help="warm page loads per case (median)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise SystemExit("no Chromium at /usr/bin/chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as directory:
        started = time.perf_counter()
        ids = build(directory, args.scale)
        print(f"stores written in {time.perf_counter() - started:.1f} s (scale {args.scale})")
        server = Server(directory)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                rows = measure_pages(browser, server, ids, args.rounds)
                browser.close()
        finally:
            server.stop()
        server = Server(directory)  # a fresh process: the first series read is a cold one
        try:
            series = series_times(server, ids, args.rounds)
            ok, kept = check_extremes(server, ids)
        finally:
            server.stop()
    print_table(rows, args.scale)
    print(f"\n300-point chart shows {rows[-1][1]:.0f} of 300 points (target: all 300)")
    print(f"1M points -> {kept} points: every bucket's min and max kept: {'yes' if ok else 'NO'}")
    print("\nseries endpoint, 1M points of one metric:")
    print(f"  downsampled to 2,000, cold (first read): {series['cold'] * 1000:8.1f} ms")
    print(f"  downsampled to 2,000, warm (cached):     {series['warm'] * 1000:8.1f} ms")
    print(f"  all points (metrics/get-history):        {series['full'] * 1000:8.1f} ms")
    print(f"  all / downsampled: cold {series['full'] / series['cold']:.1f}x,"
          f" warm {series['full'] / series['warm']:.1f}x (target >= 10x)")  # fmt: skip


def measure_pages(browser: Any, server: Server, ids: dict[str, Any], rounds: int) -> list[tuple[Any, ...]]:
    """(figure, small cold, small warm, large cold, large warm, target) per page case."""
    url = server.url
    tall = 2800  # every chart of a 10-metric run in view
    rows: list[tuple[Any, ...]] = []

    def case(label: str, small: str, large: str, done: str, arg: Any, target: float,
             height: int = 1000) -> None:  # fmt: skip
        s = measured(lambda: page_time(browser, url + small, done, arg, height), rounds)
        b = measured(lambda: page_time(browser, url + large, done, arg, height), rounds)
        rows.append((label, *s, *b, target))

    case("run page, 10 metrics: 100k vs 10 points each", f"/runs/{ids['small']}",
         f"/runs/{ids['big']}", ALL_CHARTS_DRAWN, 10, 1.5, tall)  # fmt: skip
    case("run page: 1,000 vs 10 metric keys", f"/runs/{ids['keys10']}",
         f"/runs/{ids['keys1000']}", CHARTS_IN_VIEW_DRAWN, None, 2.0)  # fmt: skip
    compared = ids["compared"]
    case(f"compare, 5 metrics: {len(compared)} vs 2 runs", f"/compare?runs={','.join(compared[:2])}",
         f"/compare?runs={','.join(compared)}", ALL_CHARTS_DRAWN, 5, 2.0, tall)  # fmt: skip
    case("runs table first page: 10,000 vs 100 runs", f"/experiments/{ids['runs100']}",
         f"/experiments/{ids['runs10000']}", TABLE_SHOWN, None, 2.0)  # fmt: skip
    context = browser.new_context(viewport={"width": 1400, "height": tall})
    page = context.new_page()
    page.goto(f"{url}/runs/{ids['three_hundred']}")
    page.wait_for_function(ALL_CHARTS_DRAWN, arg=1, timeout=60_000)
    rows.append(("300", float(page.get_attribute("figure.chart", "data-points") or 0)))
    context.close()
    return rows


def print_table(rows: list[tuple[Any, ...]], scale: float) -> None:
    print(f"\n{'page (headless Chromium)':46} {'small ms':>16} {'large ms':>16} {'ratio':>7} {'target':>7}")
    print(f"{'':46} {'cold / warm':>16} {'cold / warm':>16} {'warm':>7}")
    for row in rows:
        if len(row) != 6:
            continue
        label, s_cold, s_warm, b_cold, b_warm, target = row
        ratio = b_warm / s_warm
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{label:46} {s_cold * 1000:7.0f} /{s_warm * 1000:7.0f} {b_cold * 1000:7.0f} /{b_warm * 1000:7.0f}"
              f" {ratio:6.2f}x {'<=' + str(target) + 'x':>7} {verdict}  (cold {b_cold / s_cold:.2f}x)")  # fmt: skip
    if scale != 1.0:
        print(f"(scale {scale}: the issue's sizes are scale 1)")


if __name__ == "__main__":
    main()
