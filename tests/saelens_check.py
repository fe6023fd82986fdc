"""Run by SAELens's own interpreter (the `.venv-saelens` that scripts/setup builds): load each
SAELens directory saelab wrote and report what SAELens reads there. Imports no saelab code.

usage: python saelens_check.py CASES_DIR  (each case: <name>/sae/ and <name>/io.safetensors)
prints one JSON object: {case: {"hook_name", "model_name", "max_abs_diff_latents",
"max_abs_diff_recons"}}
"""

import json
import sys
from pathlib import Path

import torch
from sae_lens import SAE
from safetensors.torch import load_file

report = {}
for case in sorted(Path(sys.argv[1]).iterdir()):
    sae = SAE.load_from_disk(case / "sae", device="cpu")
    io = load_file(str(case / "io.safetensors"))
    with torch.no_grad():
        latents = sae.encode(io["x"])
        recons = sae.decode(latents)
    report[case.name] = {
        "hook_name": sae.cfg.metadata.hook_name,
        "model_name": sae.cfg.metadata.model_name,
        "max_abs_diff_latents": (latents - io["latents"]).abs().max().item(),
        "max_abs_diff_recons": (recons - io["recons"]).abs().max().item(),
    }
print(json.dumps(report))
