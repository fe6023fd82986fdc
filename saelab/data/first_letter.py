"""SAEBench's first-letter task (feature absorption, Chanin et al. "A is for Absorption"):
every alphabetic word token of the vocabulary, shown to the model in an in-context prompt
that asks for its first letter. It feeds the `absorption` plugin.

As SAEBench (`sae_bench/evals/absorption/vocab.py`, `prompting.py`, `probing.py`):
- a word is a token whose text is ASCII letters after at most one leading space;
- the words are shuffled (seeded) and split, the first `1 - test_fraction` train;
- each word's prompt is BOS, a newline, then `icl_examples` other words of its own split
  (drawn at random, never the word itself), each as the template followed by its answer
  (a space and the upper-case letter, " S"), one per line, then the word in the template:
  `"\\n{ex} has the first letter: E\\n...\\n{word} has the first letter:"`;
- the activation is read at the word's token.

Prompts are built from token ids, the word's own token at a known position (SAEBench
tokenises the text and reads a fixed offset from the end, which needs the word to stay one
token); a letter whose answer is more than one token makes prompts differ in length, so
they are right-padded (the model is causal: padding after the word does not reach it).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from saelab.errors import UserError
from saelab.export.vocab import token_bytes

LETTERS = string.ascii_lowercase
TEMPLATE = "{word} has the first letter:"


@dataclass
class FirstLetterTask:
    """The words and their prompts, train words first: rows `[0, n_train)` train, the rest
    test. `prompts` [n, T] token ids (right-padded), `position` [n] the word's position."""

    token: Tensor  # [n] the word's token id
    letter: Tensor  # [n] its first letter, 0..25
    words: list[str]
    n_train: int
    prompts: Tensor
    position: Tensor

    def __len__(self) -> int:
        return len(self.words)


def alpha_tokens(tokenizer: Any, vocab_size: int) -> tuple[list[int], list[str]]:
    """(ids, texts) of the tokens whose text is ASCII letters after at most one leading space
    (SAEBench's `get_alpha_tokens`); special tokens excluded."""
    special = set(getattr(tokenizer, "all_special_ids", []))
    ids, texts = [], []
    for i, raw in enumerate(token_bytes(tokenizer, range(vocab_size))):
        text = raw.decode("utf-8", errors="replace")
        body = text.removeprefix(" ")
        if i not in special and body and all(c in string.ascii_letters for c in body):
            ids.append(i)
            texts.append(text)
    return ids, texts


def _pieces(tokenizer: Any, template: str) -> tuple[list[int], ...]:
    """Token ids of the template around the word, of each letter's answer and of a newline,
    and the BOS (empty if the tokenizer has none)."""
    if template.count("{word}") != 1:
        raise UserError(f"evals.absorption.template={template!r} needs one '{{word}}'")

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    before, after = (encode(part) for part in template.split("{word}"))
    answers = [encode(f" {c.upper()}") for c in LETTERS]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return before, after, answers, encode("\n"), bos


def prompt_length(tokenizer: Any, template: str = TEMPLATE, icl_examples: int = 10) -> int:
    """The most tokens a prompt can take up to and including the word (what the model reads):
    every example with the longest answer."""
    before, after, answers, newline, bos = _pieces(tokenizer, template)
    example = len(before) + 1 + len(after) + max(map(len, answers)) + len(newline)
    return len(bos) + len(newline) + icl_examples * example + len(before) + 1


def build(
    tokenizer: Any,
    vocab_size: int,
    template: str = TEMPLATE,
    icl_examples: int = 10,
    test_fraction: float = 0.2,
    max_words: int | None = None,
    seed: int = 0,
) -> FirstLetterTask:
    """The task over `tokenizer`'s vocabulary (the first `max_words` shuffled words: all if
    None)."""
    before, after, answers, newline, bos = _pieces(tokenizer, template)
    ids, texts = alpha_tokens(tokenizer, vocab_size)
    rng = random.Random(seed)
    order = rng.sample(range(len(ids)), len(ids))[:max_words]
    n_train = int(len(order) * (1 - test_fraction))
    if min(n_train, len(order) - n_train) <= icl_examples:
        raise UserError(
            f"the first-letter task has {len(order)} words ({n_train} train): too few for "
            f"{icl_examples} in-context examples per prompt on each split (evals.absorption."
            "max_words, icl_examples)"
        )
    token = [ids[i] for i in order]
    words = [texts[i] for i in order]
    letter = [LETTERS.index(w.strip()[0].lower()) for w in words]
    prompts, position = [], []
    for split in (range(n_train), range(n_train, len(order))):
        for row in split:
            examples = rng.sample(split, icl_examples + 1)
            examples = [r for r in examples if r != row][:icl_examples]
            ids_ = [*bos, *newline]
            for ex in examples:
                ids_ += [*before, token[ex], *after, *answers[letter[ex]], *newline]
            position.append(len(ids_) + len(before))
            prompts.append([*ids_, *before, token[row], *after])
    width = max(len(p) for p in prompts)
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    padded = torch.full((len(prompts), width), pad, dtype=torch.long)
    for row, p in enumerate(prompts):
        padded[row, : len(p)] = torch.tensor(p)
    return FirstLetterTask(torch.tensor(token, dtype=torch.long), torch.tensor(letter), words,
                           n_train, padded, torch.tensor(position))  # fmt: skip
