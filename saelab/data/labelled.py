"""Labelled text tasks for `sparse_probing`: texts with a class label and a train/test split.

Two kinds, by name:
- **Bundled** (offline): `shakespeare_play`, `shakespeare_genre`, `shakespeare_speaker`, built
  once from the bundled corpus by `experiments/probing_tasks/build_shakespeare_tasks.py`, with
  labels from the corpus's structure (the work a passage sits in, the speaker heading above a
  speech) and from facts (the First Folio's genre of each work); split by passage. Files:
  `saelab/zoo/shakespeare/tasks/<name>.jsonl.gz`, one `{"text", "label", "split", ...}` per
  line (see the README there).
- **SAEBench's datasets** (`HUB`, from the Hugging Face hub; needs the network): the names,
  columns and chosen classes of SAEBench's sparse probing (`sae_bench_utils/dataset_info.py`
  and `dataset_utils.py`), streamed through `datasets` and read in the stream's order until
  each class has its texts. Where a dataset has no test split, each class's first texts are
  its train texts and the next its test texts. Bias in Bios is balanced by gender and the
  Amazon categories by rating within each class, as SAEBench balances them.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from saelab.data.tokens import hub_errors
from saelab.errors import UserError
from saelab.zoo import ZOO_DIR

TASKS_DIR = ZOO_DIR / "shakespeare" / "tasks"
BUNDLED = ("shakespeare_play", "shakespeare_genre", "shakespeare_speaker")
OFFLINE_HINT = (
    "offline? use the bundled tasks: "
    "evals.sparse_probing.datasets=[shakespeare_play,shakespeare_genre,shakespeare_speaker]"
)


@dataclass
class LabelledTexts:
    """Texts, their labels and whether each is held out for test."""

    name: str
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    test: list[bool] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def first(self, n_train: int | None, n_test: int | None) -> LabelledTexts:
        """At most the first `n_train` train and `n_test` test texts of each class (None: all)."""
        out, seen = LabelledTexts(self.name), defaultdict(int)
        for text, label, test in zip(self.texts, self.labels, self.test, strict=True):
            limit = n_test if test else n_train
            if limit is None or seen[label, test] < limit:
                out.add(text, label, test)
                seen[label, test] += 1
        return out

    def add(self, text: str, label: str, test: bool) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.test.append(test)


@dataclass(frozen=True)
class HubTask:
    """One of SAEBench's datasets: where its texts and labels are, and its chosen classes.

    `configs`: a dataset config per class (Europarl: a language pair per language, the text
    being `text[label]`); `balance`: a column whose values (`balance_values`) share each
    class's texts equally; `skip_chars`: characters cut from the start of each text (a code
    file's licence header), keeping texts longer than `min_chars` after the cut."""

    path: str
    text: str
    label: str
    classes: tuple[str, ...]
    test_split: str | None = "test"
    configs: dict[str, str] | None = None
    balance: str | None = None
    balance_values: tuple[str, ...] = ()
    skip_chars: int = 0
    min_chars: int = 0
    revision: str | None = None

    def load(self, name: str, n_train: int, n_test: int) -> LabelledTexts:
        out = LabelledTexts(name)
        if self.configs:  # one stream per class
            for label in self.classes:
                self._read(out, self.configs[label], "train", (label,), n_train, n_test)
        elif self.test_split is None:
            self._read(out, None, "train", self.classes, n_train, n_test)
        else:
            self._read(out, None, "train", self.classes, n_train, 0)
            self._read(out, None, self.test_split, self.classes, 0, n_test)
        return out

    def _read(
        self, out: LabelledTexts, config: str | None, split: str, classes: tuple[str, ...],
        n_train: int, n_test: int,
    ) -> None:  # fmt: skip
        """Texts of `classes` from one stream: the first `n_train` of each class for train,
        the next `n_test` for test."""
        import datasets

        want = n_train + n_test
        groups = self.balance_values or ("",)
        per_group = -(-want // len(groups))  # each balance value's share of a class
        counts: dict[tuple[str, str], int] = defaultdict(int)
        taken: dict[str, int] = defaultdict(int)
        where = f"{self.path}{f' ({config})' if config else ''} {split}"
        with hub_errors(self.path, self.revision, OFFLINE_HINT):
            stream = datasets.load_dataset(
                self.path, name=config, split=split, streaming=True, revision=self.revision
            )
            for row in stream:
                label = classes[0] if self.configs else _value(row[self.label])
                if label not in classes or taken[label] >= want:
                    continue
                group = _value(row[self.balance]) if self.balance else ""
                if group not in groups or counts[label, group] >= per_group:
                    continue
                text = row[self.text][label] if self.configs else row[self.text]
                text = text[self.skip_chars :]
                if len(text) <= self.min_chars:
                    continue
                counts[label, group] += 1
                out.add(text, label, test=taken[label] >= n_train)
                taken[label] += 1
                if all(taken[c] >= want for c in classes):
                    return
        short = {c: taken[c] for c in classes if taken[c] < want}
        raise UserError(f"{where} ran out with too few texts per class (wanted {want}): {short}")


def _value(value) -> str:
    """A label as SAEBench writes it: ints as "3", floats as "5.0"."""
    return str(value)


# SAEBench 0.6's datasets and chosen classes (sae_bench_utils/dataset_info.py).
HUB: dict[str, HubTask] = {
    **{
        f"LabHC/bias_in_bios_class_set{i}": HubTask(
            "LabHC/bias_in_bios", "hard_text", "profession", classes,
            balance="gender", balance_values=("0", "1"),
        )
        for i, classes in enumerate(
            [("0", "1", "2", "6", "9"), ("11", "13", "14", "18", "19"),
             ("20", "21", "22", "25", "26")], start=1,
        )
    },
    "canrager/amazon_reviews_mcauley_1and5": HubTask(
        "canrager/amazon_reviews_mcauley_1and5", "text", "category",
        ("1", "2", "3", "5", "6"), balance="rating", balance_values=("1.0", "5.0"),
    ),
    "canrager/amazon_reviews_mcauley_1and5_sentiment": HubTask(
        "canrager/amazon_reviews_mcauley_1and5", "text", "rating", ("1.0", "5.0"),
    ),
    # a script-based dataset: read from its Parquet conversion (datasets>=4 runs no scripts)
    "codeparrot/github-code": HubTask(
        "codeparrot/github-code", "code", "language", ("C", "Python", "HTML", "Java", "PHP"),
        test_split=None, skip_chars=150, min_chars=384, revision="refs/convert/parquet",
    ),
    "fancyzhx/ag_news": HubTask("fancyzhx/ag_news", "text", "label", ("0", "1", "2", "3")),
    "Helsinki-NLP/europarl": HubTask(
        "Helsinki-NLP/europarl", "translation", "language", ("en", "fr", "de", "es", "nl"),
        configs={"en": "en-fr", "fr": "fr-it", "de": "de-en", "es": "es-fr", "nl": "nl-pt"},
        test_split=None,
    ),
}  # fmt: skip


def load(name: str, n_train: int = 2000, n_test: int = 500) -> LabelledTexts:
    """A task by name: bundled (as shipped), or one of SAEBench's (`n_train` and `n_test`
    texts per class; SAEBench's defaults)."""
    if name in BUNDLED:
        return bundled(TASKS_DIR / f"{name}.jsonl.gz", name)
    if name in HUB:
        return HUB[name].load(name, n_train, n_test)
    raise UserError(
        f"unknown labelled task {name!r}: bundled {', '.join(BUNDLED)}; "
        f"SAEBench's (network) {', '.join(HUB)}"
    )


def bundled(path: Path, name: str) -> LabelledTexts:
    out = LabelledTexts(name)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out.add(row["text"], row["label"], row["split"] == "test")
    return out
