"""The runs dashboard of `saelab view`: a real tiny-zoo sweep (made once per module) and a
second, multirun-style folder served together, checked over raw HTTP and in headless Chromium
(as in tests/test_viewer.py). One server and one browser serve the whole module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from saelab.cli import main
from saelab.tasks.view import serve
from tests.conftest import serving, visit
from tests.test_viewer import get
from tests.viewer_data import write_export

METRICS = [
    "reconstruction/nmse",
    "reconstruction/explained_variance",
    "downstream/ce_loss_recovered",
    "downstream/delta_ce",
    "downstream/kl",
    "sparsity/l0",
    "density/dead_fraction",
]
# the feature-quality plugins' headline metrics (small settings: the tiny model proves the path)
QUALITY = [
    "probe/loss",
    "sparse_probing/sae_top_1_accuracy",
    "absorption/mean_absorption_fraction",
    "absorption/mean_full_absorption",
]
EXPORTED = "topk/resid_post_mlp/2"  # the sweep run that gets an export inside its folder
SECRET = "s3cr3t-outside-the-served-dirs"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dashboard")
    sweep = root / "sweep"
    main(
        [
            "sweep",
            "experiment=tiny_all",
            "logger=none",
            "data.n_tokens=4096",
            "evals=[reconstruction,downstream,density,probe,sparse_probing,absorption]",
            "evals.probe.max_tokens=2048",
            "evals.probe.tasks=[capitalised,newline,punctuation]",
            "evals.sparse_probing.datasets=[shakespeare_speaker]",
            "evals.sparse_probing.max_train=8",
            "evals.sparse_probing.max_test=4",
            "evals.absorption.max_words=120",
            "evals.absorption.icl_examples=2",
            "evals.absorption.epochs=5",
            "evals.absorption.min_probe_f1=0",
            "evals.absorption.min_letters=1",
            f"hydra.run.dir={sweep}",
        ]
    )
    rows = json.loads((sweep / "sweep.json").read_text())
    write_export(sweep / EXPORTED / "export")

    # a second folder, laid out like a multirun (<n>/metrics.json + sweep.json), with hostile rows
    outside = root / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text(
        json.dumps({"metrics": {"reconstruction/nmse": 0.5}, "provenance": {"sae_sha256": SECRET}})
    )
    multi = root / "multi"
    multi_rows = []
    picked = sorted(
        (r for r in rows if r["run"].startswith("topk/resid_post_mlp/")), key=lambda r: r["layer"]
    )[:3]
    for n, row in enumerate(picked):
        (multi / str(n)).mkdir(parents=True)
        if n == 2:  # a metrics.json that is a symlink out of the folder: never read
            (multi / "2" / "metrics.json").symlink_to(outside / "metrics.json")
        else:
            shutil.copy(sweep / row["run"] / "metrics.json", multi / str(n) / "metrics.json")
        multi_rows.append({**row, "run": str(n)})
    multi_rows += [{**picked[0], "run": "../outside"}, {**picked[0], "run": str(outside)}]
    (multi / "sweep.json").write_text(json.dumps(multi_rows))
    return {"root": root, "sweep": sweep, "multi": multi, "rows": rows}


@pytest.fixture(scope="module")
def server(dirs):
    with serving([str(dirs["sweep"]), str(dirs["multi"]), "--no-browser"]) as srv:
        yield srv


N_SWEEP = 6  # the tiny zoo: topk at resid_post_mlp 0-3 and resid_delta_mlp 2, relu_l1 at 2
N_ROWS = N_SWEEP + 3
N_SERIES = 4  # relu_l1·post, topk·delta, topk·post in the sweep; topk·post in the multirun


# -- raw HTTP ---------------------------------------------------------------------------------
def test_runs_api_lists_rows_and_reads_nothing_outside(server, dirs):
    response = get(server, "/api/runs")
    assert response.status == 200
    body = response.body.decode()
    assert SECRET not in body and "outside" not in body.replace(str(dirs["root"]), "")
    runs = json.loads(body)["runs"]
    sweep, multi, nested = runs
    assert sweep["kind"] == multi["kind"] == "results"
    assert len(sweep["rows"]) == len(dirs["rows"]) == N_SWEEP
    assert sorted(r["run"] for r in sweep["rows"]) == sorted(r["run"] for r in dirs["rows"])
    assert [r["run"] for r in multi["rows"]] == ["0", "1", "2"]  # the escaping rows dropped
    assert multi["rows"][2]["sae_sha256"] is None  # its metrics.json is a symlink out
    assert {r["family"] for r in sweep["rows"]} == {"topk", "relu_l1"}
    assert {r["family"] for r in multi["rows"]} == {"topk"}
    assert nested["kind"] == "export" and nested["parent"] == 0
    assert [r.get("export") for r in sweep["rows"] if r["run"] == EXPORTED] == [2]
    # each row's run folder is served: its metrics.json
    metrics = json.loads(get(server, f"/data/0/{EXPORTED}/metrics.json").body)
    row = next(r for r in sweep["rows"] if r["run"] == EXPORTED)
    assert metrics["metrics"]["reconstruction/nmse"] == pytest.approx(row["reconstruction/nmse"])
    assert get(server, "/data/1/2/metrics.json").status == 403  # the symlink out


def test_single_eval_run_folder_is_served(dirs, tmp_path):
    single = tmp_path / "single"
    shutil.copytree(dirs["sweep"] / "relu_l1" / "resid_post_mlp" / "2", single)
    srv, _ = serve([str(single), "--no-browser"])
    try:
        (run,) = srv.runs
        assert run.kind == "results" and len(run.rows) == 1
        row = run.rows[0]
        assert (row["run"], row["family"], row["layer"]) == ("", "relu_l1", 2)
        assert row["downstream/ce_loss_recovered"] > 0
    finally:
        srv.server_close()


# -- the page ---------------------------------------------------------------------------------
def test_charts_plot_every_metric_one_line_per_series(page, server):
    visit(page, server, "#/runs")
    assert page.locator("ul.legend li").count() == N_SERIES
    names = page.eval_on_selector_all("ul.legend li", "els => els.map(e => e.textContent)")
    assert any(n.startswith("sweep · relu_l1") for n in names)
    assert any(n.startswith("multi · topk") for n in names)
    colours = page.eval_on_selector_all(
        "ul.legend li line", "els => els.map(e => e.getAttribute('stroke'))"
    )
    assert len(set(colours)) == N_SERIES
    for metric in METRICS + QUALITY:
        chart = page.locator(f'svg.chart[data-metric="{metric}"]')
        assert chart.locator("g.series").count() == N_SERIES, metric
        assert chart.locator("path.line").count() == N_SERIES, metric
        assert chart.locator("circle.pt").count() == N_ROWS, metric
        ds = chart.locator("path.line").evaluate_all("els => els.map(e => e.getAttribute('d'))")
        assert sorted(d.count("L") for d in ds) == [0, 0, 2, 3]  # 1, 1, 3 and 4 layers
    for y in ("downstream/ce_loss_recovered", "reconstruction/nmse"):
        frontier = page.locator(f'svg.chart[data-metric="frontier:{y}"]')
        assert frontier.locator("circle.pt").count() == N_ROWS
        assert frontier.locator("g.series").count() == N_SERIES


def test_feature_quality_metrics_are_charted_and_in_the_table(page, server, dirs):
    """The probing plugins' results of the sweep: a chart each, and a column each whose
    values are the sweep's (`sweep.json`), row by row."""
    visit(page, server, "#/runs")
    captions = page.eval_on_selector_all("figure figcaption", "els => els.map(e => e.textContent)")
    for label in ("probe loss", "sparse probing top-1 accuracy", "absorption fraction"):
        assert any(c.startswith(label) for c in captions), label
    missing = page.locator("main").inner_text()
    missing = next((line for line in missing.splitlines() if "Not in these runs" in line), "")
    for label in ("probe loss", "sparse probing", "absorption"):  # none listed as absent
        assert label not in missing, missing
    runs = page.eval_on_selector_all(
        "table.runs-table tbody tr", "rs => rs.map(r => r.dataset.run)"
    )
    by_run = {r["run"]: r for r in dirs["rows"]}
    for key in QUALITY:
        shown = column(page, key)  # 4 significant digits
        assert len(shown) == N_ROWS
        pairs = [(run, v) for run, v in zip(runs, shown, strict=True) if run in by_run]
        assert len(pairs) == N_SWEEP
        for run, value in pairs:
            assert value == pytest.approx(by_run[run][key], rel=1e-3), (run, key)


def column(page, key: str) -> list[float]:
    index = page.eval_on_selector_all(
        "table.runs-table thead th", f"ths => ths.findIndex(t => t.dataset.key === {key!r})"
    )
    texts = page.eval_on_selector_all(
        f"table.runs-table tbody tr td:nth-child({index + 1})", "tds => tds.map(t => t.textContent)"
    )
    return [float(t) for t in texts]


def test_table_has_one_row_per_sae_and_sorts(page, server):
    visit(page, server, "#/runs")
    assert page.locator("table.runs-table tbody tr").count() == N_ROWS
    before = page.eval_on_selector_all(
        "table.runs-table tbody tr", "rs => rs.map(r => r.dataset.run)"
    )
    page.click('th[data-key="reconstruction/nmse"] button')
    nmse = column(page, "reconstruction/nmse")
    assert nmse == sorted(nmse) and len(set(nmse)) > 1
    after = page.eval_on_selector_all(
        "table.runs-table tbody tr", "rs => rs.map(r => r.dataset.run)"
    )
    assert after != before
    page.click('th[data-key="reconstruction/nmse"] button')
    assert column(page, "reconstruction/nmse") == sorted(nmse, reverse=True)
    page.click('th[data-key="layer"] button')
    layers = column(page, "layer")
    assert layers == sorted(layers)


def test_rows_link_to_their_run_and_export(page, server, dirs):
    visit(page, server, "#/runs")
    row = page.locator(f'table.runs-table tbody tr[data-run="{EXPORTED}"]').first
    href = row.locator("a.run-link").get_attribute("href")
    assert href == f"/data/0/{EXPORTED}/metrics.json"
    served = json.loads(get(server, href).body)
    on_disk = json.loads((dirs["sweep"] / EXPORTED / "metrics.json").read_text())
    assert served == on_disk
    assert page.locator("a.features").count() == 1  # only the run with an export
    row.locator("a.features").click()
    page.wait_for_selector('body[data-ready="#/r/2"]')
    assert not page.query_selector("main .error"), page.inner_text("main")
    assert page.locator("main").inner_text()


def test_only_runs_served_starts_on_the_dashboard(page, server):
    visit(page, server, "#/")
    assert page.locator("main h1").inner_text() == "Runs"
    assert page.locator('header nav a[href="#/runs"]').count() == 1


# -- standard errors and paired differences ----------------------------------------------------
PAIR = ("topk/resid_post_mlp/2", "topk/resid_post_mlp/3")


def test_compare_api_pairs_two_rows_and_refuses_what_it_cannot_pair(server, dirs):
    answer = json.loads(get(server, f"/api/compare?a=0/{PAIR[0]}&b=0/{PAIR[1]}").body)
    a, b = (json.loads((dirs["sweep"] / run / "metrics.json").read_text()) for run in PAIR)
    rows = {r["metric"]: r for r in answer["rows"]}
    assert set(rows) == set(a["stderr"])
    for key, row in rows.items():
        assert row["difference"] == pytest.approx(a["metrics"][key] - b["metrics"][key], abs=1e-12)
        assert row["a_se"] == a["stderr"][key] and row["b_se"] == b["stderr"][key]
    for query, status in (
        (f"a=0/{PAIR[0]}&b=1/0", 400),  # the multirun copied metrics.json alone: no contexts
        (f"a=0/{PAIR[0]}&b=1/2", 400),  # its metrics.json is a symlink out of the folder
        (f"a=0/{PAIR[0]}&b=1/../outside", 400),
        (f"a=0/{PAIR[0]}&b=2/x", 400),  # an export, not results
        (f"a=0/{PAIR[0]}", 400),
    ):
        response = get(server, f"/api/compare?{query}")
        assert response.status == status, query
        assert SECRET not in response.body.decode()


def test_error_bars_and_the_paired_difference_panel(page, server, dirs):
    visit(page, server, "#/runs")
    key = "downstream/ce_loss_recovered"
    chart = page.locator(f'svg.chart[data-metric="{key}"]')
    assert chart.locator("line.errbar").count() == N_ROWS  # every row has its SE
    # each bar is centred on its point and spans ± one SE in the chart's scale
    bars = chart.locator("g.series").first.evaluate(
        """g => [...g.querySelectorAll('line.errbar')].map((l, i) => [
            +l.getAttribute('y1'), +l.getAttribute('y2'),
            +g.querySelectorAll('circle.pt')[i].getAttribute('cy')])"""
    )
    for y1, y2, cy in bars:
        assert y1 > cy > y2 and (y1 - cy) == pytest.approx(cy - y2, abs=0.15)
    assert page.locator(".paired-table").count() == 0
    for run in PAIR:
        page.locator(f'table.runs-table tr[data-run="{run}"] input.pick').check()
    page.wait_for_selector("table.paired-table tbody tr")
    a, b = (json.loads((dirs["sweep"] / run / "metrics.json").read_text()) for run in PAIR)
    row = page.locator(f'table.paired-table tr[data-metric="{key}"]')
    shown = float(row.locator("td.diff").inner_text())
    assert shown == pytest.approx(a["metrics"][key] - b["metrics"][key], rel=2e-3)
    assert page.locator("table.paired-table tbody tr").count() == len(a["stderr"])
    verdicts = row.locator("td.verdict").inner_text()
    z = float(row.locator("td:nth-child(6)").inner_text())
    assert (verdicts == "significant") == (abs(z) > 1.96)

    # a third tick drops the oldest; a row without per-context values is one line of error
    page.locator('table.runs-table tr[data-run="0"] input.pick').check()
    page.wait_for_selector(".compare-error")
    assert "contexts.safetensors" in page.locator(".compare-error").inner_text()
    assert page.locator("table.runs-table input.pick:checked").count() == 2
