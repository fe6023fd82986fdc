"""The bundled tiny zoo model loads offline, beats its bigram baseline, and retrains exactly."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "saelab" / "zoo" / "tiny"
VAL = ROOT / "saelab" / "zoo" / "shakespeare" / "val.txt.gz"
TRAIN_SCRIPT = ROOT / "experiments" / "tiny_zoo" / "train_model.py"


def test_tiny_model_beats_bigram_on_validation() -> None:
    model = GPT2LMHeadModel.from_pretrained(TINY, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(TINY, local_files_only=True)
    with gzip.open(VAL, "rt", encoding="ascii") as f:
        stream = torch.tensor(tokenizer(f.read(), verbose=False)["input_ids"])
    # 32 windows (4096 target tokens) spread evenly over all five validation works.
    starts = torch.linspace(0, len(stream) - 128, 32).long()
    targets = torch.stack([stream[s : s + 128] for s in starts.tolist()])
    inputs = torch.cat([torch.full((32, 1), tokenizer.bos_token_id), targets[:, :-1]], dim=1)
    with torch.no_grad():
        ce = F.cross_entropy(model(inputs).logits.flatten(0, 1), targets.flatten()).item()

    baselines = json.loads((TINY / "metrics.json").read_text())["val"]
    bigram = baselines["bigram_witten_bell"]["nats_per_token"]
    assert ce < bigram - 0.25, (ce, bigram)


def _train(out: Path) -> dict[str, torch.Tensor]:
    cmd = [sys.executable, str(TRAIN_SCRIPT), "--out", str(out), "--seed", "3", "--tokens", "8192"]
    subprocess.run([*cmd, "--eval-tokens", "1024"], check=True, capture_output=True)
    return load_file(out / "model.safetensors")


def test_short_training_run_is_bit_identical(tmp_path: Path) -> None:
    first, second = _train(tmp_path / "a"), _train(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
