"""Print the contexts that most activate some latents of a bundled tiny-zoo SAE.

python experiments/tiny_zoo/top_activations.py --layer 2 --latents 5 --top 6
"""

from __future__ import annotations

import argparse

import torch

from saelab.checkpoints import zoo
from saelab.data import Bundled, pack
from saelab.models import HOOKS
from saelab.models import zoo as zoo_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="topk")
    parser.add_argument("--location", default="resid_post_mlp")
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--latents", type=int, default=8, help="how many latents to show")
    parser.add_argument("--top", type=int, default=6, help="contexts per latent")
    parser.add_argument("--min-density", type=float, default=1e-4)
    args = parser.parse_args()

    model = zoo_model("tiny")
    sae = zoo("tiny", args.family, args.location, args.layer).sae
    tokens, _ = pack(Bundled("val").documents(0), model.tokenizer, 2048, 64, model.bos_token_id)
    hook = HOOKS[args.location].format(layer=args.layer)
    acts, captured = [], []

    def capture(act, hook):
        captured.append(act[:, 1:])  # the first position (BOS) is left out, as in eval
        return act

    with torch.no_grad():
        for batch in tokens.split(64):
            captured.clear()
            model.bridge.run_with_hooks(
                batch, fwd_hooks=[(hook, capture)], stop_at_layer=args.layer + 1
            )
            acts.append(sae.encode(captured[0])[0])
    acts = torch.cat(acts)  # [contexts, 63, n_latents]
    density = (acts > 0).float().mean((0, 1))
    candidates = torch.nonzero(density > args.min_density).squeeze(-1)
    generator = torch.Generator().manual_seed(0)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[: args.latents]]
    for latent in chosen.tolist():
        values = acts[..., latent]
        top = values.flatten().topk(args.top)
        print(f"\nlatent {latent}  density {density[latent]:.4f}")
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            ctx, pos = divmod(flat, values.shape[1])
            ids = tokens[ctx, 1 : pos + 2].tolist()
            before = model.tokenizer.decode(ids[-12:-1])
            token = model.tokenizer.decode(ids[-1:])
            print(f"  {value:6.2f}  ...{before!r} [[{token!r}]]")


if __name__ == "__main__":
    main()
