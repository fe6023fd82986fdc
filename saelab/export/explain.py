"""N2G explanations of latents, as OpenAI's `create_n2g_explanation` builds them
(`sparse_autoencoder/explanations.py` in openai/sparse_autoencoder), batched across latents,
and scored on examples that did not build them.

Building, per latent, from its top and random examples (in that order):
1. each example is its context from the start (after BOS) cut after its selected token, as
   OpenAI's are whole documents cut there (`split_examples` says why not the export's window);
2. the shortest suffix whose activation at that token is at least half the stored one (the
   whole cut window if none is);
3. the start test: with the padding token put before the suffix, an activation below half the
   stored one means the pattern needs the sequence's start (`^`);
4. each token's saliency, `1 - act with that token replaced by the padding token / the
   suffix's act`; tokens below 0.5 become wildcards;
5. the tokens go into a trie in reverse order; the node reached holds the suffix's act (a later
   example reaching the same node overwrites it, as OpenAI's).
Predicting at a token walks the trie back from it, the exact token before the wildcard and no
backtracking; `^` matches only when the walk reaches the start of a sequence that begins its
context. OpenAI's walk stops at the first node holding an activation; saelab's goes on and
predicts the deepest one (`Explanation.predict` says why; `deepest=False` is OpenAI's). Both
walks predict > 0 at the same tokens, so precision, recall and F1 do not depend on the choice;
only the predicted values (and their correlation with the actual ones) do.

Forwards: every step (one suffix length, the start test, the saliencies) is one batch of short
sequences for all examples of many latents, grouped by length (no padding needed), each run
as BOS + tokens when the data's contexts begin with BOS (so the attention sink is there and
`^` means "right after BOS", where the contexts' windows begin), up to the hooked block only,
then through the SAE's own encode (TopK across all latents).

Choices where OpenAI is silent:
- Padding token: OpenAI's is GPT-2's `" _"` (4808). For another tokenizer, its single token
  for `" _"`, else for `"_"` (the byte tokenizer's and the tiny model's: 62 and 63), else
  `explain.padding_token` must be given.
- Scoring (OpenAI's repository has none): for each latent, the held-out windows are its
  reservoir examples (a uniform sample of its positive events) from contexts none of its
  building examples came from, showing a different window from every one that did (a window
  near a building example's would score its pattern on the firing that built it), plus as
  many windows of random contexts where it is silent throughout; over every token of them,
  precision and recall of "predicted > 0" against "activation > 0", their F1 and the Pearson
  correlation of predicted with actual values; recall and F1 also with each firing weighted by
  its activation (`score` says why). Precision is 0 when nothing is predicted, F1 0 when both
  are, the correlation 0 when either side is constant. A latent with no held-out positive window is
  explained but not scored. Every window is predicted from its context's start, so that a
  pattern sees as many tokens before a window's first ones as it did when it was built.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saelab.errors import UserError
from saelab.evals.base import RunContext
from saelab.export.sets import Sets, distinct

ANY, START, LEAF = "*", "^", "act"  # trie keys besides token ids
SCORES = ("precision", "recall", "f1", "recall_weighted", "f1_weighted", "correlation")

# The activation of latent `latents[i]` at the last token of `seqs[i]`, for every i.
LatentFn = Callable[[list[list[int]], list[int]], Sequence[float]]


class Explanation:
    """One latent's N2G trie: token ids (or `ANY`) from the firing token backwards, `START` for
    a pattern that must begin its sequence, `LEAF` holding the predicted activation."""

    def __init__(self) -> None:
        self.trie: dict = {}

    def insert(self, tokens: Sequence[int | None], start: bool, act: float) -> None:
        """A pattern in reading order (None: any token), ending at the token that fires."""
        node = self.trie
        for token in reversed(tokens):
            node = node.setdefault(ANY if token is None else int(token), {})
        if start:
            node = node.setdefault(START, {})
        node[LEAF] = float(act)

    def predict(
        self, tokens: Sequence[int], at_start: bool = True, deepest: bool = True, first: int = 0
    ) -> list[float]:
        """The predicted activation at each token from `tokens[first]` on; `at_start`:
        `tokens[0]` begins its context.

        The walk back from each token takes the exact token before the wildcard and never
        backtracks. `deepest=False` is OpenAI's `predict`: the first node holding an activation
        ends it. That hides every longer pattern ending as a shorter one does (with "B" -> 0.4
        in the trie, "A B" -> 1.0 is never predicted), so by default the same walk goes on to
        its end and predicts the deepest node holding an activation it passed."""
        predicted = []
        for i in range(first, len(tokens)):
            node, value = self.trie, 0.0
            for j in range(i, -1, -1):
                node = node.get(tokens[j], node.get(ANY))
                if node is None:
                    break
                if LEAF in node:
                    value = node[LEAF]
                    if not deepest:
                        break
                if j == 0 and at_start and START in node:
                    value = node[START][LEAF]
            predicted.append(value)
        return predicted

    def patterns(self) -> list[dict[str, Any]]:
        """The trie's patterns, largest activation first: `tokens` in reading order (None: any
        token), `start`, `act`; `from_patterns` rebuilds the trie."""
        found: list[dict[str, Any]] = []

        def walk(node: dict, suffix: list) -> None:
            if LEAF in node:
                found.append(pattern(suffix, False, node[LEAF]))
            if START in node:
                found.append(pattern(suffix, True, node[START][LEAF]))
            for key, child in node.items():
                if key not in (START, LEAF):
                    walk(child, [*suffix, key])

        def pattern(suffix: list, start: bool, act: float) -> dict[str, Any]:
            tokens = [None if key == ANY else key for key in reversed(suffix)]
            return {"tokens": tokens, "start": start, "act": round(act, 4)}

        walk(self.trie, [])
        return sorted(found, key=lambda p: -p["act"])

    @classmethod
    def from_patterns(cls, patterns: list[dict[str, Any]]) -> Explanation:
        explanation = cls()
        for p in patterns:
            explanation.insert(p["tokens"], p["start"], p["act"])
        return explanation

    def tokens(self) -> set[int]:
        """Every token id the patterns name (not the wildcards)."""
        return {t for p in self.patterns() for t in p["tokens"] if t is not None}


@dataclass
class Example:
    """A building example: `tokens` up to and including the selected token, whose stored
    activation is `act`."""

    latent: int
    tokens: list[int]
    act: float


def build(
    latent_acts: LatentFn, examples: list[Example], padding: int, max_tokens: int | None = None
) -> dict[int, Explanation]:
    """Every latent's explanation from its examples (steps 1-5 above): one `latent_acts` call
    per suffix length, one for the start test, one for the saliencies, each for all examples.
    An example whose shortest suffix keeping half its activation is longer than `max_tokens`
    adds no pattern (`minimal_suffixes` says why); a latent none of whose examples adds one
    has an empty explanation (it predicts 0 everywhere, and is scored so)."""
    suffixes = minimal_suffixes(latent_acts, examples, max_tokens)
    kept = [(e, found) for e, found in zip(examples, suffixes, strict=True) if found is not None]
    latents = [e.latent for e, _ in kept]
    padded = latent_acts([[padding, *tokens] for _, (tokens, _) in kept], latents)
    seqs, owner = [], []
    for i, (_, (tokens, _)) in enumerate(kept):
        for j in range(len(tokens)):
            seqs.append([*tokens[:j], padding, *tokens[j + 1 :]])
            owner.append(i)
    replaced = latent_acts(seqs, [latents[i] for i in owner])
    saliencies: list[list[float]] = [[] for _ in kept]
    for i, act in zip(owner, replaced, strict=True):
        saliencies[i].append(1 - act / kept[i][1][1])
    explanations = {e.latent: Explanation() for e in examples}  # perhaps empty: predicts 0
    for (e, (tokens, act)), pad_act, saliency in zip(kept, padded, saliencies, strict=True):
        pattern = [t if s >= 0.5 else None for t, s in zip(tokens, saliency, strict=True)]
        needs_start = pad_act / e.act < 0.5
        explanations.setdefault(e.latent, Explanation()).insert(pattern, needs_start, act)
    return explanations


def minimal_suffixes(
    latent_acts: LatentFn, examples: list[Example], max_tokens: int | None = None
) -> list[tuple[list, float] | None]:
    """(suffix, its activation) of each example: the shortest suffix keeping at least half the
    stored activation, tried shortest first, one batched call per length; None where none of
    at most `max_tokens` does.

    Why a cap: the search costs about L²/2 tokens forwarded and the saliencies L², so the few
    examples that need a long suffix (weak firings that depend on much of their context) cost
    most of the forwards, and the patterns they give, long and mostly tied to the context's
    start, match almost nothing else. On the tiny model's layer-2 SAE (512 latents, 30
    examples each) 48% of the examples keep half their activation with the selected token
    alone, 21% with 2 to 8 tokens, 12% need 9 to 16 and 19% more. Capped at 6 instead of 16,
    the explanations forward 143k tokens instead of 700k (18 s instead of 86 s) and its
    `explain/f1` moves from 0.354 to 0.347 (README "Explanations" has the table)."""
    found: list[tuple[list, float] | None] = [None] * len(examples)
    pending, length = list(range(len(examples))), 1
    while pending:
        acts = latent_acts(
            [examples[i].tokens[-length:] for i in pending], [examples[i].latent for i in pending]
        )
        still = []
        for i, act in zip(pending, acts, strict=True):
            e = examples[i]
            if act / e.act >= 0.5:
                found[i] = (e.tokens[-length:], float(act))
            elif length >= len(e.tokens):  # none keeps half: the whole sequence, as OpenAI's
                found[i] = (e.tokens, e.act)
            elif max_tokens is None or length < max_tokens:
                still.append(i)
        pending, length = still, length + 1
    return found


@dataclass
class Window:
    """A scored window: `tokens` from its context's start (after BOS) to the window's end, so
    that every pattern can see as far back as it did when it was built, and the latent's
    actual activations `acts` at the window's last `len(acts)` tokens."""

    tokens: list[int]
    acts: list[float]


def score(explanation: Explanation, windows: list[Window]) -> dict[str, float] | None:
    """Precision, recall, F1 of predicted > 0 against actual > 0 over every scored token of
    `windows`, and the correlation of the values; None without an actual positive.

    `recall_weighted` (and `f1_weighted`) counts each firing by its activation: the recall of
    firings drawn in proportion to their activation, as SAEBench's autointerp draws the
    firing examples it scores ("importance-weighted") and Anthropic weighs its specificity
    plots. The held-out firings are a uniform sample, mostly weak (on the tiny model's
    layer-2 SAE half are below half the latent's top activation), while N2G patterns are
    built to keep half an example's activation; unweighted recall mostly scores the weak."""
    predicted = np.array(
        [
            v
            for w in windows
            for v in explanation.predict(w.tokens, first=len(w.tokens) - len(w.acts))
        ],
        dtype=np.float64,
    )
    actual = np.array([v for w in windows for v in w.acts], dtype=np.float64)
    fired, claimed = actual > 0, predicted > 0
    if not fired.any():
        return None
    hits = fired & claimed
    precision = float(hits.sum() / claimed.sum()) if claimed.any() else 0.0
    recall = float(hits.sum() / fired.sum())
    recall_weighted = float(actual[hits].sum() / actual[fired].sum())
    constant = predicted.std() == 0 or actual.std() == 0
    return {
        "precision": precision,
        "recall": recall,
        "f1": harmonic_mean(precision, recall),
        "recall_weighted": recall_weighted,
        "f1_weighted": harmonic_mean(precision, recall_weighted),
        "correlation": 0.0 if constant else float(np.corrcoef(predicted, actual)[0, 1]),
    }


def harmonic_mean(precision: float, recall: float) -> float:
    """F1; 0 when both are 0."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


# -- on a run: the model as the latent function, the export's examples, the sample, the scores --
@dataclass(frozen=True)
class ExplainSettings:
    """The `explain:` options (conf/export.yaml says what each one is)."""

    n_latents: int | str = 512
    padding_token: int | None = None
    batch_size: int = 1024
    latents_per_step: int = 64
    silent_contexts: int = 64
    max_tokens: int = 6

    def __post_init__(self) -> None:
        n = self.n_latents
        if n != "all" and not (isinstance(n, int) and n > 0):
            raise UserError(f"explain.n_latents must be a positive count or 'all', not {n!r}")
        sizes = (self.batch_size, self.latents_per_step, self.silent_contexts, self.max_tokens)
        if min(sizes) < 1:
            raise UserError(
                "explain.batch_size, latents_per_step, silent_contexts, max_tokens must be >= 1"
            )


def padding_token(tokenizer: Any, given: int | None) -> int:
    """`given`, else the tokenizer's single token for " _" (GPT-2: 4808, OpenAI's), else for "_"."""
    if given is not None:
        return int(given)
    for text in (" _", "_"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1:
            return int(ids[0])
    raise UserError("this tokenizer has no single token for ' _' or '_': set explain.padding_token")


class ModelLatents:
    """The run's `LatentFn`. The forward does not depend on the latent, and examples of
    different latents often share their sequences (latents firing on the same tokens), so each
    distinct sequence of a call runs once. Sequences of different lengths share a forward,
    right-padded (a causal model's last real token never sees the padding), sorted by length
    so that little is padding, `batch_size` at a time: BOS + tokens through the model up to
    the hooked block, then the SAE's encode at each sequence's last token."""

    def __init__(self, run: RunContext, bos: int | None, batch_size: int) -> None:
        self.run, self.head, self.batch_size = run, [] if bos is None else [bos], batch_size
        self.n_sequences = self.n_forwarded = self.n_tokens = 0

    @torch.no_grad()
    def __call__(self, seqs: list[list[int]], latents: list[int]) -> np.ndarray:
        users: dict[tuple, list[int]] = defaultdict(list)
        for i, seq in enumerate(seqs):
            users[tuple(seq)].append(i)
        distinct = sorted(users, key=len)
        out = np.zeros(len(seqs))
        for start in range(0, len(distinct), self.batch_size):
            chunk = distinct[start : start + self.batch_size]
            width = len(self.head) + len(chunk[-1])
            tokens = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, seq in enumerate(chunk):
                tokens[row, : len(self.head) + len(seq)] = torch.tensor([*self.head, *seq])
            last = torch.tensor([len(self.head) + len(seq) - 1 for seq in chunk])
            x = self.run.activations(tokens)[torch.arange(len(chunk)), last.to(self.run.device)]
            acts, _ = self.run.sae.encode(x.float())
            rows = [row for row, seq in enumerate(chunk) for _ in users[seq]]
            wanted = [i for seq in chunk for i in users[seq]]
            out[wanted] = acts[rows, [latents[i] for i in wanted]].cpu().numpy()
            self.n_forwarded += len(chunk)
            self.n_tokens += int(last.sum()) + len(chunk)
        self.n_sequences += len(seqs)
        return out


@dataclass
class Explained:
    """The explained latents' explanations and the scored latents' scores; `contexts` are the
    run's token contexts, whose tokens from `first` on (after BOS) the predictions read."""

    explanations: dict[int, Explanation]
    scores: dict[int, dict[str, float]]
    padding: int
    contexts: np.ndarray
    first: int
    seconds: float = 0.0
    n_sequences: int = 0  # short sequences asked for
    n_forwarded: int = 0  # ... of which distinct (run)
    n_tokens: int = 0  # tokens forwarded
    patterns: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def results(self) -> dict[str, float]:
        """`explain/<score>` for each of `score`'s: means over the scored latents."""
        out = {"explain/n_latents": float(len(self.scores))}
        for key in SCORES:
            values = [s[key] for s in self.scores.values()]
            out[f"explain/{key}"] = float(np.mean(values)) if values else 0.0
        out["explain/n_explained"] = float(len(self.explanations))
        out["explain/seconds"] = round(self.seconds, 3)
        out["explain/tokens_forwarded"] = float(self.n_tokens)
        return out

    def record(self, latent: int) -> dict[str, Any] | None:
        """The latent record's `explanation` (docs/export-format.md)."""
        if latent not in self.explanations:
            return None
        if latent not in self.patterns:
            self.patterns[latent] = self.explanations[latent].patterns()
        scores = self.scores.get(latent)
        rounded = {k: round(v, 4) for k, v in scores.items()} if scores else {}
        return {"patterns": self.patterns[latent], "padding_token": self.padding, **rounded}

    def predict_example(self, latent: int, example: dict[str, Any]) -> list[float]:
        """The prediction at each token of an exported example, read from its context's start
        (0 at a context's BOS)."""
        start = example["pos"] - example["idx"]  # the window's first position in its context
        end = start + len(example["tokens"])
        begin = max(start, self.first)
        prefix = self.contexts[example["ctx"], self.first : end].tolist()
        predicted = self.explanations[latent].predict(prefix, first=begin - self.first)
        return [0.0] * (begin - start) + [round(v, 4) for v in predicted]


def sample_latents(fired: np.ndarray, n: int | str, seed: int) -> np.ndarray:
    """The alive latents, or a seeded sample of `n` of them (sorted)."""
    alive = np.flatnonzero(fired > 0)
    if n == "all" or n >= len(alive):
        return alive
    return np.sort(np.random.default_rng(seed).choice(alive, int(n), replace=False))


def explain_latents(
    run: RunContext,
    settings: ExplainSettings,
    top: Sets,
    reservoir: Sets,
    n_random: int,
    fired: np.ndarray,
) -> Explained:
    """Explain a sample of the alive latents (`settings.n_latents`) from the export's top and
    first `n_random` distinct reservoir examples; score each on its other reservoir windows
    and as many silent windows."""
    started = time.perf_counter()
    bos = run.model.tokenizer.bos_token_id if run.data.prepend_bos else None
    padding = padding_token(run.model.tokenizer, settings.padding_token)
    contexts = Contexts(run.data.tokens.cpu().numpy(), 0 if bos is None else 1)
    latents = sample_latents(fired, settings.n_latents, run.seed)
    model_fn = ModelLatents(run, bos, settings.batch_size)
    silent = SilentWindows(run, contexts, latents, settings.silent_contexts, top.tokens.shape[2])
    explanations: dict[int, Explanation] = {}
    scores: dict[int, dict[str, float]] = {}
    bar = tqdm(total=len(latents), desc="explain latents (N2G)", unit="latent", leave=False)
    for start in range(0, len(latents), settings.latents_per_step):
        chunk = latents[start : start + settings.latents_per_step]
        examples, held_out = [], {}
        for latent in chunk.tolist():
            built, held_out[latent] = split_examples(latent, top, reservoir, n_random, contexts)
            examples += built
        explanations.update(build(model_fn, examples, padding, settings.max_tokens))
        for latent in chunk.tolist():
            if latent in explanations and held_out[latent]:
                windows = held_out[latent] + silent.windows(latent, len(held_out[latent]))
                found = score(explanations[latent], windows)
                if found is not None:
                    scores[latent] = found
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - started
    return Explained(explanations, scores, padding, contexts.tokens, contexts.first, seconds,
                     model_fn.n_sequences, model_fn.n_forwarded, model_fn.n_tokens)  # fmt: skip


@dataclass
class Contexts:
    """The run's token contexts; `first`: the first position after BOS (0 without BOS)."""

    tokens: np.ndarray  # [contexts, n_ctx]
    first: int

    def prefix(self, ctx: int, end: int) -> list[int]:
        """Context `ctx`'s tokens from `first` up to (not including) position `end`."""
        return self.tokens[ctx, self.first : end].tolist()


def split_examples(
    latent: int, top: Sets, reservoir: Sets, n_random: int, contexts: Contexts
) -> tuple[list[Example], list[Window]]:
    """A latent's building examples (its top, then its first `n_random` distinct reservoir
    examples, as the export shows them) and its held-out windows (the other reservoir windows
    from contexts no building example came from, with a window key none has).

    A building example is its context from the start up to the selected token, as OpenAI's
    are whole documents cut after it: the export's windows keep only 16 tokens left of it,
    and the whole window often falls below half the activation (about a third of the tiny
    model's top examples), which left OpenAI's fallback (the whole sequence) a long pattern
    that must begin its sequence and so matched almost nowhere."""
    top_slots = np.flatnonzero(top.valid[latent])
    sampled = distinct(reservoir, latent, np.flatnonzero(reservoir.valid[latent]))
    chosen = [(top, int(s)) for s in top_slots] + [(reservoir, int(s)) for s in sampled[:n_random]]
    examples = [
        Example(latent, contexts.prefix(sets.ctx[latent, s], sets.pos[latent, s] + 1),
                float(sets.act[latent, s]))
        for sets, s in chosen
    ]  # fmt: skip
    built = [(top, top_slots), (reservoir, sampled[:n_random])]
    used_keys = {int(k) for sets, slots in built for k in sets.key[latent, slots]}
    used_contexts = {int(c) for sets, slots in built for c in sets.ctx[latent, slots]}
    held_out = []
    for slot in sampled[n_random:]:
        key, ctx = int(reservoir.key[latent, slot]), int(reservoir.ctx[latent, slot])
        if key in used_keys or ctx in used_contexts:
            continue
        inside = reservoir.tokens[latent, slot] >= 0
        start = int(reservoir.pos[latent, slot]) - reservoir.left + int(inside.argmax())
        acts = reservoir.acts[latent, slot][inside]
        end = start + len(acts)
        begin = max(start, contexts.first)  # not a context's BOS
        tokens = contexts.prefix(int(reservoir.ctx[latent, slot]), end)
        held_out.append(Window(tokens, acts[begin - start :].tolist()))
    return examples, held_out


class SilentWindows:
    """Windows of `width` tokens cut from a seeded sample of the run's contexts (after BOS),
    and for each explained latent the windows where it never fires."""

    def __init__(
        self, run: RunContext, contexts: Contexts, latents: np.ndarray, n_contexts: int, width: int
    ) -> None:
        generator = torch.Generator().manual_seed(run.seed + 1)
        picked = torch.randperm(len(contexts.tokens), generator=generator)[:n_contexts]
        starts = list(range(contexts.first, contexts.tokens.shape[1] - width + 1, width))
        self.places: list[tuple[int, int]] = []  # (context, window start)
        fired = []  # [contexts, windows, explained latents]
        ids = torch.as_tensor(latents, device=run.device)
        with torch.no_grad():
            for batch in picked.split(8):
                acts = run.activations(torch.from_numpy(contexts.tokens[batch.numpy()]))
                latent_acts, _ = run.sae.encode(acts.flatten(0, 1).float())
                latent_acts = latent_acts[:, ids].view(len(batch), acts.shape[1], -1)
                spans = torch.stack([latent_acts[:, s : s + width].amax(1) for s in starts], 1)
                fired.append((spans > 0).cpu())
                self.places += [(int(ctx), s) for ctx in batch for s in starts]
        self.fired = torch.cat(fired).flatten(0, 1).numpy()  # [windows, explained latents]
        self.column = {int(latent): i for i, latent in enumerate(latents)}
        self.contexts, self.width = contexts, width

    def windows(self, latent: int, n: int) -> list[Window]:
        """Up to `n` windows where `latent` is silent throughout, in the sample's order."""
        quiet = np.flatnonzero(~self.fired[:, self.column[latent]])[:n]
        return [
            Window(self.contexts.prefix(ctx, s + self.width), [0.0] * self.width)
            for ctx, s in (self.places[i] for i in quiet)
        ]
