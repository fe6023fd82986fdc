"""`saelab match <sae A> <sae B> [--out FILE]`: each latent of A matched to the latent of B
with the most similar decoder direction (cosine), the fractions matched above 0.7 and 0.9, and
the latents of A that split into several of B. SAEs are anything `sae.path=` takes."""

from __future__ import annotations

from pathlib import Path

import torch

from saelab.errors import ArgumentParser, UserError, exit_with
from saelab.io import write_json
from saelab.sae import checkpoints
from saelab.sae.match import about, match, record


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="saelab match", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="SAE A: checkpoint file or directory, local or a URL")
    parser.add_argument("b", help="SAE B, read at the same place (same input width)")
    parser.add_argument("--out", type=Path, help="write the matches as JSON (default: none)")
    parser.add_argument(
        "--split-threshold", type=float, default=0.7,
        help="cosine above which a latent of B counts as one of A's parts",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        a, b = (checkpoints.load(path=p, check_model=False) for p in (args.a, args.b))
        if a.sae.n_inputs != b.sae.n_inputs:
            raise UserError(
                f"the SAEs read different widths ({a.sae.n_inputs} and {b.sae.n_inputs}): "
                "match SAEs of the same place"
            )
        found = match(a.sae, b.sae, args.split_threshold, args.device)
        summary = found.summary()
        if args.out:
            write_json(args.out, record(found, about(a), about(b)))
    except UserError as error:
        exit_with(error)
    print(f"A: {a.source} ({a.sae.n_latents} latents)\nB: {b.source} ({b.sae.n_latents} latents)")
    print(
        f"matched above 0.7: {summary['matched_above_0.7']:.4f}, above 0.9: "
        f"{summary['matched_above_0.9']:.4f} (fractions of A's latents); mean best cosine "
        f"{summary['mean_cosine']:.4f}"
    )
    print(
        f"split (>= 2 of B's latents above {args.split_threshold}): "
        f"{summary['split_fraction']:.4f} of A's latents; B's latents matched: "
        f"{summary['b_latents_matched']}; matches per latent {summary['matches_per_latent']}"
    )
    if args.out:
        print(f"matches: {args.out}")
