"""Retake the runs dashboard's screenshots in docs/ (needs /usr/bin/chromium).

`.venv/bin/python scripts/runs_screenshot.py SWEEP_DIR RUN_A RUN_B`: docs/viewer-runs.png (the
dashboard) and docs/viewer-runs-paired.png (two rows ticked: their paired differences, and the
error bars), e.g. a `saelab sweep experiment=tiny_all` folder with topk/resid_post_mlp/2 and
topk/resid_post_mlp/3.

`.venv/bin/python scripts/runs_screenshot.py --frontier SWEEP_DIR [--latent RUN:ID]`: from a
`saelab sweep experiment=tiny_frontier export=true sweep.match=true` folder,
docs/viewer-matched-l0.png (the sparsity frontier and its table at matched L0),
docs/viewer-matches.png (the matched pairs) and docs/viewer-cross-matches.png (latent ID of
RUN's export with its matches in the other SAEs).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT))
from saelab.tasks.view import serve  # noqa: E402


def visit(page: Page, url: str, hash: str) -> None:
    page.goto(url + hash)
    page.wait_for_selector(f'body[data-ready="{hash}"]')


def dashboard(page: Page, url: str, run_a: str, run_b: str) -> list[Path]:
    visit(page, url, "#/runs")
    page.screenshot(path=DOCS / "viewer-runs.png", full_page=True)
    for run in (run_a, run_b):
        page.locator(f'table.runs-table tr[data-run="{run}"] input.pick').check()
    page.wait_for_selector("table.paired-table tbody tr")
    page.screenshot(path=DOCS / "viewer-runs-paired.png", full_page=True)
    return [DOCS / "viewer-runs.png", DOCS / "viewer-runs-paired.png"]


def shoot(page: Page, selector: str, path: Path) -> None:
    """The element from a full-page screenshot: an element screenshot scrolls, and the
    dashboard's sticky legend would then cover its top."""
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    y = box["y"] + page.evaluate("window.scrollY")
    clip = {"x": box["x"] - 6, "y": y - 6, "width": box["width"] + 12, "height": box["height"] + 12}
    page.screenshot(path=path, full_page=True, clip=clip)


def frontier(page: Page, url: str, server, latent: str) -> list[Path]:
    visit(page, url, "#/runs")
    shoot(page, "section.panel:has(figure.matched-l0)", DOCS / "viewer-matched-l0.png")
    shoot(page, "section.panel:has(table.match-table)", DOCS / "viewer-matches.png")
    run, _, latent_id = latent.rpartition(":")
    wanted = server.runs[0].path / run / "export"  # runs[0]: the served sweep folder
    export = next(r.index for r in server.runs if r.path == wanted)
    visit(page, url, f"#/r/{export}/l/{latent_id}")
    top = page.locator("article.latent h1").bounding_box()
    grid = page.locator("article.latent div.grid").bounding_box()
    clip = {"x": 0, "y": 0, "width": 1280, "height": grid["y"] + grid["height"] + 12}
    assert top is not None and top["y"] < grid["y"]
    page.screenshot(path=DOCS / "viewer-cross-matches.png", clip=clip, full_page=True)
    return [DOCS / f"viewer-{n}.png" for n in ("matched-l0", "matches", "cross-matches")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep")
    parser.add_argument("runs", nargs="*", metavar="RUN", help="RUN_A RUN_B: the rows to tick")
    parser.add_argument("--frontier", action="store_true")
    parser.add_argument("--latent", default="topk_l0_16/resid_post_mlp/2:0")
    args = parser.parse_args()
    if not args.frontier and len(args.runs) != 2:
        parser.error("give the two rows to tick: RUN_A RUN_B")
    server, _ = serve([args.sweep, "--no-browser"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        if args.frontier:
            written = frontier(page, server.url, server, args.latent)
        else:
            written = dashboard(page, server.url, *args.runs)
        browser.close()
    server.shutdown()
    print("\n".join(str(p.relative_to(ROOT)) for p in written))


if __name__ == "__main__":
    main()
