"""The runs dashboard plots the feature-quality metrics (`explain/f1`, `ablation_sparsity/mean`)
across layers where the rows have them, in headless Chromium (tests/conftest.py's page)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import serving, visit

# two SAE series over layers 0-3 (hand-made rows, as a sweep writes them); one row lacks both
ROWS = [
    {"run": f"{family}/{layer}", "layer": layer, "location": "resid_post_mlp",
     "sae_family": family, "reconstruction/nmse": 0.1 * (layer + 1),
     **({} if (family, layer) == ("relu", 3) else
        {"explain/f1": 0.30 + 0.05 * layer, "ablation_sparsity/mean": 0.12 - 0.01 * layer})}
    for family in ("topk", "relu") for layer in range(4)
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("quality") / "sweep"
    for row in ROWS:
        (root / row["run"]).mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps(ROWS))
    with serving([str(root), "--no-browser"]) as srv:
        yield srv


@pytest.mark.parametrize("metric", ["explain/f1", "ablation_sparsity/mean"])
def test_quality_metrics_are_plotted_across_layers(page, server, metric):
    visit(page, server, "#/runs")
    chart = page.locator(f'svg.chart[data-metric="{metric}"]')
    assert chart.locator("g.series").count() == 2
    assert chart.locator("circle.pt").count() == 7  # the row without the metric has no point
    lines = chart.locator("path.line").evaluate_all("els => els.map(e => e.getAttribute('d'))")
    assert sorted(d.count("L") for d in lines) == [2, 3]  # 3 and 4 layers joined
    titles = chart.locator("circle.pt title").evaluate_all("els => els.map(e => e.textContent)")
    want = {f"{r['layer']}:{r[metric]:.4g}" for r in ROWS if metric in r}
    got = set()
    for title in titles:  # "<series> · layer L: layer L, <label> <value>"
        layer = int(title.split("layer ")[1].split(":")[0])
        got.add(f"{layer}:{float(title.rsplit(' ', 1)[1]):.4g}")
    assert got == want
