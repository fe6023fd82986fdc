"""SAEBench's feature absorption (Chanin et al., "A is for Absorption"; the absorption
fraction is Demian Till's): where a model knows a word's first letter, do the SAE's latents
for that letter fire, or has a token-specific latent absorbed the feature?

Steps, as SAEBench (`sae_bench/evals/absorption/`), over `saelab.data.first_letter`'s task
(the vocabulary's alphabetic word tokens in "{word} has the first letter:" prompts):
1. Ground-truth probes (per hook, shared by its SAEs): 26 one-vs-rest logistic probes on the
   hook's activations at the word token of the train words (`train_probes`: Adam, positives
   weighted, batch 64, 50 epochs, weight decay 1e-4). A letter counts if its probe's F1 on the
   test words (logit > 0) exceeds `min_probe_f1` (0.6).
2. The SAE's main latents per letter, by k-sparse probing: an L1-regularised probe of the 26
   letters on the latents of the train words (`train_probes`, l1 0.01, batch 4096); for
   k = 1 .. `max_k`, the k latents of largest weight feed an L2 logistic regression (C = 1,
   balanced classes: scikit-learn's defaults as SAEBench calls them); the main latents are
   those of the largest k reached while each step raises the test F1 by more than `f1_jump`
   (0.03): feature splitting.
3. Absorption, on each test word that its letter's probe detects (logit > 0), with p the unit
   probe direction and each latent's projection its contribution to the reconstruction along
   p: `a = x . p` (the activation's projection), `m` the main latents' summed projection,
   `A` the sum of the 3 largest positive projections of other latents whose decoder has
   cosine >= 0.1 with p. Absorption fraction: 0 if `m >= a` or `A / a < 0.4`; else 1 if
   `m <= 0`; else `min(A, a - m) / (min(A, a - m) + m)`. Full absorption: every main latent
   is silent, the latent of largest projection has cosine >= 0.025 with p and projects at
   least 0.4 a.
Per letter, the sums over its probe-detected test words divided by their number; results:
- `absorption/mean_absorption_fraction`, `absorption/mean_full_absorption`: the means over
  counted letters (NaN when fewer than `min_letters` count: SAEBench then gives no score);
- `absorption/n_letters`: letters counted (probe F1 above the bar, at least one detected
  test word); `absorption/mean_num_split_features`: their mean number of main latents.

Choices (SAEBench differs or is silent):
- A latent's projection is `value * (decoder row . p)`, times the input's scale for an SAE
  that layer-norms its input (OpenAI's TopK: the reconstruction is scaled back by it). For
  SAEs with unit-norm decoder rows that read the raw activation (SAEBench's usual SAELens
  SAEs) this is SAEBench's `value * cosine`; for the others it keeps `a` and the latents'
  projections in the same units. A word whose activation does not project positively on p
  (a <= 0) counts as not absorbed.
- Step 3 reads the test words' activations from step 1's prompts; SAEBench builds new prompts
  (fresh in-context examples from the whole vocabulary) for them.
- The probes start at zero, not at torch's random init (`train_probes`).
SAEBench advises models of 1B+ parameters (smaller ones spell poorly) and SAEs of 16k+
latents; on smaller ones the numbers exercise the code, they are not a finding.

Cost and sharing: the task's forwards (one per batch of prompts, stopped after the hooked
block), the activations and the ground-truth probes are computed once per hook and model and
kept in a `HookCache` for the next SAE there. Per SAE: one encoding of the words' activations,
the L1 probe (sparse: touches only active latents), `max_k` batched Newton fits of 26 small
probes, and the absorption step over the detected test words' active latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from saelab.data import first_letter
from saelab.errors import UserError
from saelab.evals.base import EvalBatch, EvalPlugin, RunContext
from saelab.evals.hook_cache import HookCache
from saelab.evals.logistic import Rows, fit_l2_batched, train_probes
from saelab.io import write_json
from saelab.sae.autoencoder import Autoencoder

# SAEBench's constants (`feature_absorption.py`, `feature_absorption_calculator.py`)
FULL_ABSORPTION_COS = 0.025  # the top projecting latent's cosine with the probe (full)
FRACTION_COS = 0.1  # each absorbing latent's cosine with the probe (fraction)
PROJECTION_PROPORTION = 0.4  # the absorbing latents' share of the probe projection (both)
MAX_ABSORBING = 3  # latents that may share the absorbed feature (fraction)
SILENT = 1e-8  # a main latent below this is silent (full absorption)
# SAEBench's probe training: ground truth (`common.train_and_save_probes`), L1 (k-sparse)
TRUTH_PROBE = {"batch_size": 64, "lr": 1e-2, "weight_decay": 1e-4}
L1_PROBE = {"batch_size": 4096, "lr": 1e-2, "weight_decay": 1e-6}

_CACHE = HookCache()


@dataclass
class HookTask:
    """The first-letter task at one hook: the words' activations at their token `acts` [n, d]
    (train rows first), the ground-truth probes (`probe_w` [26, d], `probe_b` [26]), their
    logits on every word and their F1 per letter on the test words."""

    task: first_letter.FirstLetterTask
    acts: Tensor
    probe_w: Tensor
    probe_b: Tensor
    logits: Tensor
    probe_f1: Tensor

    @property
    def nbytes(self) -> int:
        tensors = (self.acts, self.logits, self.task.prompts)
        return sum(t.numel() * t.element_size() for t in tensors)


class Absorption(EvalPlugin):
    """SAEBench's feature absorption on first-letter tasks (see the module docstring)."""

    def __init__(
        self,
        template: str | None = None,
        icl_examples: int = 10,
        test_fraction: float = 0.2,
        max_words: int | None = None,
        batch_size: int = 64,
        epochs: int = 50,
        max_k: int = 10,
        f1_jump: float = 0.03,
        l1: float = 0.01,
        C: float = 1.0,
        min_probe_f1: float = 0.6,
        min_letters: int = 20,
        cache_bytes: float = 2e9,
    ) -> None:
        super().__init__()
        self.template = template or first_letter.TEMPLATE  # import cycle: not a default
        self.icl_examples = int(icl_examples)
        self.test_fraction, self.max_words = float(test_fraction), max_words
        self.batch_size, self.epochs = int(batch_size), int(epochs)
        self.max_k, self.f1_jump, self.l1, self.C = int(max_k), f1_jump, l1, C
        self.min_probe_f1, self.min_letters = min_probe_f1, int(min_letters)
        self.cache_bytes = float(cache_bytes)

    def setup(self, run: RunContext) -> None:
        if run.sae.n_latents < self.max_k:
            raise UserError(
                f"evals.absorption.max_k={self.max_k} exceeds the SAE's {run.sae.n_latents} latents"
            )
        length = first_letter.prompt_length(run.model.tokenizer, self.template, self.icl_examples)
        if length > run.model.n_ctx:
            raise UserError(
                f"first-letter prompts of up to {length} tokens exceed the model's context "
                f"({run.model.n_ctx}): lower evals.absorption.icl_examples"
            )
        self.run = run

    def update(self, batch: EvalBatch) -> None:
        """Nothing from the evaluated batches: the task is its own prompts."""

    def compute(self) -> dict[str, float | Tensor]:
        shared = self.shared()
        self.details = score(self.run.sae, shared, self, self.run.seed)
        counted = self.details["counted"]
        n = int(counted.sum())
        enough = n >= self.min_letters and n > 0

        def mean(values: Tensor) -> float:
            return values[counted].double().mean().item() if enough else math.nan

        return {
            "absorption/mean_absorption_fraction": mean(self.details["absorption_fraction"]),
            "absorption/mean_full_absorption": mean(self.details["full_absorption_rate"]),
            "absorption/mean_num_split_features": mean(self.details["n_main"]),
            "absorption/n_letters": n,
        }

    def shared(self) -> HookTask:
        """The task at this run's hook: from the cache, or captured and probed now."""
        run = self.run
        key = ("absorption", run.hook, self.template, self.icl_examples, self.test_fraction,
               self.max_words, run.seed, self.epochs)  # fmt: skip

        def make() -> HookTask:
            task = first_letter.build(
                run.model.tokenizer, run.model.vocab_size, self.template, self.icl_examples,
                self.test_fraction, self.max_words, run.seed,
            )  # fmt: skip
            return probe_truth(task, capture(run, task, self.batch_size), self.epochs, run.seed)

        return _CACHE.get(run.model, key, make, self.cache_bytes)

    def save_artifacts(self, results: dict[str, float | Tensor], out_dir: Path) -> list[Path]:
        d = self.details
        letters = []
        for i, letter in enumerate(first_letter.LETTERS):
            letters.append({
                "letter": letter,
                "counted": bool(d["counted"][i]),
                "probe_f1": float(d["probe_f1"][i]),
                "main_latents": d["main"][i],
                "main_f1": float(d["main_f1"][i]),
                "probe_true_positives": int(d["n_detected"][i]),
                "absorption_fraction": float(d["absorption_fraction"][i]),
                "full_absorption_rate": float(d["full_absorption_rate"][i]),
                "full_absorptions": int(d["n_full"][i]),
                "absorbed_words": d["absorbed"][i],
            })  # fmt: skip
        record = {
            "definition": "SAEBench feature absorption over first-letter tasks: ground-truth "
            "probes on the hook's activations, main latents by k-sparse probing, absorption "
            "fraction and full absorption on the probe-detected test words "
            "(saelab.evals.absorption)",
            "results": {
                k.removeprefix("absorption/"): v
                for k, v in results.items()
                if k.startswith("absorption/")
            },
            "min_probe_f1": self.min_probe_f1,
            "min_letters": self.min_letters,
            "letters": letters,
        }
        return [write_json(out_dir / "absorption.json", record)]


def capture(run: RunContext, task: first_letter.FirstLetterTask, batch_size: int) -> Tensor:
    """[n, d] the hook's activations at each prompt's word token (float32)."""
    out = []
    bar = tqdm(total=len(task), desc=f"absorption prompts at {run.hook}", unit="prompt",
               leave=False)  # fmt: skip
    for start in range(0, len(task), batch_size):
        tokens = task.prompts[start : start + batch_size]
        width = int(task.position[start : start + batch_size].max()) + 1  # nothing after
        acts = run.activations(tokens[:, :width])
        rows = torch.arange(len(tokens), device=acts.device)
        out.append(acts[rows, task.position[start : start + batch_size].to(acts.device)].float())
        bar.update(len(tokens))
    bar.close()
    return torch.cat(out)


def probe_truth(
    task: first_letter.FirstLetterTask, acts: Tensor, epochs: int, seed: int
) -> HookTask:
    """The ground-truth probes of the 26 letters on the train words, scored on the test."""
    y = F.one_hot(task.letter, len(first_letter.LETTERS)).to(acts.device)
    w, b = train_probes(acts[: task.n_train], y[: task.n_train], epochs=epochs, seed=seed,
                        desc="absorption: ground-truth probes", **TRUTH_PROBE)  # fmt: skip
    logits = acts @ w.T + b
    f1 = f1_score(logits[task.n_train :].T > 0, y[task.n_train :].T.bool())
    return HookTask(task, acts, w, b, logits, f1)


def f1_score(predicted: Tensor, actual: Tensor) -> Tensor:
    """F1 along the last dimension (0 where nothing is predicted or actual)."""
    tp = (predicted & actual).sum(-1).double()
    wrong = (predicted ^ actual).sum(-1).double()
    return torch.where(tp > 0, 2 * tp / (2 * tp + wrong).clamp_min(1), torch.zeros_like(tp))


@torch.no_grad()
def encode_rows(sae: Autoencoder, acts: Tensor, chunk: int = 4096) -> tuple[Rows, Tensor]:
    """(the SAE's non-zero latents of each row as `Rows`, each row's input scale [n]: the
    std the SAE divides by if it layer-norms its input, else 1)."""
    rows, cols, values, scales = [], [], [], []
    for start in range(0, len(acts), chunk):
        x = acts[start : start + chunk].to(sae.W_dec.device, sae.W_dec.dtype)
        if sae.k is not None:
            sparse, info = sae.encode_sparse(x)
            row = torch.arange(len(x), device=x.device)[:, None].expand_as(sparse.indices)
            fired = sparse.values > 0
            rows.append(row[fired] + start)
            cols.append(sparse.indices[fired])
            values.append(sparse.values[fired].float())
        else:
            dense, info = sae.encode(x)
            row, col = dense.nonzero(as_tuple=True)
            rows.append(row + start)
            cols.append(col)
            values.append(dense[row, col].float())
        scales.append(info["std"][:, 0].float() if info else x.new_ones(len(x)).float())
    latents = Rows.from_entries(torch.cat(rows), torch.cat(cols), torch.cat(values), len(acts),
                                sae.n_latents)  # fmt: skip
    return latents, torch.cat(scales)


def main_latents(latents: Rows, task: first_letter.FirstLetterTask, plugin: Absorption, seed: int):
    """(main latents [26, max_k] (the top-k list of each letter, by L1 probe weight), how many
    of them are its main latents [26], the test F1 of that k-sparse probe [26])."""
    n_train, n_letters = task.n_train, len(first_letter.LETTERS)
    y = F.one_hot(task.letter, n_letters).to(latents.values.device)
    w, _ = train_probes(latents.slice(0, n_train), y[:n_train], epochs=plugin.epochs,
                        l1=plugin.l1, seed=seed, desc="absorption: L1 probe on latents",
                        **L1_PROBE)  # fmt: skip
    top = w.topk(plugin.max_k, dim=1).indices  # [26, max_k]: positive weights first
    x = latents.dense_columns(top).permute(1, 0, 2)  # [26, n, max_k]
    y = y.T.double()  # [26, n]
    y_train, y_test = y[:, :n_train], y[:, n_train:]
    positives = y_train.sum(1, keepdim=True).clamp_min(1)
    negatives = (n_train - y_train.sum(1, keepdim=True)).clamp_min(1)
    balanced = torch.where(y_train > 0, n_train / (2 * positives), n_train / (2 * negatives))
    # a letter without train positives has no probe (its intercept would run to -inf): F1 0
    fits = torch.nonzero((y_train.sum(1) > 0) & (y_train.sum(1) < n_train))[:, 0]
    f1 = torch.zeros(n_letters, plugin.max_k, dtype=torch.float64, device=x.device)
    for k in range(1, plugin.max_k + 1):
        x_k = x[fits, :, :k]
        w_k, b_k = fit_l2_batched(x_k[:, :n_train], y_train[fits], balanced[fits], C=plugin.C)
        scores = torch.einsum("lnk,lk->ln", x_k[:, n_train:].double(), w_k) + b_k[:, None]
        f1[fits, k - 1] = f1_score(scores > 0, y_test[fits] > 0)
    # feature splitting: the largest k reached while each step raises F1 by more than f1_jump
    n_main = torch.zeros(n_letters, dtype=torch.long, device=x.device)
    best = torch.full((n_letters,), -math.inf, dtype=torch.float64, device=x.device)
    going = torch.ones(n_letters, dtype=torch.bool, device=x.device)
    for k in range(1, plugin.max_k + 1):
        going &= f1[:, k - 1] > best + plugin.f1_jump
        n_main = torch.where(going, k, n_main)
        best = torch.where(going, f1[:, k - 1], best)
    main_f1 = f1.gather(1, (n_main - 1).clamp_min(0)[:, None])[:, 0]
    return top, n_main, main_f1


def absorption_of_words(
    latents: Rows, rows: Tensor, letter: Tensor, act_projection: Tensor, scale: Tensor,
    decoder_projection: Tensor, cosine: Tensor, main: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(absorption fraction [M], full absorption [M] bool, the top absorbing latent [M] or -1)
    of words `rows` [M] whose letter is `letter` [M], given their activations' projections
    on the letter's unit probe `act_projection` [M], their input scales [M], each decoder
    row's projection on and cosine with each letter's probe ([26, L]) and each letter's main
    latents (`main` [26, L] bool). Only the words' active latents are read."""
    m = len(rows)
    which, cols, values = latents.select(rows)
    word_letter = letter[which]
    projection = values * decoder_projection[word_letter, cols] * scale[which]
    cos = cosine[word_letter, cols]
    is_main = main[word_letter, cols]
    main_projection = projection.new_zeros(m).index_add_(
        0, which, torch.where(is_main, projection, 0)
    )
    main_fired = torch.zeros(m, device=rows.device).index_add_(
        0, which, (is_main & (values >= SILENT)).float()
    ) > 0  # fmt: skip
    # each word's active latents side by side, [M, most active]
    counts = torch.bincount(which, minlength=m)
    slot = torch.arange(len(which), device=rows.device) - (counts.cumsum(0) - counts)[which]
    width = max(int(counts.max()) if m else 0, 1)
    absorbing = ~is_main & (cos >= FRACTION_COS) & (projection > 0)
    grid = projection.new_zeros(m, width)
    grid[which, slot] = torch.where(absorbing, projection, 0)
    top_absorbing = grid.topk(min(MAX_ABSORBING, width), dim=1)
    absorbed = top_absorbing.values.sum(1)
    cols_grid = torch.full((m, width), -1, dtype=torch.long, device=rows.device)
    cols_grid[which, slot] = cols
    first = cols_grid.gather(1, top_absorbing.indices[:, :1])[:, 0]
    first = torch.where(top_absorbing.values[:, 0] > 0, first, -1)

    a, main_p = act_projection, main_projection
    partial = torch.minimum(absorbed, a - main_p)
    fraction = torch.where(main_p <= 0, torch.ones_like(a),
                           (partial / (partial + main_p)).clamp(0, 1))  # fmt: skip
    none = (a <= 0) | (main_p >= a) | (absorbed < PROJECTION_PROPORTION * a)
    fraction = torch.where(none, torch.zeros_like(a), fraction)

    grid.zero_()
    grid[which, slot] = projection
    cos_grid = projection.new_zeros(m, width)
    cos_grid[which, slot] = cos
    top_value, top_slot = grid.max(1)
    top_cos = cos_grid.gather(1, top_slot[:, None])[:, 0]
    full = (~main_fired & (a > 0) & (top_cos >= FULL_ABSORPTION_COS)
            & (top_value >= PROJECTION_PROPORTION * a))  # fmt: skip
    return fraction, full, first


@torch.no_grad()
def score(sae: Autoencoder, shared: HookTask, plugin: Absorption, seed: int = 0) -> dict:
    """Per letter: main latents, probe-detected test words, absorption fraction and rate."""
    task, n_letters = shared.task, len(first_letter.LETTERS)
    device = sae.W_dec.device
    latents, scale = encode_rows(sae, shared.acts)
    top, n_main, main_f1 = main_latents(latents, task, plugin, seed)
    main = torch.zeros(n_letters, sae.n_latents, dtype=torch.bool, device=device)
    in_main = torch.arange(plugin.max_k, device=device)[None] < n_main[:, None]
    letter_of = torch.arange(n_letters, device=device)[:, None].expand_as(top)
    main[letter_of[in_main], top[in_main]] = True

    probe = F.normalize(shared.probe_w.to(device).float(), dim=1)  # [26, d]
    decoder = sae.W_dec.float()
    decoder_projection = probe @ decoder.T  # [26, L]
    cosine = decoder_projection / decoder.norm(dim=1).clamp_min(1e-12)
    letter = task.letter.to(device)
    test = torch.arange(task.n_train, len(task), device=device)
    detected = shared.logits.to(device)[test, letter[test]] > 0
    rows = test[detected]
    act_projection = (shared.acts.to(device)[rows] * probe[letter[rows]]).sum(1)
    fraction, full, first = absorption_of_words(
        latents, rows, letter[rows], act_projection, scale.to(device), decoder_projection,
        cosine, main,
    )  # fmt: skip
    n_detected = torch.bincount(letter[rows], minlength=n_letters)
    per = n_detected.clamp_min(1).double()
    fraction_sum = torch.zeros(n_letters, dtype=torch.float64, device=device)
    fraction_sum.index_add_(0, letter[rows], fraction.double())
    n_full = torch.bincount(letter[rows][full], minlength=n_letters)
    counted = (shared.probe_f1.to(device) > plugin.min_probe_f1) & (n_detected > 0)
    absorbed = [[] for _ in first_letter.LETTERS]
    for i in torch.nonzero(fraction > 0)[:, 0].tolist():
        row = int(rows[i])
        absorbed[int(letter[row])].append({
            "word": task.words[row], "token": int(task.token[row]),
            "fraction": float(fraction[i]), "full": bool(full[i]),
            "top_absorbing_latent": int(first[i]),
        })  # fmt: skip
    return {
        "counted": counted.cpu(),
        "probe_f1": shared.probe_f1.cpu(),
        "main": [top[i, : n_main[i]].tolist() for i in range(n_letters)],
        "n_main": n_main.cpu().double(),
        "main_f1": main_f1.cpu(),
        "n_detected": n_detected.cpu(),
        "absorption_fraction": (fraction_sum / per).cpu(),
        "full_absorption_rate": (n_full / per).cpu(),
        "n_full": n_full.cpu(),
        "absorbed": absorbed,
    }
