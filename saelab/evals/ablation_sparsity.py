"""OpenAI's sparsity of downstream effects (Gao et al. 2024, section 4.5).

At `n_positions` seeded evaluated positions per batch, each latent active there is removed, one
at a time: its share of the reconstruction, `a * W_dec[latent]` (times the input's scale for SAEs
that normalise inputs), is subtracted from the model's activation at that position (the SAE's
error term stays), as the export's ablation does. The change of the next-token log-probabilities
at that position and the following ones (`n_following` in all, fewer at the context's end) gives
one [T, V] difference; each position's median over the vocabulary is subtracted (a constant shift
changes no probability, and log-probabilities differ from logits by one such shift, so the
evaluator's log-probabilities serve), and the concatenated vector d of length V*T scores
`(||d||_1 / ||d||_2)^2 / (V*T)`: 1 when every entry is equally large, 1/(V*T) for one non-zero
entry; smaller is sparser.

`ablation_sparsity/baseline` is the same for removing one input channel's value (set to 0) at
the same positions, `n_channels` seeded channels per position: the paper's comparison (residual
channels about 0.6, latents about 0.1). Where the paper is silent: positions are drawn
uniformly from a batch's evaluated positions; T is cut at the context's end; an ablation that
changes nothing (d = 0) is left out; the mean is over (position, latent) pairs.

On the tiny model (layer-2 TopK SAE) latents and channels score alike, about 0.11 and 0.10,
and that is the model, not the definition: at the ablated position alone both differences are
dense over the vocabulary (0.61 and 0.63, near a Gaussian vector's 2/pi), and 89% (latents) and
94% (channels) of ||d||^2 is at that position, so over T positions the score is about that
over T (a difference only at one of T positions scores 1/T of its own; spread evenly over all
of them, the same as one). The paper's residual-channel 0.6 (unconfirmed here) would need
effects about as large on the next 15 tokens as on the ablated one.

Cost per sampled position: one clean forward of the context up to position + T, then one batched
forward from the hooked block on for all its ablations (the evaluator's `forward_from`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from saelab.evals.base import LOG_PROBS, SPLICED_LOG_PROBS, EvalBatch, EvalPlugin, RunContext
from saelab.evals.evaluator import BatchEvaluator, Probe
from saelab.io import write_json
from saelab.sae.autoencoder import SparseLatents


def sparsity(d: Tensor) -> Tensor:
    """`(||d||_1 / ||d||_2)^2 / N` over the last dimension (N entries)."""
    return (d.abs().sum(-1) / d.norm(dim=-1)) ** 2 / d.shape[-1]


def centred(diff: Tensor) -> Tensor:
    """[n, T, V] differences less each position's median over the vocabulary, flattened [n, T*V]."""
    return (diff - diff.median(-1, keepdim=True).values).flatten(1)


class AblationSparsity(EvalPlugin):
    """Results: `ablation_sparsity/mean`, `ablation_sparsity/baseline`, their counts, and the
    per-latent means (`ablation_sparsity/per_latent`, NaN for a latent never sampled; written
    to `ablation_sparsity.json`, and into an export of the same pass)."""

    def __init__(self, n_positions: int = 1, n_following: int = 16, n_channels: int = 4) -> None:
        super().__init__()
        self.n_positions, self.n_following, self.n_channels = n_positions, n_following, n_channels

    def setup(self, run: RunContext) -> None:
        self.run = run
        probe = Probe(run, {}, wants=frozenset({LOG_PROBS, SPLICED_LOG_PROBS}))
        self.probe, self.evaluator = probe, BatchEvaluator(run.model, [probe])
        self.generator: torch.Generator | None = None
        self.add_sum_state("latent_sum", (run.sae.n_latents,))
        self.add_sum_state("latent_count", (run.sae.n_latents,))
        self.add_context_sums(run)

    def context_layout(self, run: RunContext) -> dict[str, int]:
        return dict.fromkeys(("latent_total", "latent_pairs", "channel_total", "channel_pairs"), 1)

    def update(self, batch: EvalBatch) -> None:
        device = batch.acts.device
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(self.run.seed)
        where = batch.mask.nonzero().cpu()  # (context row, position) of each evaluated row
        rows = torch.randperm(len(where), generator=self.generator)[: self.n_positions]
        sums = torch.zeros(4, len(batch.tokens), dtype=torch.float64, device=device)  # per context
        for row in rows.tolist():
            b, t = where[row].tolist()
            latent, act = active(batch.latents, row)
            channels = torch.randperm(batch.acts.shape[1], generator=self.generator)
            channels = channels[: self.n_channels].to(device)
            values = effects(self, batch.tokens[b], t, batch.acts[row], latent, act, channels)
            by_latent, by_channel = values[: len(latent)], values[len(latent) :]
            fine = torch.isfinite(by_latent)
            self.latent_sum.index_add_(0, latent[fine], by_latent[fine].double())
            self.latent_count.index_add_(0, latent[fine], fine[fine].double())
            sums[:2, b] += torch.stack([by_latent[fine].double().sum(), fine.sum().double()])
            fine = torch.isfinite(by_channel)
            sums[2:, b] += torch.stack([by_channel[fine].double().sum(), fine.sum().double()])
        self.add_to_contexts(batch, **dict(zip(self.context_names, sums, strict=True)))

    def compute(self) -> dict[str, float | Tensor]:
        def formulas(t: dict[str, Tensor]) -> dict[str, Tensor]:
            return {
                "ablation_sparsity/mean": t["latent_total"] / t["latent_pairs"].clamp(min=1),
                "ablation_sparsity/baseline": t["channel_total"] / t["channel_pairs"].clamp(min=1),
            }

        return {
            **self.context_estimates(formulas),
            "ablation_sparsity/n_pairs": float(self.latent_count.sum()),
            "ablation_sparsity/per_latent": self.latent_sum / self.latent_count,
        }

    def save_artifacts(self, results: dict[str, float | Tensor], out_dir: Path) -> list[Path]:
        per_latent = per_latent_means(results)
        return [write_json(Path(out_dir) / "ablation_sparsity.json", {"per_latent": per_latent})]


def per_latent_means(results: dict[str, float | Tensor]) -> list[float | None] | None:
    """Each latent's mean from `results` (None: never sampled), or None where the plugin did
    not run (the export reads it from the pass's results)."""
    means = results.get("ablation_sparsity/per_latent")
    if not isinstance(means, Tensor):
        return None
    return [None if v != v else round(v, 5) for v in means.tolist()]  # NaN: never sampled


def active(latents: SparseLatents | Tensor, row: int) -> tuple[Tensor, Tensor]:
    """(ids, values) of the latents active at one evaluated row."""
    if isinstance(latents, SparseLatents):
        fired = latents.values[row] > 0
        return latents.indices[row][fired], latents.values[row][fired]
    ids = latents[row].nonzero().squeeze(1)
    return ids, latents[row][ids]


@torch.no_grad()
def effects(
    plugin: AblationSparsity,
    tokens: Tensor,
    t: int,
    x: Tensor,
    latent: Tensor,
    act: Tensor,
    channels: Tensor,
) -> Tensor:
    """The sparsity of each ablation at position `t` of the context `tokens` [T_ctx]: the
    latents (`latent`, `act`) one at a time, then the input `channels` one at a time; [n]."""
    run, evaluator = plugin.run, plugin.evaluator
    sae = run.sae
    end = min(len(tokens), t + plugin.n_following)
    acts, clean = evaluator.clean_forward(tokens[None, :end])
    _, info = sae.preprocess(x[None])
    share = act[:, None] * sae.W_dec[latent]
    zero = torch.zeros_like(share)
    share = sae.postprocess(share, info) - sae.postprocess(zero, info)
    without_channel = x.expand(len(channels), -1).clone()
    without_channel[torch.arange(len(channels)), channels] = 0
    values = torch.cat([x - share, without_channel])
    n = len(values)
    positions = torch.arange(n, device=tokens.device) * end + t  # position t of each row
    expanded = {name: value.expand(n, *value.shape[1:]) for name, value in acts.items()}
    ablated = evaluator.replaced(plugin.probe, expanded, positions, values)
    d = centred(ablated[:, t:end] - clean[:, t:end])
    score = sparsity(d)
    return torch.where(d.norm(dim=-1) > 0, score, torch.nan)
