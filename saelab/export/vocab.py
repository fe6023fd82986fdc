"""Each token's raw bytes, so that the viewer decodes characters split across tokens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: the printable stand-in character of each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {byte: chr(byte) for byte in printable}
    extra = (byte for byte in range(256) if byte not in chars)
    chars.update({byte: chr(256 + i) for i, byte in enumerate(extra)})
    return {char: byte for byte, char in chars.items()}


BYTE_DECODER = _byte_level_decoder()


def token_bytes(tokenizer: Any, ids: Iterable[int]) -> list[bytes]:
    """Raw bytes of each token id, so characters split across tokens decode in order; ids the
    tokenizer lacks map to empty bytes, special tokens to their text, other tokenizers' pieces
    to their UTF-8 text (best effort). The export's vocab and the prompt view use it."""
    special = set(getattr(tokenizer, "all_special_tokens", []))
    out = []
    for piece in tokenizer.convert_ids_to_tokens(list(ids)):
        if piece is None:
            out.append(b"")
        elif piece not in special and all(char in BYTE_DECODER for char in piece):
            out.append(bytes(BYTE_DECODER[char] for char in piece))
        else:
            out.append(piece.encode())
    return out
