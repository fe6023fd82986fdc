"""`saelab view`: the server over raw HTTP, its command line, and the viewer in a real headless
Chromium (Debian's `chromium`, driven by Playwright; `.ci/run` installs it). One server and one
browser serve the whole module."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import re
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saelab.cli import main
from saelab.errors import UserError
from saelab.server import remote
from saelab.zoo import ZOO_DIR
from tests.conftest import openai_reference, serving, visit
from tests.viewer_data import write_export, write_openai_dir

TINY_SAE = ZOO_DIR / "tiny" / "saes" / "topk" / "resid_post_mlp" / "2.pt"
PROMPT = "To be, or not to be, that is the question:\nWhether 'tis nobler"


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("viewer")
    from tests.test_cli import saelab  # a real export of the tiny zoo, once per module

    out = root / "tiny"
    result = saelab("export", "experiment=tiny", f"hydra.run.dir={out}", cwd=root)
    assert result.returncode == 0, result.stderr
    tiny = out
    ablation = root / "ablation"  # loss_diff and kl per top example; few short contexts: fast
    small = ("data.n_ctx=8", "data.batch_size=64", "data.n_tokens=512", "export.n_top=1")
    result = saelab(
        "export", "experiment=tiny", "export.ablation=true", *small, "export.window=[4,3]",
        f"hydra.run.dir={ablation}", cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    adversarial = write_export(root / "adversarial")
    (adversarial / "escape.json").symlink_to(root / "secret.json")
    (root / "secret.json").write_text('{"secret": "s3cr3t-outside-root"}')
    return {
        "tiny": tiny,
        "adversarial": adversarial,
        "openai": write_openai_dir(root / "oai"),
        "cache": root / "cache",
        "ablation": ablation,
    }


@pytest.fixture(scope="module")
def server(dirs):
    argv = [str(dirs[k]) for k in ("tiny", "adversarial", "openai", "ablation")]
    argv += ["experiment=tiny", "--no-browser", "--cache-dir", str(dirs["cache"])]
    with serving(argv) as srv:
        yield srv


def get(server, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path, headers={"Host": f"{host}:{port}", **(headers or {})})
    response = conn.getresponse()
    response.body = response.read()
    return response


def record(directory: Path, latent: int) -> dict:
    return json.loads(gzip.decompress((directory / "latents" / f"{latent}.json.gz").read_bytes()))


# -- raw HTTP ---------------------------------------------------------------------------------
TRAVERSALS = [
    "/data/0/../../etc/passwd",
    "/data/0/../../../../../../etc/passwd",
    "/data/0/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/data/0/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/data/0/%2fetc%2fpasswd",
    "/data/0//etc/passwd",
    "/data/0/..%5c..%5cetc%5cpasswd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/data/1/escape.json",  # a symlink out of the served directory
    "/remote/openai/..%2f..%2f..%2fetc/passwd.json",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_refused(server, path):
    response = get(server, path)
    assert response.status in (403, 404), (path, response.status)
    assert b"root:" not in response.body and b"s3cr3t" not in response.body


def test_served_files_and_headers(server, dirs):
    ok = get(server, "/data/1/manifest.json")
    assert ok.status == 200 and json.loads(ok.body)["schema"].startswith("saelab-export/")
    for response in (ok, get(server, "/"), get(server, "/nope")):
        csp = response.getheader("Content-Security-Policy")
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
    assert get(server, "/data/1/manifest.json", {"Host": "evil.example:80"}).status == 403


def test_latent_records_are_sent_gzipped(server, dirs):
    expected = record(dirs["adversarial"], 0)
    zipped = get(server, "/data/1/latents/0.json", {"Accept-Encoding": "gzip, deflate"})
    assert zipped.getheader("Content-Encoding") == "gzip"
    assert zipped.getheader("Content-Type") == "application/json"
    assert json.loads(gzip.decompress(zipped.body)) == expected
    plain = get(server, "/data/1/latents/0.json")  # a client that cannot take gzip
    assert plain.getheader("Content-Encoding") is None
    assert json.loads(plain.body) == expected


def test_openai_viewer_data_is_fetched_once_and_cached(server, dirs, monkeypatch):
    fetched: list[str] = []
    info = {
        "density": 0.5,
        "mean_act": 2.0,
        "mean_act_squared": 5.0,
        "hist": {"1": 3},
        "top": [],
        "random": [],
    }

    def fake_fetch(url: str) -> bytes:
        fetched.append(url)
        if "missing" in url:
            raise FileNotFoundError(url)
        return json.dumps(info).encode()

    monkeypatch.setattr(remote, "fetch", fake_fetch)
    path = "/remote/openai/gpt2-small/v5_32k/layer_8/resid_post_mlp/atoms/17.json"
    for _ in range(2):
        response = get(server, path)
        assert response.status == 200 and json.loads(response.body) == info
    assert fetched == [
        "az://openaipublic/sparse-autoencoder/viewer/gpt2-small/v5_32k/layer_8/resid_post_mlp"
        "/atoms/17.json"
    ]
    cached = dirs["cache"] / "viewer/gpt2-small/v5_32k/layer_8/resid_post_mlp/atoms/17.json"
    assert json.loads(cached.read_text()) == info
    missing = get(server, "/remote/openai/gpt2-small/missing/atoms/1.json")
    assert missing.status == 502 and "could not fetch" in json.loads(missing.body)["error"]


def test_prompt_api_matches_openais_formulas_on_hugging_face_activations(server):
    """Expected latents from the HF model's hidden states and OpenAI's published SAE forward."""
    from transformers import GPT2LMHeadModel

    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request(
        "POST",
        "/api/prompt",
        json.dumps({"text": PROMPT}),
        {"Host": f"{host}:{port}", "Content-Type": "application/json"},
    )
    answer = json.loads(conn.getresponse().read())
    tokenizer = server.prompt.run.model.tokenizer
    ids = [tokenizer.bos_token_id, *tokenizer(PROMPT, add_special_tokens=False)["input_ids"]]
    assert [t["id"] for t in answer["tokens"]] == ids
    decoded = b"".join(base64.b64decode(t["bytes"]) for t in answer["tokens"][1:])
    assert decoded.decode() == PROMPT

    hf = GPT2LMHeadModel.from_pretrained(ZOO_DIR / "tiny").eval()
    with torch.no_grad():
        hidden = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[3][0]
        latents, _ = openai_reference(torch.load(TINY_SAE, weights_only=True), hidden)
    for token, row in zip(answer["tokens"], latents, strict=True):
        fired = row.nonzero().flatten()
        want = sorted(fired.tolist(), key=lambda j: -row[j].item())[:12]
        got = [j for j, _ in token["latents"]]
        assert set(got) == set(want)
        for j, value in token["latents"]:
            assert value == pytest.approx(row[j].item(), rel=1e-3, abs=1e-3)


def test_prompt_view_reads_the_hook_a_saelens_checkpoint_records(tmp_path):
    """`saelab view DIR sae=auto sae.path=<SAELens dir>` places the SAE as `saelab eval` does
    (no layer= or location=: the hook its cfg.json records), checked against a plain Hugging
    Face forward and SAELens's encoder written out; a checkpoint of another model is refused."""
    from saelab.server.prompt import build_engine
    from saelab.sources.models import random_hf_gpt2
    from tests.conftest import TINY_MODEL, TINY_OVERRIDES
    from tests.test_formats import write_saelens

    directory = write_saelens(tmp_path / "sl", d=64, hook="blocks.1.hook_resid_mid")
    overrides = ["model=random_gpt2", *TINY_OVERRIDES, "sae=auto"]
    engine = build_engine([*overrides, f"sae.path={directory}"])
    assert engine.info["hook"] == "blocks.1.hook_resid_mid"
    answer = engine(PROMPT)
    ids = [t["id"] for t in answer["tokens"]]
    hf = random_hf_gpt2(0, n_ctx=1024, **TINY_MODEL).eval()
    captured = {}
    block = hf.transformer.h[1]
    block.ln_2.register_forward_hook(lambda m, args, out: captured.setdefault("mid", args[0]))
    with torch.no_grad():
        hf(torch.tensor([ids]))
        w = load_file(str(directory / "sae_weights.safetensors"))
        latents = torch.relu((captured["mid"][0] - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    for token, row in zip(answer["tokens"], latents, strict=True):
        want = sorted(row.nonzero().flatten().tolist(), key=lambda j: -row[j].item())[:12]
        assert [j for j, _ in token["latents"]] == want
        for j, value in token["latents"]:
            assert value == pytest.approx(row[j].item(), rel=1e-4, abs=1e-4)

    other = write_saelens(tmp_path / "other", d=64, model="gpt2")
    with pytest.raises(UserError, match="trained on 'gpt2' but the model is 'random_gpt2"):
        build_engine([*overrides, f"sae.path={other}"])


# -- the command line -------------------------------------------------------------------------
def busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/absent"], "no such directory"),
        (["{tmp}"], "is not a saelab export (no manifest.json)"),
        (["{tmp}/partial"], "the export is incomplete"),
        (["{tmp}/bad_manifest"], "not valid JSON"),
        (["{oai}", "--port", "{busy}"], "is in use"),
        (["{oai}", "experiment=nope"], "experiment"),
        (["{oai}", "--port", "70000"], "'70000' is not a port"),
        (["{tmp}/list_manifest"], "is not a saelab export manifest"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, dirs, capsys):
    (tmp_path / "partial" / "latents").mkdir(parents=True)
    (tmp_path / "bad_manifest").mkdir()
    (tmp_path / "bad_manifest" / "manifest.json").write_text("{")
    (tmp_path / "list_manifest").mkdir()
    (tmp_path / "list_manifest" / "manifest.json").write_text("[1, 2]")
    sock = busy_port()
    fill = {"tmp": tmp_path, "oai": dirs["openai"], "busy": sock.getsockname()[1]}
    with pytest.raises(SystemExit) as exit_info:
        main(["view", *(a.format(**fill) for a in args), "--no-browser"])
    sock.close()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saelab: error: ") and message in err[0], err


# -- the viewer in Chromium -------------------------------------------------------------------
def test_latent_page_shows_histogram_statistics_and_highlighted_examples(page, server, dirs):
    latents = json.loads((dirs["tiny"] / "latents.json").read_text())
    latent = max(range(len(latents["density"])), key=lambda i: latents["density"][i])
    data = record(dirs["tiny"], latent)
    visit(page, server, f"#/r/0/l/{latent}")
    assert page.locator("svg.hist rect.bar").count() == sum(c > 0 for c in data["hist"]["counts"])
    stats = page.locator("table.stats th")
    assert stats.count() >= 5
    for i in range(stats.count()):  # every number is explained
        assert len(stats.nth(i).get_attribute("title") or "") > 10
    density = page.locator("table.stats tr", has_text="density").locator("td.num").first
    assert float(density.inner_text()) == pytest.approx(data["density"], rel=1e-2)
    top = page.locator("section", has_text="Top activations").locator(".example-row")
    assert top.count() == min(10, len(data["top"]))
    for n, example in enumerate(data["top"][: top.count()]):
        marked = top.nth(n).locator(".tok.sel")
        assert marked.count() == 1
        assert float(marked.get_attribute("data-act")) == pytest.approx(
            example["acts"][example["idx"]]
        )
        assert "activation" in marked.get_attribute("title")
        assert marked.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    kind = page.locator(".interval-kind").inner_text()
    assert "quantile intervals of a random sample" in kind
    bins = data["intervals"]["bins"]
    assert page.locator(".interval").count() == len(bins)


def test_latent_page_shows_ablation_effects_on_hover_and_colours_by_them(page, server, dirs):
    n_latents = len(json.loads((dirs["ablation"] / "latents.json").read_text())["density"])
    tops = {i: record(dirs["ablation"], i)["top"] for i in range(n_latents)}
    latent, example = max(
        ((i, top[0]) for i, top in tops.items() if top),
        key=lambda pair: max(map(abs, pair[1]["loss_diff"])),
    )
    q = max(range(len(example["tokens"])), key=lambda i: abs(example["loss_diff"][i]))
    loss, kl = example["loss_diff"][q], example["kl"][q]
    assert q > example["idx"] and loss != 0  # only the tokens after the selected one change
    visit(page, server, f"#/r/3/l/{latent}")
    row = page.locator("section", has_text="Top activations").locator(".example-row").first
    token = row.locator(".tok").nth(q)
    token.hover()
    title = token.get_attribute("title")
    assert "\nactivation " in title  # the activation, as before, then the ablation effects
    shown = re.search(r"loss change with latent removed ([-+][^ ]+|0) nats\nKL ([^ ]+) nats", title)
    assert shown, title
    assert float(shown[1]) == pytest.approx(loss, rel=1e-2)
    assert float(shown[2]) == pytest.approx(kl, rel=1e-2, abs=1e-9)
    assert float(token.get_attribute("data-loss-diff")) == pytest.approx(loss)

    def colour(locator) -> str:
        return locator.evaluate("e => getComputedStyle(e).backgroundColor")

    selected = row.locator(".tok.sel")
    assert colour(selected).startswith("rgba(234, 88, 12")  # by activation: it fires there
    page.check("#by-loss")
    assert colour(token).startswith("rgba(37, 99, 235" if loss > 0 else "rgba(220, 38, 38")
    assert colour(selected) == "rgba(0, 0, 0, 0)"  # no loss change at the removal itself
    page.uncheck("#by-loss")
    assert colour(selected).startswith("rgba(234, 88, 12")
    density = json.loads((dirs["tiny"] / "latents.json").read_text())["density"]
    dense = max(range(len(density)), key=density.__getitem__)
    visit(page, server, f"#/r/0/l/{dense}")  # an export without ablation: no toggle, no loss
    assert page.locator(".tok").count() > 0 and page.locator("#by-loss").count() == 0
    assert page.locator('.tok[title*="loss change"]').count() == 0


def test_search_by_token_finds_a_latent_that_fires_on_it(page, server, dirs):
    index = json.loads((dirs["tiny"] / "search.json").read_text())
    vocab = json.loads((dirs["tiny"] / "vocab.json").read_text())
    strings = vocab["strings"]
    token = max(
        (int(t) for t in index if strings[int(t)].strip().isalpha()),
        key=lambda t: index[str(t)][0][1],
    )
    latent = index[str(token)][0][0]
    assert any(e["tokens"][e["idx"]] == token for e in record(dirs["tiny"], latent)["top"])
    visit(page, server, "#/r/0")
    page.fill("#search", strings[token])
    page.click("#search + button")
    link = page.locator(f'.search-results a[href="#/r/0/l/{latent}"]')
    link.first.click()
    page.wait_for_selector(f'body[data-ready="#/r/0/l/{latent}"]')
    marked = page.locator(".tok.sel").all_inner_texts()
    assert strings[token].replace("\n", "↵") in marked


def test_latent_list_dead_dense_jump_and_random(page, server):
    visit(page, server, "#/r/1")
    page.select_option("select", "dead")
    assert page.locator("table.list tbody a").all_inner_texts() == ["#11"]
    page.select_option("select", "dense")
    assert page.locator("table.list tbody a").all_inner_texts() == ["#0"]
    page.select_option("select", "all")
    page.click("table.list th >> text=mean act")  # descending mean activation: 0 first
    assert page.locator("table.list tbody a").first.inner_text() == "#0"
    page.fill("#jump", "5")
    page.click("#jump + button")
    page.wait_for_selector('body[data-ready="#/r/1/l/5"]')
    page.go_back()
    page.wait_for_selector('body[data-ready="#/r/1"]')
    page.click("#random")
    page.wait_for_selector('body[data-ready^="#/r/1/l/"]')


def test_prompt_view_lists_latents_for_typed_text(page, server):
    visit(page, server, "#/prompt")
    page.fill("#prompt-text", PROMPT)
    page.click("#prompt-run")
    page.wait_for_selector(".prompt-table")
    rows = page.locator(".prompt-table tbody tr")
    tokenizer = server.prompt.run.model.tokenizer
    assert rows.count() == 1 + len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    assert "excluded" in rows.nth(0).inner_text()
    for i in range(1, rows.count()):
        assert rows.nth(i).locator(".latent-link").count() >= 1
    assert rows.nth(14).locator(".tok-chip").inner_text() == "↵"  # the newline, visible
    links = page.locator(".prompt-table a.latent-link")
    if server.runs[0].manifest["sae"]["sha256"] == server.prompt_info["sha256"]:
        first = links.first.get_attribute("href")
        assert first.startswith("#/r/0/l/")
        links.first.click()
        page.wait_for_selector(f'body[data-ready="{first}"]')


def test_openai_format_file_renders(page, server):
    visit(page, server, "#/r/2/l/3")
    assert page.locator("h1").inner_text() == "Feature 3"
    assert page.locator("svg.hist rect.bar").count() == 4  # non-zero bins 0, 3, 7, 21
    assert (
        page.locator("table.stats tr", has_text="density").locator("td.num").inner_text()
        == "0.0123"
    )
    top = page.locator("section", has_text="Top activations").locator(".example-row")
    assert top.count() == 2
    assert top.first.locator(".tok.sel").inner_text() == " fox"
    assert "↵" in top.first.inner_text()
    assert page.locator("#by-loss").count() == 0  # no ablation effects in this file
    visit(page, server, "#/r/2/l/17")  # theirs, one token early, shown on the token they affect
    tokens = page.locator(".example-row").first.locator(".tok")
    titles = tokens.evaluate_all("spans => spans.map(s => s.title)")
    assert "loss change with latent removed 0 nats" in titles[2]
    assert "removed +0.5 nats\nKL 0.1 nats" in titles[3]
    assert "removed -0.25 nats\nKL 0.2 nats" in titles[4]


def test_remote_openai_feature_renders_through_the_proxy(page, server, monkeypatch):
    info = {
        "density": 0.25,
        "mean_act": 2.0,
        "mean_act_squared": 5.0,
        "hist": {"2": 9},
        "top": [
            {
                "tokens": ["a", " b"],
                "token_ints": [1, 2],
                "acts": [0, 3.0],
                "act": 3.0,
                "idx": 1,
                "doc_id": 0,
                "density": 0.25,
            }
        ],
        "random": [],
    }
    monkeypatch.setattr(remote, "fetch", lambda url: json.dumps(info).encode())
    visit(page, server, "#/remote/gpt2-small/v5_32k/layer_6/resid_delta_mlp/5")
    assert page.locator(".tok.sel").inner_text() == " b"


def test_token_text_with_script_is_shown_as_text(page, server):
    visit(page, server, "#/r/1/l/0")
    marked = page.locator(".tok.sel").first
    assert marked.inner_text() == "<script>alert(1)</script>"
    assert page.locator("main script, main img").count() == 0
    assert page.evaluate("typeof window.alert") == "function" and not page.dialogs
    tokens = page.locator(".example-row").first.locator(".tok")
    texts = tokens.all_inner_texts()
    assert "↵" in texts and "<img src=x onerror=alert(2)>" in texts
    # the euro sign's bytes are split over two tokens: it appears whole at the second
    assert "€!" in texts and "€" not in "".join(texts).replace("€!", "")
    logits = page.locator("table.logits").first.inner_text()
    assert "<script>alert(1)</script>" in logits
