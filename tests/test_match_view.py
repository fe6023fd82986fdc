"""Matches in the viewer: a sweep (`sweep.match=true export=true`) of an SAE and a copy of it
whose latents are permuted by hand, served; the dashboard's match table and the latent pages'
cross-SAE links, clicked in headless Chromium, land on the permuted latent. `--matches FILE`
(a `saelab match --out` file) links two served exports the same way; bad match files are one
line and exit 2."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from saelab.cli import main
from tests.conftest import TINY_OVERRIDES, openai_state_dict, serving, visit

N, D = 64, 64
PERM = torch.randperm(N, generator=torch.Generator().manual_seed(7))
# latent j of the copy is latent PERM[j] of the original: the original's latent i is the
# copy's latent j with PERM[j] = i
INVERSE = torch.argsort(PERM).tolist()
COMMON = ["model=random_gpt2", *TINY_OVERRIDES, "data=random_tokens", "data.n_tokens=640",
          "data.batch_size=4", "data.n_ctx=16", "logger=none"]  # fmt: skip
RUN_A, RUN_B = "a/resid_post_mlp/1", "b/resid_post_mlp/1"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """An OpenAI-format TopK SAE and the same SAE with its latents in the order PERM."""
    folder = tmp_path_factory.mktemp("saes")
    sd = openai_state_dict(N, D, k=8, seed=3)
    copy = dict(sd)
    for key in ("encoder.weight", "latent_bias", "stats_last_nonzero",
                "latents_activation_frequency", "latents_mean_square"):  # fmt: skip
        copy[key] = sd[key][PERM]
    copy["decoder.weight"] = sd["decoder.weight"][:, PERM]
    torch.save(sd, folder / "a.pt")
    torch.save(copy, folder / "b.pt")
    return {"a": folder / "a.pt", "b": folder / "b.pt"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, checkpoints) -> Path:
    out = tmp_path_factory.mktemp("matchview") / "sweep"
    saes = [
        f"+sweep.saes.{name}={{_target_:saelab.sae.checkpoints.Files,path:'{path}',"
        "location:resid_post_mlp,layer:1}"
        for name, path in checkpoints.items()
    ]
    main(["sweep", *COMMON, "sae=none", *saes, "evals=[reconstruction]", "export=true",
          "sweep.match=true", f"hydra.run.dir={out}"])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def server(sweep):
    with serving([str(sweep), "--no-browser"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def match_file(tmp_path_factory, checkpoints) -> Path:
    """`saelab match a b --out`: the record of the SAE and its permuted copy."""
    out = tmp_path_factory.mktemp("record") / "ab.json"
    main(["match", str(checkpoints["a"]), str(checkpoints["b"]), "--out", str(out)])
    return out


def export_index(server, run: str) -> int:
    wanted = server.runs[0].path / run / "export"
    return next(r.index for r in server.runs if r.path == wanted)


def test_the_match_table_lists_the_pair_matched_exactly(page, server, sweep):
    visit(page, server, "#/runs")
    rows = page.locator("table.match-table tbody tr")
    assert rows.count() == 1
    row = rows.first
    assert row.get_attribute("data-a") == RUN_A and row.get_attribute("data-b") == RUN_B
    keys = ("matched_above_0.7", "matched_above_0.9", "split_fraction", "mean_cosine",
            "mean_correlation")  # fmt: skip
    values = {key: row.locator(f'td[data-key="{key}"]').inner_text() for key in keys}
    assert values == dict.fromkeys(keys, "1") | {"split_fraction": "0"}
    assert "matched L0" in row.inner_text()  # two families (names), the same L0
    # A's name links to its feature pages; the pair's per-latent file is served
    row.locator("a.features").first.click()
    page.wait_for_selector(f'body[data-ready="#/r/{export_index(server, RUN_A)}"]')
    record = json.loads(urllib.request.urlopen(
        server.url + "data/0/matches/resid_post_mlp/1/a__b.json").read())  # fmt: skip
    assert record["best"] == INVERSE


def test_a_permuted_copy_fires_with_its_matches_correlation_one(sweep):
    """The copy's matched latent fires on the very tokens, as much: correlation 1 wherever the
    latent fires in the correlated tokens (the sweep's 40 contexts less their first position)."""
    (summary,) = json.loads((sweep / "matches.json").read_text())
    record = json.loads((sweep / summary["file"]).read_text())
    assert record["correlation_tokens"] == 40 * 15
    fired = [c for c in record["correlation"] if c is not None]
    assert len(fired) > N // 2 and fired == pytest.approx([1.0] * len(fired), abs=1e-5)
    assert summary["mean_correlation"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("latent", [3, 40])
def test_a_latent_links_its_permuted_copy_and_back(page, server, latent):
    a, b = export_index(server, RUN_A), export_index(server, RUN_B)
    visit(page, server, f"#/r/{a}/l/{latent}")
    links = page.locator("ul.cross-matches a.cross-match")
    assert links.count() == 1
    assert links.first.inner_text() == f"{RUN_B} #{INVERSE[latent]}"
    assert (
        "cos 1 · its best match · act. corr. "
        in page.locator("ul.cross-matches li").first.inner_text()
    )
    links.first.click()
    target = f"#/r/{b}/l/{INVERSE[latent]}"
    page.wait_for_selector(f'body[data-ready="{target}"]')
    assert page.locator("h1").inner_text() == f"Latent {INVERSE[latent]}"
    back = page.locator('ul.cross-matches li[data-direction="matched to this"] a')
    assert back.count() == 1 and back.first.inner_text() == f"{RUN_A} #{latent}"
    back.first.click()
    page.wait_for_selector(f'body[data-ready="#/r/{a}/l/{latent}"]')


def api(server, query: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{server.url}api/matches?{query}").read())


def test_a_sweeps_links_carry_the_activation_correlation(server, sweep):
    """Both ways, the link's correlation is the record's for A's latent: 1 where it fires, null
    (none) where it is silent in the correlated tokens."""
    (summary,) = json.loads((sweep / "matches.json").read_text())
    correlation = json.loads((sweep / summary["file"]).read_text())["correlation"]
    a, b = export_index(server, RUN_A), export_index(server, RUN_B)
    for latent in (i for i in range(N) if i in (0, 1) or correlation[i] is None):
        (best,) = api(server, f"export={a}&latent={latent}")["matches"]
        (back,) = api(server, f"export={b}&latent={INVERSE[latent]}")["matches"]
        assert (best["latent"], back["latent"]) == (INVERSE[latent], latent)
        for link in (best, back):
            assert link["correlation"] == (None if correlation[latent] is None else 1.0)


def test_matches_file_links_two_served_exports(sweep, match_file):
    record = match_file
    exports = [str(sweep / run / "export") for run in (RUN_A, RUN_B)]
    with serving([*exports, "--matches", str(record), "--no-browser"]) as srv:
        assert srv.runs[0].matched == [1] and srv.runs[1].matched == [0]
        found = api(srv, "export=0&latent=5")["matches"]
        assert found == [{"export": 1, "latent": INVERSE[5], "cosine": pytest.approx(1.0),
                          "direction": "best"}]  # fmt: skip
        back = api(srv, f"export=1&latent={INVERSE[5]}")["matches"]
        assert [(m["export"], m["latent"], m["direction"]) for m in back] == [
            (0, 5, "matched to this")
        ]
        assert api(srv, "export=0&latent=999")["matches"] == []  # no such latent: nothing
        with pytest.raises(urllib.error.HTTPError) as bad:
            api(srv, "export=0&latent=-1")
        assert bad.value.code == 400
    with serving([*exports, "--no-browser"]) as srv:  # no match file: no links
        assert api(srv, "export=0&latent=5")["matches"] == []


def test_matches_file_links_are_clicked_to_the_other_export(sweep, match_file, browser):
    record = match_file
    exports = [str(sweep / run / "export") for run in (RUN_A, RUN_B)]
    with serving([*exports, "--matches", str(record), "--no-browser"]) as srv:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        visit(page, srv, "#/r/0/l/5")
        link = page.locator("ul.cross-matches a.cross-match")
        # two exports served on their own: named by their paths below the folder they share
        assert link.inner_text() == f"{RUN_B}/export #{INVERSE[5]}"
        link.click()
        page.wait_for_selector(f'body[data-ready="#/r/1/l/{INVERSE[5]}"]')
        assert page.locator("ul.cross-matches a.cross-match").inner_text() == f"{RUN_A}/export #5"
        context.close()
        assert not errors, errors


def edited(path: Path, tmp_path: Path, change) -> Path:
    record = json.loads(path.read_text())
    change(record)
    out = tmp_path / f"edited-{len(list(tmp_path.iterdir()))}.json"
    out.write_text(json.dumps(record))
    return out


def test_bad_match_files_are_one_line_and_exit_2(tmp_path, sweep, match_file, capsys):
    good = match_file
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(good.read_text()[:100])
    exports = [str(sweep / run / "export") for run in (RUN_A, RUN_B)]
    cases = [
        ([*exports], tmp_path / "missing.json", "cannot read it"),
        ([*exports], corrupt, "is not valid JSON"),
        ([exports[0]], good, "no served export of its SAE B"),
        # a record of other widths than the served SAEs' (not the same SAEs after all)
        ([*exports], edited(good, tmp_path, lambda r: r["b"].update(n_latents=2 * N)),
         f"SAE B has {2 * N} latents but its export"),
        ([*exports], edited(good, tmp_path, lambda r: r.update(best=r["best"][:-1])),
         f"one value per latent of A \\({N}\\)"),
        ([*exports], edited(good, tmp_path, lambda r: r["best"].__setitem__(0, N)),
         "'best' must hold latents of B"),
        ([*exports], edited(good, tmp_path, lambda r: r.pop("a")), "'a' must give"),
        ([*exports], edited(good, tmp_path, lambda r: r.update(correlation=[0.5])),
         f"'correlation' must list one value per latent of A \\({N}\\)"),
        ([*exports], edited(good, tmp_path, lambda r: r.update(correlation=["x"] * N)),
         "'correlation' must hold numbers or null"),
    ]  # fmt: skip
    for dirs, path, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main(["view", *dirs, "--matches", str(path), "--no-browser"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), (message, err)


def test_a_sweeps_match_summaries_stay_inside_it(tmp_path):
    from saelab.server.runs import match_summaries

    root = tmp_path / "sweep"
    (root / "matches").mkdir(parents=True)
    (tmp_path / "outside.json").write_text("{}")
    good = {"a": "x/resid_post_mlp/1", "b": "<script>", "file": "matches/p.json", "mean_cosine": 1}
    entries = [
        good,
        {**good, "file": "../outside.json"},
        {**good, "file": "/etc/passwd"},
        {**good, "a": None},
        "not an entry",
        {**good, "nested": {"dropped": True}},
    ]
    (root / "matches.json").write_text(json.dumps(entries))
    assert match_summaries(root) == [good, good]  # the nested value dropped, text kept as text
    (root / "matches.json").write_text("[{")
    assert match_summaries(root) == []
