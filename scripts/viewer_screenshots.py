"""Retake docs/viewer-latent.png and docs/viewer-prompt.png from an export of the tiny model:
`.venv/bin/python scripts/viewer_screenshots.py EXPORT_DIR [--latent N]` (needs /usr/bin/chromium).
The latent shown by default is the one with the largest activation among latents firing on
under 5% of tokens: specific enough to read at a glance. From an export with explanations
(`export.explain=true`) also docs/viewer-explanation.png (the latent page of `--explained`, by
default the best-scored explanation among those latents) and docs/viewer-list-f1.png (the latent
list sorted by F1)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from saelab.tasks.view import serve  # noqa: E402

PROMPT = (
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun."
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("export", type=Path)
    parser.add_argument("--latent", type=int)
    parser.add_argument("--explained", type=int, help="the explained latent to show")
    args = parser.parse_args()
    table = json.loads((args.export / "latents.json").read_text())
    latent = args.latent
    if latent is None:
        ids = [i for i, d in enumerate(table["density"]) if 0 < d < 0.05]
        latent = max(ids, key=lambda i: table["max_act"][i])
    server, _ = serve([str(args.export), "experiment=tiny", "--no-browser"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.goto(f"{server.url}#/r/0/l/{latent}")
        page.wait_for_selector(f'body[data-ready="#/r/0/l/{latent}"]')
        page.screenshot(path=ROOT / "docs" / "viewer-latent.png", full_page=True)
        page.goto(f"{server.url}#/prompt")
        page.wait_for_selector('body[data-ready="#/prompt"]')
        page.fill("#prompt-text", PROMPT)
        page.click("#prompt-run")
        page.wait_for_selector(".prompt-table")
        page.screenshot(path=ROOT / "docs" / "viewer-prompt.png", full_page=True)
        if "explain_f1" in table:
            explanation_shots(page, server.url, table, args.explained)
        browser.close()
    server.shutdown()
    print(f"docs/viewer-latent.png (latent {latent}), docs/viewer-prompt.png")


def explanation_shots(page, url: str, table: dict, best: int | None) -> None:
    """The latent page of `best` (default: the best-scored explanation), and the list sorted
    by F1."""
    f1 = table["explain_f1"]
    scored = [i for i, v in enumerate(f1) if v is not None and 0 < table["density"][i] < 0.05]
    best = max(scored, key=lambda i: (f1[i], -i)) if best is None else best
    page.goto(f"{url}#/r/0/l/{best}")
    page.wait_for_selector(f'body[data-ready="#/r/0/l/{best}"]')
    page.screenshot(path=ROOT / "docs" / "viewer-explanation.png", full_page=True)
    page.goto(f"{url}#/r/0")
    page.wait_for_selector('body[data-ready="#/r/0"]')
    page.get_by_role("button", name="explanation F1").click()
    page.screenshot(path=ROOT / "docs" / "viewer-list-f1.png")
    print(f"docs/viewer-explanation.png (latent {best}), docs/viewer-list-f1.png")


if __name__ == "__main__":
    main()
