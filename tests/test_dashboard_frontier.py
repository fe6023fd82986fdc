"""The runs dashboard on the tiny zoo's sparsity frontier: a real `saelab sweep
experiment=tiny_frontier` (the 18 bundled frontier SAEs, on fewer tokens) served and drawn in
headless Chromium. Each recipe is one series, its three SAEs joined in order of L0, the six
side by side on the frontier charts; with `sweep.match=true`, its matched pairs in a table."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from saelab.cli import main
from tests.conftest import serving, visit

RECIPES = ("topk", "relu_l1", "batchtopk", "jumprelu", "matryoshka", "multi_topk")
FAMILIES = [f"frontier_{r}" for r in RECIPES]
FRONTIER_CHARTS = ("reconstruction/nmse", "downstream/ce_loss_recovered")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("frontier") / "sweep"
    main(
        [
            "sweep",
            "experiment=tiny_frontier",
            "logger=none",
            "data.n_tokens=4096",
            "evals=[reconstruction,downstream]",
            "sweep.match=true",
            f"hydra.run.dir={out}",
        ]
    )
    return out


@pytest.fixture(scope="module")
def server(sweep):
    with serving([str(sweep), "--no-browser"]) as srv:
        yield srv


def test_sweep_files_each_sae_under_its_recipe_family_in_its_own_folder(sweep):
    rows = json.loads((sweep / "sweep.json").read_text())
    assert sorted(r["run"] for r in rows) == sorted(
        f"{r}_l0_{t}/resid_post_mlp/2" for r in RECIPES for t in (8, 16, 32)
    )
    for row in rows:
        assert row["sae_family"] == "frontier_" + row["run"].split("_l0_")[0]


def path_points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", d)]


def test_frontier_charts_show_each_family_as_one_joined_series(page, server, sweep):
    rows = json.loads((sweep / "sweep.json").read_text())
    visit(page, server, "#/runs")
    names = page.eval_on_selector_all("ul.legend li", "els => els.map(e => e.textContent)")
    assert sorted(names) == sorted(f"{f} · resid_post_mlp" for f in FAMILIES)
    colours = page.eval_on_selector_all(
        "ul.legend li line", "els => els.map(e => e.getAttribute('stroke'))"
    )
    assert len(set(colours)) == len(FAMILIES)
    for metric in FRONTIER_CHARTS:
        chart = page.locator(f'svg.chart[data-metric="frontier:{metric}"]')
        assert chart.locator("g.series").count() == len(FAMILIES)
        for family in FAMILIES:
            series = chart.locator(f'g.series[data-series="{family} · resid_post_mlp"]')
            assert series.locator("circle.pt").count() == 3
            points = path_points(series.locator("path.line").get_attribute("d"))
            # joined left to right (log L0), the values going the way the sweep's rows go
            mine = sorted((r for r in rows if r["sae_family"] == family), key=lambda r: r[
                "sparsity/l0"])  # fmt: skip
            assert len(points) == 3 and points == sorted(points)
            for (_, y0), (_, y1), a, b in zip(points, points[1:], mine, mine[1:], strict=False):
                if a[metric] != b[metric]:  # SVG y grows downwards
                    assert (y1 < y0) == (b[metric] > a[metric]), (family, metric)
    # across layers a family's three SAEs share layer 2: points, no line between them
    across = page.locator('svg.chart[data-metric="reconstruction/nmse"]')
    assert across.locator("circle.pt").count() == 18
    assert across.locator("path.line").count() == 0


def test_table_lists_the_eighteen_by_family(page, server):
    visit(page, server, "#/runs")
    assert page.locator("table.runs-table tbody tr").count() == 18
    families = page.eval_on_selector_all(
        "table.runs-table tbody tr td:nth-child(2)", "tds => tds.map(t => t.textContent.trim())"
    )
    assert sorted(set(families)) == sorted(FAMILIES)


def test_match_table_pairs_each_family_chain_and_each_l0_across_families(page, server, sweep):
    """By hand: a family's three SAEs (L0 about 8, 16, 32) give two neighbour pairs; each two of
    the six families give three pairs at matched L0 (the same target L0 is the nearest, as the
    measured L0s confirm): 6 x 2 + 15 x 3 = 57."""
    rows = json.loads((sweep / "sweep.json").read_text())
    l0 = {r["run"]: r["sparsity/l0"] for r in rows}
    recipe = lambda run: run.split("_l0_")[0]  # noqa: E731
    target = lambda run: run.split("_l0_")[1].split("/")[0]  # noqa: E731
    for run in l0:  # the premise: in every other family, the nearest L0 has the same target
        for other in set(map(recipe, l0)) - {recipe(run)}:
            theirs = [r for r in l0 if recipe(r) == other]
            nearest = min(theirs, key=lambda r: abs(math.log(l0[r] / l0[run])))
            assert target(nearest) == target(run), (run, nearest)
    visit(page, server, "#/runs")
    table = page.locator("table.match-table tbody tr")
    assert table.count() == 57
    pairs = [(r.get_attribute("data-a"), r.get_attribute("data-b"),
              r.locator("td").nth(3).inner_text()) for r in table.all()]  # fmt: skip
    neighbours = [(a, b) for a, b, why in pairs if why == "family neighbours"]
    assert len(neighbours) == 12 and all(recipe(a) == recipe(b) for a, b in neighbours)
    assert all(l0[a] < l0[b] for a, b in neighbours)  # A: the lower L0
    across = [(a, b) for a, b, why in pairs if why == "matched L0"]
    assert len(across) == 45
    assert all(recipe(a) != recipe(b) and target(a) == target(b) for a, b in across)
