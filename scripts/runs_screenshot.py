"""Retake docs/viewer-runs-paired.png: the runs dashboard of a sweep folder with two rows ticked
(their paired differences) and the error bars: `.venv/bin/python scripts/runs_screenshot.py
SWEEP_DIR RUN_A RUN_B` (needs /usr/bin/chromium), e.g. a `saelab sweep experiment=tiny_all`
folder with topk/resid_post_mlp/2 and topk/resid_post_mlp/3."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from saelab.tasks.view import serve  # noqa: E402


def main() -> None:
    sweep, run_a, run_b = sys.argv[1:4]
    server, _ = serve([sweep, "--no-browser"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.goto(f"{server.url}#/runs")
        page.wait_for_selector('body[data-ready="#/runs"]')
        for run in (run_a, run_b):
            page.locator(f'table.runs-table tr[data-run="{run}"] input.pick').check()
        page.wait_for_selector("table.paired-table tbody tr")
        page.screenshot(path=ROOT / "docs" / "viewer-runs-paired.png", full_page=True)
        browser.close()
    server.shutdown()
    print("docs/viewer-runs-paired.png")


if __name__ == "__main__":
    main()
