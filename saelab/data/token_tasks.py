"""Binary token-level tasks that need no labels: properties of each token's text (and of the
token before it), computed from any token stream. They feed the `probe` plugin.

A token's text is its raw bytes decoded as UTF-8 (a character split across tokens decodes
to replacement characters and counts as neither letter, digit nor punctuation); special
tokens (BOS, end of text) are negative for every task. "Leading spaces" are the spaces
GPT-2's byte-level BPE puts in front of a word.

Each task and when a token is positive:
- `starts_word`: it begins with a letter after optional leading spaces, and it has a leading
  space or the token before it ends in whitespace;
- `capitalised`: its first character after leading spaces is an upper-case letter;
- `all_caps`: it has at least two letters and every letter is upper case;
- `punctuation`: it is non-blank and every character that is not a space is punctuation;
- `digit`: it contains a digit; `newline`: it contains a newline;
- `follows_newline`: the token before it ends in a newline;
- `first_letter_a` .. `first_letter_z`: its first character after leading spaces is that
  letter, either case.
"""

from __future__ import annotations

import string
import unicodedata
from typing import Any

import torch
from torch import Tensor

from saelab.errors import UserError
from saelab.export.vocab import token_bytes

LETTERS = string.ascii_lowercase
# Properties of a token's own text, one column each of `vocab_table`.
FIRST_LETTER = tuple(f"first_letter_{c}" for c in LETTERS)
OWN = ("starts_letter", "leading_space", "ends_space", "ends_newline",
       "capitalised", "all_caps", "punctuation", "digit", "newline", *FIRST_LETTER)  # fmt: skip
TASKS = ("starts_word", "capitalised", "all_caps", "punctuation", "digit", "newline",
         "follows_newline", *FIRST_LETTER)  # fmt: skip


def text_properties(text: str) -> dict[str, bool]:
    """The `OWN` properties of one token's text."""
    body = text.lstrip(" ")
    first = body[:1]
    letters = [c for c in text if c.isalpha()]
    visible = [c for c in text if not c.isspace()]
    props = {
        "starts_letter": first.isalpha(),
        "leading_space": body != text,
        "ends_space": text[-1:].isspace(),
        "ends_newline": text.endswith("\n"),
        "capitalised": first.isalpha() and first.isupper(),
        "all_caps": len(letters) >= 2 and all(c.isupper() for c in letters),
        "punctuation": bool(visible)
        and all(unicodedata.category(c).startswith("P") for c in visible),
        "digit": any(c.isdigit() for c in text),
        "newline": "\n" in text,
    }
    for c in LETTERS:
        props[f"first_letter_{c}"] = first.lower() == c
    return props


def vocab_table(tokenizer: Any, vocab_size: int) -> Tensor:
    """[vocab_size, len(OWN)] bool: each token's own properties (special tokens: none)."""
    special = set(getattr(tokenizer, "all_special_ids", []))
    table = torch.zeros(vocab_size, len(OWN), dtype=torch.bool)
    for i, raw in enumerate(token_bytes(tokenizer, range(vocab_size))):
        if i in special or not raw:
            continue
        props = text_properties(raw.decode("utf-8", errors="replace"))
        table[i] = torch.tensor([props[name] for name in OWN])
    return table


def check_tasks(names: list[str] | None) -> tuple[str, ...]:
    """The tasks asked for (None: all), each checked to exist."""
    if names is None:
        return TASKS
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise UserError(f"unknown token task(s) {unknown}: choose from {', '.join(TASKS)}")
    return tuple(names)


def labels(table: Tensor, tokens: Tensor, previous: Tensor, tasks: tuple[str, ...]) -> Tensor:
    """[len(tasks), N] bool labels of tokens [N] whose preceding tokens are `previous` [N]
    (-1: none, the first position of a context)."""
    own = table[tokens]  # [N, len(OWN)]
    before = torch.where(
        (previous >= 0)[:, None], table[previous.clamp_min(0)], torch.zeros_like(own)
    )
    col = {name: i for i, name in enumerate(OWN)}
    out = []
    for task in tasks:
        if task == "starts_word":
            after_space = own[:, col["leading_space"]] | before[:, col["ends_space"]]
            out.append(own[:, col["starts_letter"]] & after_space)
        elif task == "follows_newline":
            out.append(before[:, col["ends_newline"]])
        else:
            out.append(own[:, col[task]])
    return torch.stack(out)
