"""The viewer's explanations in a real headless Chromium, on a real (small) export of the tiny
zoo with `export.explain=true`: the latent page's patterns, scores and predicted tokens, the
list's F1 column, search by a token of an explanation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import serving, visit

SMALL = (
    "data.n_tokens=4096", "export.n_top=8", "export.n_random=4", "explain.n_latents=16",
    "explain.silent_contexts=8",
)  # fmt: skip


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    from tests.test_cli import saelab

    root = tmp_path_factory.mktemp("explain")
    out = root / "tiny"
    args = ("export", "experiment=tiny", "export.explain=true", *SMALL, f"hydra.run.dir={out}")
    result = saelab(*args, cwd=root)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def server(export_dir):
    with serving([str(export_dir), "--no-browser"]) as srv:
        yield srv


def load(export_dir: Path, name: str):
    path = export_dir / name
    if name.endswith(".gz"):
        return json.loads(gzip.decompress(path.read_bytes()))
    return json.loads(path.read_text())


def explained(export_dir: Path) -> list[int]:
    table = load(export_dir, "latents.json")
    return [i for i, f1 in enumerate(table["explain_f1"]) if f1 is not None]


def test_export_holds_explanations(export_dir):
    manifest = load(export_dir, "manifest.json")
    assert manifest["settings"]["explain"]["n_explained"] == 16
    assert manifest["files"]["explain"] == "explain.json"
    metrics = json.loads((export_dir / "metrics.json").read_text())["metrics"]
    assert 0 < metrics["explain/n_latents"] <= 16
    for key in ("precision", "recall", "f1", "recall_weighted", "f1_weighted"):
        assert 0 <= metrics[f"explain/{key}"] <= 1
    scored = explained(export_dir)
    f1 = [load(export_dir, f"latents/{i}.json.gz")["explanation"]["f1"] for i in scored]
    assert metrics["explain/f1"] == pytest.approx(sum(f1) / len(f1), abs=1e-3)


def test_latent_page_shows_patterns_scores_and_predicted_tokens(page, server, export_dir):
    vocab = load(export_dir, "vocab.json")["strings"]
    latent = explained(export_dir)[0]
    record = load(export_dir, f"latents/{latent}.json.gz")
    visit(page, server, f"#/r/0/l/{latent}")
    panel = page.locator("section.panel", has_text="Explanation (N2G)")
    rows = panel.locator(".pattern")
    assert rows.count() == len(record["explanation"]["patterns"])
    first = record["explanation"]["patterns"][0]
    text = rows.first.inner_text()
    for token in first["tokens"]:
        assert (json.dumps(vocab[token]) if token is not None else "⟨any⟩") in text
    f1 = panel.locator('[data-score="f1"]').inner_text()
    assert float(f1) == pytest.approx(record["explanation"]["f1"], abs=1e-3)
    top_row = page.locator("section.panel", has_text="Top activations").locator(".example").first
    classes = top_row.locator(".tok").evaluate_all("e => e.map(x => x.className)")
    marked = ["pred" in c for c in classes]
    assert marked == [v > 0 for v in record["top"][0]["predicted"]]


def test_list_sorts_by_f1_and_search_finds_explanation_tokens(page, server, export_dir):
    table = load(export_dir, "latents.json")
    visit(page, server, "#/r/0")
    page.get_by_role("button", name="explanation F1").click()
    first_link = page.locator("table.list tbody tr").first.locator("a").inner_text()
    best = max(explained(export_dir), key=lambda i: (table["explain_f1"][i], -i))
    assert first_link == f"#{best}"
    index = load(export_dir, "explain.json")
    token, hits = next(iter(index.items()))
    text = load(export_dir, "vocab.json")["strings"][int(token)]
    page.fill("#search", text)
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector(".explained-hits")
    links = page.locator(".explained-hits a").evaluate_all("e => e.map(x => x.textContent)")
    assert f"#{hits[0][0]}" in [link.split()[0] for link in links]
