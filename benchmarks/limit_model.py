"""The limit model of an evaluation: the model and SAE work it cannot avoid, timed alone.

Per batch: one clean forward (to the deepest hooked layer, or through the unembedding when the
downstream plugin runs), every SAE's encode and decode, and with downstream one spliced
forward per SAE and one zero-ablated forward per hook, each from the hooked block. No
Lightning loop, no log-softmax, no plugins: what an evaluator would cost if everything else
were free. `saelab eval` and `saelab sweep` are compared against it.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from saelab.evals.evaluator import encode_decode
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.models import ModelSource


@torch.no_grad()
def limit_seconds(
    model: ModelSource,
    saes: list[tuple[str, int, Autoencoder]],
    tokens: Tensor,
    batch_size: int,
    downstream: bool,
) -> float:
    """Seconds for `saes` ([(hook, layer, sae)]) over `tokens` [n, n_ctx], first position out."""
    hooks = {hook for hook, _, _ in saes}
    if downstream:
        hooks |= {model.resid_pre(layer) for _, layer, _ in saes}
    stop = None if downstream else max(layer for _, layer, _ in saes) + 1
    acts: dict[str, Tensor] = {}
    fwd_hooks = [(name, lambda a, hook, name=name: acts.__setitem__(name, a)) for name in hooks]
    batches = tokens.split(batch_size)
    started = 0.0
    for i, batch in enumerate([batches[0], *batches]):  # the first, untimed, warms up
        if i == 1:
            started = time.perf_counter()
        model.bridge.run_with_hooks(batch, fwd_hooks=fwd_hooks, stop_at_layer=stop)
        mask = torch.ones_like(batch, dtype=torch.bool)
        mask[:, 0] = False
        positions = mask.flatten().nonzero().squeeze(1)
        ablated = set()
        for hook, layer, sae in saes:
            _, recons = encode_decode(sae, acts[hook].flatten(0, 1)[positions])
            if not downstream:
                continue
            resid_pre = acts[model.resid_pre(layer)]
            model.forward_from(layer, resid_pre, model.replace_hooks(hook, positions, recons))
            if hook not in ablated:
                zeros = torch.zeros_like(recons)
                model.forward_from(layer, resid_pre, model.replace_hooks(hook, positions, zeros))
                ablated.add(hook)
    if tokens.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started
