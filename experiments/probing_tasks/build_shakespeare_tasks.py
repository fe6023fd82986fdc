"""Build the labelled text tasks of `sparse_probing` from the bundled Shakespeare corpus.

Labels come from the corpus's structure and from facts, never from heuristics on the text
being labelled:
- `shakespeare_play`: which of five plays a passage is from (the work it sits in);
- `shakespeare_genre`: comedy, history, tragedy or poem, the genre of the passage's work
  (`GENRES`: the First Folio's catalogue of 1623; the poems were not in the Folio);
- `shakespeare_speaker`: which of four characters of Othello speaks a passage (the speaker
  heading above it).

A passage is one speech of a play (the lines under a speaker heading, stage directions
dropped) or one stanza of a poem, at least `MIN_CHARS` long, cut at a line end to at most
`MAX_CHARS`. Each task samples passages per class with a fixed seed and splits them into
train and test by passage (each passage is in one split only). Output, one gzip'd JSONL file
per task in `saelab/zoo/shakespeare/tasks/` (mtime 0: byte-identical on every run), a line per
passage: `{"text", "label", "split", "work", "corpus", "block"}` (`block`: the index of the
passage's blank-line-separated block in its work, so it can be found again).

    python experiments/probing_tasks/build_shakespeare_tasks.py
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import re
from collections import defaultdict
from pathlib import Path

ZOO = Path(__file__).resolve().parents[2] / "saelab" / "zoo" / "shakespeare"
SEPARATOR = "\n<|endoftext|>\n"
MIN_CHARS, MAX_CHARS = 40, 500
SEED = 0

# Each work's title line (as in the corpus) -> (short name, genre). Genres: the First Folio's
# catalogue (Comedies, Histories, Tragedies); Troilus and Cressida is printed there between
# the histories and tragedies as "The Tragedie of Troylus and Cressida" and Cymbeline among
# the tragedies. Pericles is not in the Folio: no genre. The poems were published apart.
WORKS = {
    "ALL'S WELL THAT ENDS WELL": ("alls_well", "comedy"),
    "ANTONY AND CLEOPATRA": ("antony_and_cleopatra", "tragedy"),
    "AS YOU LIKE IT": ("as_you_like_it", "comedy"),
    "THE COMEDY OF ERRORS": ("comedy_of_errors", "comedy"),
    "THE TRAGEDY OF CORIOLANUS": ("coriolanus", "tragedy"),
    "CYMBELINE": ("cymbeline", "tragedy"),
    "HAMLET, PRINCE OF DENMARK": ("hamlet", "tragedy"),
    "KING HENRY IV, THE FIRST PART": ("henry_iv_1", "history"),
    "KING HENRY IV, SECOND PART": ("henry_iv_2", "history"),
    "THE LIFE OF KING HENRY V": ("henry_v", "history"),
    "KING HENRY VI, FIRST PART": ("henry_vi_1", "history"),
    "HISTORY OF KING HENRY THE SIXTH, SECOND PART": ("henry_vi_2", "history"),
    "THE HISTORY OF KING HENRY THE SIXTH, THIRD PART": ("henry_vi_3", "history"),
    "THE LIFE OF HENRY THE EIGHTH": ("henry_viii", "history"),
    "KING JOHN": ("king_john", "history"),
    "JULIUS CAESAR": ("julius_caesar", "tragedy"),
    "THE TRAGEDY OF KING LEAR": ("king_lear", "tragedy"),
    "LOVE'S LABOUR'S LOST": ("loves_labours_lost", "comedy"),
    "MEASURE FOR MEASURE": ("measure_for_measure", "comedy"),
    "THE MERCHANT OF VENICE": ("merchant_of_venice", "comedy"),
    "THE MERRY WIVES OF WINDSOR": ("merry_wives", "comedy"),
    "A MIDSUMMER NIGHT'S DREAM": ("midsummer_nights_dream", "comedy"),
    "MUCH ADO ABOUT NOTHING": ("much_ado", "comedy"),
    "OTHELLO, THE MOOR OF VENICE": ("othello", "tragedy"),
    "PERICLES PRINCE OF TYRE": ("pericles", None),
    "THE RAPE OF LUCRECE": ("rape_of_lucrece", "poem"),
    "THE TRAGEDY OF KING RICHARD THE SECOND": ("richard_ii", "history"),
    "THE LIFE AND DEATH OF KING RICHARD III": ("richard_iii", "history"),
    "ROMEO AND JULIET": ("romeo_and_juliet", "tragedy"),
    "THE SONNETS": ("sonnets", "poem"),
    "THE TAMING OF THE SHREW": ("taming_of_the_shrew", "comedy"),
    "THE TEMPEST": ("tempest", "comedy"),
    "THE LIFE OF TIMON OF ATHENS": ("timon_of_athens", "tragedy"),
    "THE TRAGEDY OF TITUS ANDRONICUS": ("titus_andronicus", "tragedy"),
    "THE HISTORY OF TROILUS AND CRESSIDA": ("troilus_and_cressida", "tragedy"),
    "THE TWO GENTLEMEN OF VERONA": ("two_gentlemen", "comedy"),
    "THE WINTER'S TALE": ("winters_tale", "comedy"),
    "A LOVER'S COMPLAINT": ("lovers_complaint", "poem"),
    "MACBETH": ("macbeth", "tragedy"),
    "THE PASSIONATE PILGRIM": ("passionate_pilgrim", "poem"),
    "THE PHOENIX AND THE TURTLE": ("phoenix_and_the_turtle", "poem"),
    "TWELFTH NIGHT; OR, WHAT YOU WILL": ("twelfth_night", "comedy"),
}
PLAYS = ("hamlet", "merry_wives", "richard_iii", "othello", "twelfth_night")
SPEAKER_PLAY, SPEAKERS = "othello", ("OTHELLO", "IAGO", "DESDEMONA", "CASSIO")
# per class: passages sampled, and how many of them are held out for test
SIZES = {"shakespeare_play": (400, 100), "shakespeare_genre": (400, 100),
         "shakespeare_speaker": (64, 16)}  # fmt: skip

# A speaker heading: a short line of capitalised words (or numbers: "1 Clown."), ending in a
# full stop or all in capitals ("LYSANDER").
HEADING = re.compile(r"^(?:\d |[A-Z][A-Za-z']*\.? )*[A-Z][A-Za-z']*\.?$")


def works() -> list[tuple[str, str, str]]:
    """(title, corpus file, text) of every work of both splits of the corpus."""
    found = []
    for name in ("train.txt.gz", "val.txt.gz"):
        with gzip.open(ZOO / name, "rt", encoding="utf-8") as f:
            for text in f.read().removesuffix("\n").split(SEPARATOR):
                found.append((text.split("\n", 1)[0], name, text))
    return found


def is_heading(line: str) -> bool:
    line = line.strip()
    return (
        len(line) <= 32
        and bool(HEADING.match(line))
        and (line.endswith(".") or line == line.upper())
    )


def clip(lines: list[str]) -> str:
    """The lines joined, cut at a line end to at most MAX_CHARS (the first line always kept)."""
    text = lines[0]
    for line in lines[1:]:
        if len(text) + 1 + len(line) > MAX_CHARS:
            break
        text += "\n" + line
    return text[:MAX_CHARS]


def passages(text: str, poem: bool) -> list[tuple[int, str | None, str]]:
    """(block index, speaker or None, passage) of a work: its speeches, or a poem's stanzas."""
    found = []
    for index, block in enumerate(text.split("\n\n")):
        lines = [line for line in block.strip("\n").split("\n") if not line.startswith("[")]
        speaker = None
        if not poem:
            if len(lines) < 2 or not is_heading(lines[0]):
                continue
            speaker, lines = lines[0].strip().rstrip("."), lines[1:]
        elif len(lines) < 2:
            continue
        passage = clip([line.strip() for line in lines])
        if len(passage) >= MIN_CHARS:
            found.append((index, speaker, passage))
    return found


def sample(task: str, by_class: dict[str, list[dict]], rng: random.Random) -> list[dict]:
    """Per class `SIZES[task]` passages, the last of them held out for test."""
    n, n_test = SIZES[task]
    rows = []
    for label in sorted(by_class):
        pool = by_class[label]
        if len(pool) < n:
            raise SystemExit(f"{task}: class {label} has {len(pool)} passages, needs {n}")
        chosen = rng.sample(pool, n)
        for i, row in enumerate(chosen):
            rows.append({**row, "label": label, "split": "test" if i >= n - n_test else "train"})
    return rows


def build() -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    play, genre, speaker = defaultdict(list), defaultdict(list), defaultdict(list)
    for title, corpus, text in works():
        if title not in WORKS:
            raise SystemExit(f"work {title!r} is not in the WORKS table")
        work, work_genre = WORKS[title]
        for block, who, passage in passages(text, poem=work_genre == "poem"):
            row = {"text": passage, "work": work, "corpus": corpus, "block": block}
            if work in PLAYS:
                play[work].append(row)
            if work_genre is not None:
                genre[work_genre].append(row)
            if work == SPEAKER_PLAY and who in SPEAKERS:
                speaker[who].append(row)
    return {
        "shakespeare_play": sample("shakespeare_play", play, rng),
        "shakespeare_genre": sample("shakespeare_genre", genre, rng),
        "shakespeare_speaker": sample("shakespeare_speaker", speaker, rng),
    }


def write(rows: list[dict], path: Path) -> None:
    keys = ("text", "label", "split", "work", "corpus", "block")
    lines = "".join(json.dumps({k: row[k] for k in keys}) + "\n" for row in rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as f:
        f.write(lines.encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ZOO / "tasks")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for task, rows in build().items():
        path = args.out / f"{task}.jsonl.gz"
        write(rows, path)
        counts = defaultdict(int)
        for row in rows:
            counts[row["label"], row["split"]] += 1
        print(f"{path.name}: {len(rows)} passages, {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
