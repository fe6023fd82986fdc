"""saelab's SAELens files open in SAELens itself, unchanged: the hook and model they record,
and SAELens's own encode/decode equal to saelab's. SAELens pins transformer-lens < 4, so it
lives in a venv of its own (`.venv-saelens`, built by scripts/test); the check runs there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from saelab import formats
from saelab.cli import main
from saelab.sae.autoencoder import Autoencoder
from saelab.sae.checkpoints import load
from tests.conftest import write_openai_checkpoint

ROOT = Path(__file__).parent.parent
SAELENS_PYTHON = ROOT / ".venv-saelens" / "bin" / "python"
HOOK, MODEL = "blocks.3.hook_resid_post", "gpt2"


def saelab_io(sae_dir: Path, out: Path) -> None:
    """saelab's latents and reconstruction of fixed inputs, read from the converted files."""
    sae = load(path=str(sae_dir), format="saelens").sae
    x = torch.randn(24, sae.n_inputs, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        latents, info = sae.encode(x)
        recons = sae.decode(latents, info)
    save_file({"x": x, "latents": latents, "recons": recons}, str(out))


def test_converted_files_load_in_saelens_with_their_hook(tmp_path, monkeypatch, capsys):
    if not SAELENS_PYTHON.is_file():
        pytest.fail(f"{SAELENS_PYTHON} is missing: run scripts/test (it builds SAELens's venv)")
    monkeypatch.chdir(tmp_path)
    cases = tmp_path / "cases"
    # OpenAI's TopK (layer-normed inputs) and ReLU files, through `saelab convert --hook`
    for name, k in (("topk", 8), ("relu", None)):
        source = write_openai_checkpoint(tmp_path / f"{name}.pt", 96, 32, k=k, seed=1)
        main(["convert", str(source), str(cases / name / "sae"), "--to", "saelens",
              "--hook", HOOK, "--model", MODEL])  # fmt: skip
    # a JumpReLU SAE in saelab's format, whose sae.json records its hook and model
    base = Autoencoder.random(96, 32, seed=2)
    jumprelu = Autoencoder(96, 32, jumprelu=True)
    with torch.no_grad():
        jumprelu.W_enc.copy_(base.W_enc)
        jumprelu.W_dec.copy_(base.W_dec)
        jumprelu.latent_bias.fill_(0.05)
        jumprelu.threshold.copy_(torch.rand(96, generator=torch.Generator().manual_seed(3)))
    formats.save(jumprelu, tmp_path / "jump", "saelab", {"hook": HOOK, "model": MODEL})
    main(["convert", str(tmp_path / "jump"), str(cases / "jumprelu" / "sae"), "--to", "saelens"])
    capsys.readouterr()
    for case in cases.iterdir():
        saelab_io(case / "sae", case / "io.safetensors")

    result = subprocess.run(
        [str(SAELENS_PYTHON), str(ROOT / "tests" / "saelens_check.py"), str(cases)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(report) == ["jumprelu", "relu", "topk"]
    for name, seen in report.items():
        assert (seen["hook_name"], seen["model_name"]) == (HOOK, MODEL), name
        assert seen["max_abs_diff_latents"] < 1e-4, (name, seen)
        assert seen["max_abs_diff_recons"] < 1e-4, (name, seen)
