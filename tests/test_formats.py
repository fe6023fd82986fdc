"""Checkpoint formats: files written here in each library's documented layout, loaded by
saelab, and checked against that library's formulas written out in this file.

SAELens (sae_lens/saes/*.py): `sae_in = norm_in(x) - b_dec * apply_b_dec_to_input`,
`pre = sae_in @ W_enc + b_enc`, standard `relu(pre)`, topk `relu` of the k largest,
jumprelu `relu(pre) * (pre > threshold)`, `out = norm_out(acts @ W_dec + b_dec)`; layer norm
with the unbiased std + 1e-5; expected_average_only_in scales inputs by s and outputs by 1/s.
sparsify (sparsify/sparse_coder.py): `topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias))`,
`acts @ W_dec + b_dec`. Gemma Scope: `pre = x @ W_enc + b_enc`, `relu(pre) * (pre > threshold)`,
`acts @ W_dec + b_dec`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saelab import formats
from saelab.cli import main
from saelab.sae import checkpoints
from tests.conftest import (
    TINY_OVERRIDES,
    openai_reference,
    openai_state_dict,
    write_openai_checkpoint,
)

D, N, K = 16, 48, 4
G = torch.Generator().manual_seed(0)


def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=G)


# -- writers: each library's on-disk layout, by hand ------------------------------------------
def write_saelens(
    directory: Path,
    architecture: str = "standard",
    d: int = D,
    n: int = N,
    normalize: str = "none",
    apply_b_dec: bool = True,
    hook: str | None = "blocks.1.hook_resid_post",
    model: str | None = "random_gpt2(seed=0)",
    scaling_factor: float | None = None,
    threshold: bool | None = None,
    legacy: bool = False,
    **cfg_extra,
) -> Path:
    """SAELens 6's `cfg.json` (hook and model under `metadata`; top level if `legacy`)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        "W_enc": randn(d, n, scale=0.3),
        "b_enc": randn(n, scale=0.1),
        "W_dec": randn(n, d, scale=0.3),
        "b_dec": randn(d, scale=0.5),
    }
    if threshold if threshold is not None else architecture == "jumprelu":
        tensors["threshold"] = torch.rand(n, generator=G) * 0.3
    save_file(tensors, str(directory / "sae_weights.safetensors"))
    cfg = {
        "architecture": architecture,
        "d_in": d,
        "d_sae": n,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": normalize,
        "reshape_activations": "none",
        **({"k": K} if architecture in ("topk", "batchtopk") else {}),
        **cfg_extra,
    }
    names = {"hook_name": hook, "model_name": model}
    cfg.update(names) if legacy else cfg.update(metadata=names)
    (directory / "cfg.json").write_text(json.dumps(cfg))
    if scaling_factor is not None:
        (directory / "activation_scaler.json").write_text(
            json.dumps({"scaling_factor": scaling_factor})
        )
    return directory


def saelens_reference(directory: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_file

    cfg = json.loads((directory / "cfg.json").read_text())
    t = load_file(str(directory / "sae_weights.safetensors"))
    norm = cfg["normalize_activations"]
    if norm == "layer_norm":
        mu = x.mean(-1, keepdim=True)
        std = (x - mu).std(-1, keepdim=True)
        x = (x - mu) / (std + 1e-5)
    elif norm == "expected_average_only_in":
        scale = json.loads((directory / "activation_scaler.json").read_text())["scaling_factor"]
        x = x * scale
    sae_in = x - t["b_dec"] * cfg["apply_b_dec_to_input"]
    pre = sae_in @ t["W_enc"] + t["b_enc"]
    if "threshold" in t:
        acts = pre.relu() * (pre > t["threshold"])
    elif cfg["architecture"] in ("topk", "batchtopk"):
        top = pre.topk(cfg["k"], dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    else:
        acts = pre.relu()
    out = acts @ t["W_dec"] + t["b_dec"]
    if norm == "layer_norm":
        out = out * std + mu
    elif norm == "expected_average_only_in":
        out = out / scale
    return acts, out


def write_sparsify(directory: Path, d: int = D, n: int = N, **cfg_extra) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        "encoder.weight": randn(n, d, scale=0.3),
        "encoder.bias": randn(n, scale=0.1),
        "W_dec": randn(n, d, scale=0.3),
        "b_dec": randn(d, scale=0.5),
    }
    save_file(tensors, str(directory / "sae.safetensors"))
    cfg = {
        "activation": "topk",
        "expansion_factor": n // d,
        "normalize_decoder": True,
        "num_latents": n,
        "k": K,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d,
        **cfg_extra,
    }
    (directory / "cfg.json").write_text(json.dumps(cfg))
    return directory


def sparsify_reference(directory: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_file

    t = load_file(str(directory / "sae.safetensors"))
    k = json.loads((directory / "cfg.json").read_text())["k"]
    pre = ((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"]).relu()
    top = pre.topk(k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    return acts, top.values.unsqueeze(-1).mul(t["W_dec"][top.indices]).sum(-2) + t["b_dec"]


def write_gemmascope(path: Path, d: int = D, n: int = N, drop: str | None = None) -> Path:
    arrays = {
        "W_enc": randn(d, n, scale=0.3).numpy(),
        "W_dec": randn(n, d, scale=0.3).numpy(),
        "b_enc": randn(n, scale=0.1).numpy(),
        "b_dec": randn(d, scale=0.5).numpy(),
        "threshold": (torch.rand(n, generator=G) * 0.3).numpy(),
    }
    arrays.pop(drop, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def gemmascope_reference(path: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    pre = x @ p["W_enc"] + p["b_enc"]
    acts = pre.relu() * (pre > p["threshold"])
    return acts, acts @ p["W_dec"] + p["b_dec"]


def inputs(d: int = D) -> torch.Tensor:
    return 2 * torch.randn(64, d, generator=torch.Generator().manual_seed(1)) + 0.5


def check_against(sae, reference: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> None:
    latents, recons = reference
    assert (latents > 0).any() and (latents == 0).any()  # not a comparison of zeros
    got, info = sae.encode(x)
    torch.testing.assert_close(got, latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(got, info), recons, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae(x)[2], recons, atol=1e-4, rtol=1e-4)
    if sae.k is not None:  # the sparse TopK path, as evaluation uses it
        sparse, info = sae.encode_sparse(x)
        torch.testing.assert_close(sparse.to_dense(), latents, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.decode_sparse(sparse, info), recons, atol=1e-4, rtol=1e-4)


# -- each format against its library's formulas ------------------------------------------------
SAELENS_CASES = [
    dict(architecture="standard"),
    dict(architecture="topk"),
    dict(architecture="batchtopk"),  # no threshold: TopK with its k
    dict(architecture="batchtopk", threshold=True),  # as SAELens saves it: JumpReLU
    dict(architecture="jumprelu"),
    dict(architecture="standard", normalize="layer_norm"),
    dict(architecture="topk", normalize="layer_norm"),
    dict(architecture="jumprelu", normalize="expected_average_only_in", scaling_factor=0.37),
    dict(architecture="topk", apply_b_dec=False),
    dict(
        architecture="jumprelu",
        apply_b_dec=False,
        normalize="expected_average_only_in",
        scaling_factor=2.5,
    ),
    dict(architecture="standard", legacy=True),
    dict(architecture="standard", activation_fn_str="topk", activation_fn_kwargs={"k": K}),
]


@pytest.mark.parametrize("case", SAELENS_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_saelens_matches_its_formulas(tmp_path, case):
    directory = write_saelens(tmp_path / "sae", **case)
    checkpoint = formats.read(directory)
    assert checkpoint.format == "saelens"
    assert checkpoint.hook == "blocks.1.hook_resid_post"
    assert checkpoint.model_name == "random_gpt2(seed=0)"
    x = inputs()
    if case.get("activation_fn_str") == "topk":  # SAELens 5: topk as standard + its kwargs
        cfg = json.loads((directory / "cfg.json").read_text())
        cfg.update(architecture="topk", k=K)
        (directory / "cfg.json").write_text(json.dumps(cfg))  # the reference reads it as topk
    check_against(checkpoint.sae, saelens_reference(directory, x), x)


def test_saelens_without_b_dec_on_input_is_the_same_sae_with_a_folded_bias(tmp_path):
    """apply_b_dec_to_input=false: pre_bias = b_dec, latent_bias = b_enc + b_dec @ W_enc."""
    from safetensors.torch import load_file

    directory = write_saelens(tmp_path / "sae", "topk", apply_b_dec=False)
    t = load_file(str(directory / "sae_weights.safetensors"))
    sae = formats.read(directory).sae
    torch.testing.assert_close(sae.pre_bias.data, t["b_dec"])
    folded = t["b_enc"] + torch.einsum("d,dn->n", t["b_dec"], t["W_enc"])
    torch.testing.assert_close(sae.latent_bias.data, folded)


def test_sparsify_matches_its_formulas(tmp_path):
    directory = write_sparsify(tmp_path / "run" / "h.1")
    checkpoint = formats.read(directory)
    assert checkpoint.format == "sparsify" and checkpoint.sae.k == K
    assert checkpoint.hook == "blocks.1.hook_resid_post"  # from the hookpoint's name
    x = inputs()
    check_against(checkpoint.sae, sparsify_reference(directory, x), x)


@pytest.mark.parametrize(
    ("hookpoint", "hook"),
    [
        ("h.3", "blocks.3.hook_resid_post"),
        ("h.3.attn", "blocks.3.hook_attn_out"),
        ("h.3.mlp", "blocks.3.hook_mlp_out"),
        ("h.3.mlp.act", "blocks.3.mlp.hook_post"),
        ("transformer.h.0.mlp", "blocks.0.hook_mlp_out"),
        ("embed_tokens", None),
    ],
)
def test_sparsify_hookpoints_name_their_hook(hookpoint, hook):
    from saelab.formats.sparsify import hook_of

    assert hook_of(hookpoint) == hook


def test_sparsify_multi_hook_layout_picks_a_subfolder(tmp_path):
    run = tmp_path / "run"
    for name in ("h.0", "h.1.mlp"):
        write_sparsify(run / name)
    assert formats.detect(run) == "sparsify"
    loaded = checkpoints.load(path=str(run), subfolder="h.1.mlp")
    assert loaded.hook == "blocks.1.hook_mlp_out" and loaded.format == "sparsify"
    x = inputs()
    check_against(loaded.sae, sparsify_reference(run / "h.1.mlp", x), x)


@pytest.mark.parametrize("as_directory", [False, True])
def test_gemmascope_matches_its_formulas(tmp_path, as_directory):
    path = write_gemmascope(tmp_path / "layer_1" / "params.npz")
    checkpoint = formats.read(path.parent if as_directory else path)
    assert checkpoint.format == "gemmascope" and checkpoint.sae.jumprelu
    x = inputs()
    check_against(checkpoint.sae, gemmascope_reference(path, x), x)


@pytest.mark.parametrize("variant", ["relu_without_activation_key", "topk", "topk_keys"])
def test_openai_files_detected_and_loaded(tmp_path, variant):
    sd = openai_state_dict(
        N, D, k=None if variant.startswith("relu") else K, activation_keys=variant.endswith("keys")
    )
    if variant.startswith("relu"):
        del sd["activation"], sd["activation_state_dict"]
    torch.save(sd, tmp_path / "sae.pt")
    checkpoint = formats.read(tmp_path / "sae.pt")
    assert checkpoint.format == "openai" and checkpoint.hook is None
    x = inputs()
    check_against(checkpoint.sae, openai_reference(sd, x), x)


# -- conversion --------------------------------------------------------------------------------
def sources(tmp_path: Path) -> dict[str, Path]:
    """One SAE of each kind, by name."""
    tmp_path.mkdir(parents=True)
    return {
        "openai_topk": write_openai_checkpoint(tmp_path / "o.pt", N, D, k=K),
        "saelens_jumprelu_scaled": write_saelens(
            tmp_path / "sl",
            "jumprelu",
            normalize="expected_average_only_in",
            scaling_factor=0.5,
            apply_b_dec=False,
        ),
        "saelens_topk_ln": write_saelens(tmp_path / "sl2", "topk", normalize="layer_norm"),
        "sparsify": write_sparsify(tmp_path / "sp" / "h.1"),
        "gemmascope": write_gemmascope(tmp_path / "gs" / "params.npz"),
    }


def reference(name: str, path: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if name.startswith("openai"):
        return openai_reference(torch.load(path, weights_only=True), x)
    if name.startswith("saelens"):
        return saelens_reference(path, x)
    return (sparsify_reference if name == "sparsify" else gemmascope_reference)(path, x)


@pytest.mark.parametrize("target", ["saelab", "saelens", "openai"])
def test_convert_round_trips_preserve_outputs(tmp_path, capsys, target):
    x = inputs()
    for name, source in sources(tmp_path / "in").items():
        expressible = target != "openai" or name in ("openai_topk", "saelens_topk_ln")
        out = tmp_path / "out" / (f"{name}.pt" if target == "openai" else name)
        if not expressible:
            with pytest.raises(SystemExit) as exit_info:
                main(["convert", str(source), str(out), "--to", target])
            assert exit_info.value.code == 2 and not out.exists()
            assert "cannot express" in capsys.readouterr().err
            continue
        main(["convert", str(source), str(out), "--to", target])
        loaded = checkpoints.load(path=str(out))
        assert loaded.format == target
        check_against(loaded.sae, reference(name, source, x), x)
        if target != "openai" and name.startswith(("saelens", "sparsify")):
            assert loaded.hook == "blocks.1.hook_resid_post"  # the hook travels along
        assert not list(out.parent.glob(".*.partial"))  # atomic: no temp files left


def test_converted_saelens_is_read_by_the_saelens_formulas(tmp_path):
    """saelab's SAELens writer, checked by the SAELens reference (not by saelab's reader)."""
    source = write_gemmascope(tmp_path / "params.npz")
    main(["convert", str(source), str(tmp_path / "sl"), "--to", "saelens"])
    x = inputs()
    expected = gemmascope_reference(source, x)
    got = saelens_reference(tmp_path / "sl", x)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1], atol=1e-4, rtol=1e-4)


# -- sources: Hugging Face -------------------------------------------------------------------
def test_hugging_face_repo_through_snapshot_download(tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    write_saelens(snapshot / "blocks.1.hook_resid_post", "topk")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = checkpoints.load(
        repo_id="someone/gpt2-saes",
        subfolder="blocks.1.hook_resid_post",
        cache_dir=str(tmp_path / "cache"),
    )
    assert loaded.format == "saelens" and loaded.hook == "blocks.1.hook_resid_post"
    assert loaded.source == "hf://someone/gpt2-saes/blocks.1.hook_resid_post"
    ((repo, kwargs),) = calls
    assert repo == "someone/gpt2-saes"
    assert kwargs["allow_patterns"] == ["blocks.1.hook_resid_post/*"]
    assert kwargs["cache_dir"] == tmp_path / "cache" / "huggingface"


def test_hugging_face_offline_is_one_clear_error(tmp_path, monkeypatch):
    """The real `snapshot_download`, with the hub unreachable (offline mode, empty cache)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(checkpoints.UserError) as error:
        checkpoints.load(
            repo_id="someone/gpt2-saes", subfolder="x", cache_dir=str(tmp_path / "cache")
        )
    message = str(error.value)
    assert "could not download someone/gpt2-saes from the Hugging Face hub" in message
    assert "offline?" in message and "\n" not in message


# -- end to end: the hook from the checkpoint, and a sweep mixing formats ----------------------
DATA = ["data=random_tokens", "data.n_tokens=320", "data.batch_size=4", "data.n_ctx=16"]
COMMON = ["model=random_gpt2", *TINY_OVERRIDES, *DATA, "logger=none"]


def test_eval_takes_the_hook_from_the_checkpoint(tmp_path, monkeypatch):
    directory = write_saelens(tmp_path / "sl", "jumprelu", d=64, hook="blocks.0.hook_resid_pre")
    monkeypatch.chdir(tmp_path)
    main(
        [
            "eval",
            *COMMON,
            "sae=auto",
            f"sae.path={directory}",
            "evals=[reconstruction]",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    provenance = json.loads((tmp_path / "run" / "metrics.json").read_text())["provenance"]
    assert provenance["hook"] == "blocks.0.hook_resid_pre"
    assert (provenance["location"], provenance["layer"]) == ("resid_pre", 0)
    assert provenance["sae_format"] == "saelens" and provenance["sae_activation"] == "JumpReLU"


def test_sweep_mixing_four_formats_gives_one_summary(tmp_path):
    saes = {
        "openai": (
            write_openai_checkpoint(tmp_path / "o.pt", 128, 64, k=8),
            "openai",
            ["location=resid_post_mlp", "layer=1"],
        ),
        # SAELens records its hook: no location or layer given
        "saelens": (
            write_saelens(tmp_path / "sl", "jumprelu", d=64, n=128, hook="blocks.0.hook_resid_pre"),
            "saelens",
            [],
        ),
        # one hook of a multi-hook sparsify run, its hook from the subfolder's name
        "sparsify": (
            write_sparsify(tmp_path / "sp" / "h.1.mlp", d=64, n=128).parent,
            "sparsify",
            ["subfolder=h.1.mlp"],
        ),
        "gemmascope": (
            write_gemmascope(tmp_path / "gs" / "params.npz", d=64, n=128),
            "gemmascope",
            ["location=resid_post_attn", "layer=0"],
        ),
    }
    overrides = ["sae=none"]
    for name, (path, fmt, extra) in saes.items():
        entry = f"+sweep.saes.{name}"
        overrides += [
            f"{entry}._target_=saelab.sae.checkpoints.Files",
            f"{entry}.path={path}",
            f"{entry}.format={fmt}",
            *(f"{entry}.{e}" for e in extra),
        ]
    root = tmp_path / "sweep"
    main(["sweep", *COMMON, *overrides, f"hydra.run.dir={root}"])
    rows = {row["run"]: row for row in json.loads((root / "sweep.json").read_text())}
    assert sorted(rows) == [
        "gemmascope/resid_post_attn/0",
        "openai/resid_post_mlp/1",
        "saelens/resid_pre/0",
        "sparsify/resid_delta_mlp/1",
    ]
    for row in rows.values():
        assert row["reconstruction/nmse"] >= 0 and row["downstream/kl"] >= 0
    formats_seen = {
        json.loads((root / run / "metrics.json").read_text())["provenance"]["sae_format"]
        for run in rows
    }
    assert formats_seen == {"openai", "saelens", "sparsify", "gemmascope"}


# -- every bad input: one line, exit 2 -------------------------------------------------------
def corrupt_saelens(directory: Path, name: str, value: torch.Tensor) -> Path:
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "sae_weights.safetensors"))
    tensors[name] = value
    save_file(tensors, str(directory / "sae_weights.safetensors"))
    return directory


def bad_format_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    """(overrides, the line's pattern); the SAELens files record blocks.1.hook_resid_post."""
    tmp.mkdir()
    openai_pt = write_openai_checkpoint(tmp / "o.pt", N, 64, k=K)
    saelens = write_saelens(tmp / "sl", d=64)
    sparsify_run = tmp / "sp"
    for name in ("h.0", "h.1"):
        write_sparsify(sparsify_run / name, d=64)
    gemma = write_gemmascope(tmp / "gs" / "params.npz", d=64)
    nan = corrupt_saelens(write_saelens(tmp / "nan", d=64), "W_enc", torch.full((64, N), torch.nan))
    shape = corrupt_saelens(write_saelens(tmp / "shape", d=64), "W_dec", torch.zeros(N, 63))
    int_bias = torch.zeros(64, dtype=torch.int32)
    ints = corrupt_saelens(write_saelens(tmp / "int", d=64), "b_dec", int_bias)
    truncated = tmp / "trunc" / "params.npz"
    truncated.parent.mkdir()
    truncated.write_bytes(gemma.read_bytes()[:500])
    unknown = tmp / "unknown"
    unknown.mkdir()
    (unknown / "weights.bin").write_bytes(b"\0" * 16)
    bad_json = write_saelens(tmp / "badjson", d=64)
    (bad_json / "cfg.json").write_text("{not json")

    def sae(path: Path, fmt: str = "auto", *extra: str) -> list[str]:
        return [f"sae={fmt}", f"sae.path={path}", *extra]

    return [
        (sae(saelens, "openai"), "is not in OpenAI's format; it looks like SAELens's"),
        (sae(openai_pt, "saelens"), "is not in SAELens's format; it looks like OpenAI's"),
        (sae(sparsify_run, "gemmascope"), "not in Gemma Scope's format; it looks like sparsify's"),
        (sae(gemma, "sparsify"), "is not in sparsify's format; it looks like Gemma Scope's"),
        (sae(gemma.parent, "saelab"), "is not in saelab's format; it looks like Gemma Scope's"),
        (sae(unknown), "cannot tell the SAE format"),
        (sae(tmp / "nowhere"), "SAE checkpoint not found"),
        (sae(nan), "W_enc has 3072 non-finite value"),
        (sae(shape), "W_dec has shape \\(48, 63\\), expected \\(48, 64\\)"),
        (sae(ints), "b_dec has dtype torch.int32, expected a float dtype"),
        (sae(truncated), "truncated or corrupt"),
        (sae(bad_json), "cfg.json is not valid JSON"),
        (sae(write_saelens(tmp / "gated", "gated", d=64)), "architecture 'gated' is not supported"),
        (
            sae(write_saelens(tmp / "cnr", d=64, normalize="constant_norm_rescale")),
            "normalize_activations 'constant_norm_rescale' unsupported",
        ),
        (
            sae(write_saelens(tmp / "ea", d=64, normalize="expected_average_only_in")),
            "expected_average_only_in needs its scaling factor",
        ),
        (
            sae(write_saelens(tmp / "jr", "jumprelu", d=64, threshold=False)),
            "a jumprelu SAE needs its threshold",
        ),
        (
            sae(write_saelens(tmp / "k", "topk", d=64, k=0)),
            "k=0 must be an integer from 1 to n_latents=48",
        ),
        (sae(write_saelens(tmp / "dz", d=64, d_in="64")), "d_in must be an integer"),
        (sae(saelens, "auto", "layer=0"), "trained at blocks.1.hook_resid_post .* layer=0 was"),
        (sae(saelens, "auto", "location=resid_pre"), "trained at blocks.1.hook_resid_post"),
        (
            sae(write_saelens(tmp / "gpt2", d=64, model="gpt2-small")),
            "trained on 'gpt2-small' but the model is 'random_gpt2\\(seed=0\\)'.*check_model=false",
        ),
        (
            sae(write_saelens(tmp / "z", d=64, hook="blocks.1.attn.hook_z")),
            "hook 'blocks.1.attn.hook_z', which saelab does not know",
        ),
        (sae(write_saelens(tmp / "narrow", d=32)), "reads 32-wide inputs but blocks.1"),
        (sae(sparsify_run), "SAE per hook: choose one with sae.subfolder= \\(h.0, h.1"),
        (sae(sparsify_run, "auto", "sae.subfolder=h.7"), "not found: .*h.7"),
        (sae(write_sparsify(tmp / "gm", d=64, activation="groupmax")), "activation 'groupmax'"),
        (sae(write_sparsify(tmp / "tc", d=64, transcode=True)), "transcode=true is not an SAE"),
        (
            sae(write_gemmascope(tmp / "nt" / "params.npz", d=64, drop="threshold")),
            "threshold is missing",
        ),
        (["sae=auto"], "needs a checkpoint: add sae.path="),
        (["sae=auto", "sae.format=safetensors", f"sae.path={saelens}"], "unknown SAE format"),
    ]


def test_bad_format_inputs_exit_2_with_one_clear_line(monkeypatch, tmp_path, capsys):
    import re

    from tests.test_cli import run_in_process

    for overrides, expected in bad_format_inputs(tmp_path / "files"):
        line = run_in_process(["eval", *COMMON, *overrides], monkeypatch, tmp_path, capsys)
        assert re.search(expected, line), (overrides, line)
    assert not list(tmp_path.rglob("metrics.json"))


def test_bad_convert_inputs_exit_2_with_one_clear_line(monkeypatch, tmp_path, capsys):
    import re

    from tests.test_cli import run_in_process

    gemma = write_gemmascope(tmp_path / "gs" / "params.npz")
    relu_ln = tmp_path / "relu_ln"
    formats.save(
        formats.read(write_saelens(tmp_path / "sl", normalize="layer_norm")).sae, relu_ln, "saelab"
    )
    cases = [
        ([str(gemma), str(tmp_path / "o.pt"), "--to", "openai"], "cannot express this JumpReLU"),
        ([str(relu_ln), str(tmp_path / "o.pt"), "--to", "openai"], "this reads layer-normed"),
        ([str(gemma), str(tmp_path / "x"), "--to", "gemmascope"], "convert: argument --to"),
        ([str(gemma), str(tmp_path / "x")], "convert: the following arguments are required: --to"),
        ([str(tmp_path / "none.pt"), str(tmp_path / "x"), "--to", "saelab"], "not found"),
        (
            [str(gemma), str(tmp_path / "x"), "--to", "saelab", "--from", "saelens"],
            "it looks like Gemma Scope's",
        ),
        ([str(gemma), str(gemma), "--to", "saelab"], "params.npz exists; give a new path"),
        ([str(gemma), "/proc/saelab_out", "--to", "saelab"], "cannot write /proc/saelab_out"),
    ]
    for args, expected in cases:
        line = run_in_process(["convert", *args], monkeypatch, tmp_path, capsys)
        assert re.search(expected, line), (args, line)
    assert not (tmp_path / "o.pt").exists() and not (tmp_path / "x").exists()
