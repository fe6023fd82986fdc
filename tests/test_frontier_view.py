"""The dashboard's frontiers at matched L0, in headless Chromium: Pareto lines and the
interpolation table on hand-made rows, and the interpolation itself against values worked out
here by hand."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import serving, visit

# (family, L0, CE loss recovered, nmse) at resid_post_mlp layer 2
ROWS = [
    ("topk", 8, 0.90, 0.20), ("topk", 16, 0.94, 0.15), ("topk", 32, 0.97, 0.10),
    ("relu", 12, 0.85, 0.30), ("relu", 50, 0.95, 0.12),
    ("relu", 40, 0.80, 0.40),  # beaten by relu at L0 12: off its frontier
    ("batchtopk", 16, 0.93, 0.16),
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontier") / "sweep"
    root.mkdir()
    rows = [
        {"run": f"{family}/{l0}", "model": "m", "hook": "blocks.2.hook_resid_post", "layer": 2,
         "location": "resid_post_mlp", "sae_family": family, "sparsity/l0": float(l0),
         "downstream/ce_loss_recovered": ce, "reconstruction/nmse": nmse}
        for family, l0, ce, nmse in ROWS
    ]  # fmt: skip
    (root / "sweep.json").write_text(json.dumps(rows))
    with serving([str(root), "--no-browser"]) as srv:
        yield srv


def loglinear(x, x0, y0, x1, y1):
    return y0 + (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) * (y1 - y0)


def test_pareto_and_interpolation_on_hand_made_points(page, server):
    visit(page, server, "#/runs")
    points = [{"x": x, "y": y} for x, y in ((8, 0.90), (20, 0.905), (16, 0.91), (32, 0.96))]
    frontier, values = page.evaluate(
        """async (points) => {
            const { pareto, atL0 } = await import('/js/runs.js');
            const line = pareto(points, true);
            return [line, [4, 8, 12, 16, 24, 32, 40].map((x) => atL0(line, x))];
        }""",
        points,
    )
    # (20, 0.905) is beaten by (16, 0.91): fewer latents and a better value
    assert [(p["x"], p["y"]) for p in frontier] == [(8, 0.90), (16, 0.91), (32, 0.96)]
    expected = [None, 0.90, loglinear(12, 8, 0.90, 16, 0.91), 0.91,
                loglinear(24, 16, 0.91, 32, 0.96), 0.96, None]  # fmt: skip
    assert values == [pytest.approx(v) if v is not None else None for v in expected]
    lower = page.evaluate(
        """async () => (await import('/js/runs.js')).pareto(
            [{x: 8, y: 0.2}, {x: 16, y: 0.25}, {x: 32, y: 0.1}], false).map((p) => p.x)"""
    )
    assert lower == [8, 32]  # for a lower-is-better metric (nmse), 16 is beaten by 8


def test_pareto_lines_and_the_matched_l0_table(page, server):
    visit(page, server, "#/runs")
    chart = page.locator('svg.chart[data-metric="frontier:downstream/ce_loss_recovered"]')
    assert chart.locator("circle.pt").count() == len(ROWS)
    assert chart.locator("path.pareto").count() == 2  # topk and relu; batchtopk has one SAE
    table = page.locator('figure.matched-l0[data-place="resid_post_mlp · layer 2"] table')
    heads = table.locator("thead th").all_inner_texts()
    assert heads == ["series", "metric", "L0 = 8", "L0 = 16", "L0 = 32"]  # 8 to 50: 2^3..2^5

    def cells(family, metric):
        row = table.locator(f'tr[data-series="{family} · resid_post_mlp"][data-metric="{metric}"]')
        return row.locator("td.num").all_inner_texts()

    ce = "downstream/ce_loss_recovered"
    assert cells("topk", ce) == ["0.9", "0.94", "0.97"]
    relu = cells("relu", ce)  # its frontier: (12, 0.85) and (50, 0.95), nothing below 12
    assert relu[0] == "–"
    assert float(relu[1]) == pytest.approx(loglinear(16, 12, 0.85, 50, 0.95), abs=5e-5)
    assert float(relu[2]) == pytest.approx(loglinear(32, 12, 0.85, 50, 0.95), abs=5e-5)
    assert cells("batchtopk", ce) == ["–", "0.93", "–"]
    nmse = cells("relu", "reconstruction/nmse")
    assert float(nmse[1]) == pytest.approx(loglinear(16, 12, 0.30, 50, 0.12), abs=5e-5)
    uncovered = table.locator("td.uncovered").first.get_attribute("title")
    assert uncovered.startswith("not covered: L0 12 to 50")
