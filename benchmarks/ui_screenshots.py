"""Screenshots of the web UI's main pages for the README (docs/ui/*.png).

Seeds a store as the browser tests do (tests/ui_seed.py: a sweep with nested runs, a
deleted run, an edited run, an MLflow import), serves it with ``evstore server`` and
takes each page with Playwright driving Debian's Chromium.

    python benchmarks/ui_screenshots.py            # writes docs/ui/*.png
    python benchmarks/ui_screenshots.py --out /tmp/shots
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import ServerProcess  # tests/ is put on the path just above
from ui_seed import seed_in_child

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "ui"), help="folder for the PNGs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-shots-") as directory:
        seeded = seed_in_child(Path(directory))
        server = ServerProcess(Path(directory))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 700}, device_scale_factor=1)
                shots = {
                    "runs-table.png": f"/experiments/{seeded['experiment_id']}?cols=params.lr,"
                    "params.optimizer,metrics.loss,metrics.accuracy,tags.team",
                    "run-page.png": f"/runs/{seeded['children'][1]}",
                    "audit-trail.png": f"/runs/{seeded['edited']}/history",
                }
                for name, path in shots.items():
                    page.goto(server.url + path)
                    page.wait_for_selector("main[data-ready]")
                    if page.locator("#charts").count():  # charts draw as they come into view
                        page.locator("#charts").scroll_into_view_if_needed()
                    page.wait_for_function(
                        "() => [...document.querySelectorAll('figure.chart')].every(c => c.dataset.drawn)"
                    )
                    if name == "run-page.png":  # hover values under the cursor on the loss chart
                        over = page.locator("figure.chart[data-key='loss'] .u-over").bounding_box()
                        page.mouse.move(over["x"] + over["width"] * 0.3, over["y"] + over["height"] / 2, steps=3)
                    page.screenshot(path=str(out / name), full_page=name == "run-page.png")
                    print(f"wrote {os.path.relpath(out / name, ROOT)}")
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
