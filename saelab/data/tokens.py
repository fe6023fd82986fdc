"""Token contexts for evaluation: text (streamed from the hub or local files) or random ids.

Documents are tokenised, joined with the end-of-text token and cut into fixed-length
contexts (64 tokens by default, as OpenAI's GPT-2 SAEs were trained), each starting with
BOS. The first position is excluded from metrics by default: GPT-2's first position is an
attention sink with a huge residual norm that would dominate every average.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from saelab.errors import UserError, first_line
from saelab.zoo import ZOO_DIR


class TokenSource(Protocol):
    def contexts(
        self, tokenizer: Any, vocab_size: int, n: int, n_ctx: int, bos: int | None, seed: int
    ) -> Tensor: ...


class TextSource:
    """Anything yielding documents as strings; packed into contexts by `pack`."""

    name = "text"

    def documents(self, seed: int) -> Iterator[str]:
        raise NotImplementedError

    def contexts(
        self, tokenizer: Any, vocab_size: int, n: int, n_ctx: int, bos: int | None, seed: int
    ) -> Tensor:
        return self.contexts_with_documents(tokenizer, vocab_size, n, n_ctx, bos, seed)[0]

    def contexts_with_documents(
        self, tokenizer: Any, vocab_size: int, n: int, n_ctx: int, bos: int | None, seed: int
    ) -> tuple[Tensor, Tensor]:
        """Contexts and, per position, the index of the document its token came from."""
        desc = f"tokenize {self.name}"
        return pack(self.documents(seed), tokenizer, n, n_ctx, bos, desc=desc)


class HubText(TextSource):
    """A Hugging Face dataset, streamed (OpenWebText by default); needs the network.

    Evaluation and training read disjoint blocks of documents, in the stream's order:
    `part="eval"` reads documents [0, eval_documents), `part="train"` every document after
    them, `part="all"` the whole stream. The split is by document, so it holds for any
    `n_ctx` and token budget; a shuffle (`shuffle_buffer`) mixes documents within a part only.
    """

    PARTS = ("eval", "train", "all")

    def __init__(
        self,
        path: str = "Skylion007/openwebtext",
        split: str = "train",
        text_field: str = "text",
        revision: str | None = None,
        part: str = "all",
        eval_documents: int = 0,
        shuffle_buffer: int = 0,
    ) -> None:
        if part not in self.PARTS:
            parts = ", ".join(self.PARTS)
            raise UserError(f"data.source.part must be one of {parts}, not {part!r}")
        if eval_documents < 0 or (part == "eval" and eval_documents == 0):
            raise UserError(
                f"data.source.eval_documents={eval_documents}: part=eval needs a positive "
                "number of reserved documents (e.g. data.source.eval_documents=20000)"
            )
        self.path, self.split, self.text_field, self.revision = path, split, text_field, revision
        self.part, self.eval_documents, self.shuffle_buffer = part, eval_documents, shuffle_buffer
        start, stop = self.document_range
        self.name = f"{path} documents {start}-{'end' if stop is None else stop - 1}"

    @property
    def document_range(self) -> tuple[int, int | None]:
        """[start, stop) of the documents this part reads; stop None is the end of the stream."""
        if self.part == "eval":
            return 0, self.eval_documents
        if self.part == "train":
            return self.eval_documents, None
        return 0, None

    def documents(self, seed: int) -> Iterator[str]:
        import datasets

        hint = "offline? use data=text_files data.source.paths=[...] or data=random_tokens"
        with hub_errors(self.path, self.revision, hint, key="data.source"):
            stream = datasets.load_dataset(
                self.path, split=self.split, streaming=True, revision=self.revision
            )
            start, stop = self.document_range
            if start:
                stream = stream.skip(start)
            if stop is not None:
                stream = stream.take(stop - start)
            if self.shuffle_buffer:  # after skip/take: shuffles within this part only
                stream = stream.shuffle(seed=seed, buffer_size=self.shuffle_buffer)
            for row in stream:
                yield row[self.text_field]


@contextmanager
def hub_errors(
    path: str, revision: str | None, offline_hint: str, key: str | None = None
) -> Iterator[None]:
    """Failures of `datasets` reading `path` from the hub as one line each: a script-based
    dataset, a missing dataset or revision, no network (`offline_hint` says what to do).
    `key`: the config node that names the dataset, if one does."""
    try:
        yield
    except RuntimeError as error:
        if "Dataset scripts are no longer supported" not in str(error):
            raise
        revision_key = f"{key}.revision=" if key else "revision "
        raise UserError(
            f"{path} is a script-based dataset, which datasets>=4 no longer runs: "
            f"use its Parquet conversion, {revision_key}refs/convert/parquet "
            "(the default for OpenWebText), or a dataset without a script"
        ) from None
    except FileNotFoundError as error:  # datasets' DatasetNotFoundError, missing revisions
        check = f"; check {key}.path and {key}.revision" if key else ""
        raise UserError(
            f"could not find {path} (revision {revision or 'main'}) on the Hugging "
            f"Face hub ({first_line(error)}){check}"
        ) from None
    except (ConnectionError, OSError) as error:
        raise UserError(
            f"could not stream {path} from the Hugging Face hub "
            f"({first_line(error)}); {offline_hint}"
        ) from None


class TextFiles(TextSource):
    """Local files: `.txt` is one document per file, `.jsonl` one `{"text": ...}` per line."""

    def __init__(self, paths: list[str], text_field: str = "text") -> None:
        self.paths = [Path(str(p)).expanduser() for p in paths or []]
        self.text_field = text_field
        self.name = ",".join(p.name for p in self.paths)
        if not self.paths:
            raise UserError("data=text_files needs files: data.source.paths=[a.txt,b.jsonl]")
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise UserError(f"data file not found: {', '.join(missing)}")

    def documents(self, seed: int) -> Iterator[str]:
        for path in self.paths:
            if path.suffix == ".jsonl":
                with open(path, "rb") as f:
                    for line_no, raw in enumerate(f, 1):
                        line = decode(raw, f"{path}:{line_no}")
                        if line.strip():
                            yield self._field(line, path, line_no)
            else:
                yield decode(path.read_bytes(), str(path))

    def _field(self, line: str, path: Path, line_no: int) -> str:
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{where} is not valid JSON ({error.msg} at column {error.colno}); each line "
                f'of a .jsonl file must be one object like {{"{self.text_field}": "..."}}'
            ) from None
        if not isinstance(row, dict) or self.text_field not in row:
            raise UserError(
                f"{where} has no {self.text_field!r} field; set data.source.text_field= "
                "to the field that holds the text"
            )
        if not isinstance(row[self.text_field], str):
            raise UserError(f"{where}: {self.text_field!r} is not a string")
        return row[self.text_field]


def decode(data: bytes, where: str) -> str:
    """UTF-8 text, or one line naming the file (and line) that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{where} is not UTF-8 text (byte {error.start}: {data[error.start]:#04x}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


class Bundled(TextSource):
    """The Shakespeare corpus shipped in saelab/zoo (offline); `val` is held out from training
    the tiny model, `train` is what it (and its SAEs) were trained on."""

    SEPARATOR = "\n<|endoftext|>\n"

    def __init__(self, split: str = "val") -> None:
        if split not in ("train", "val"):
            raise UserError(f"data.source.split must be train or val, not {split!r}")
        self.path = ZOO_DIR / "shakespeare" / f"{split}.txt.gz"
        self.name = f"bundled shakespeare/{split}"

    def documents(self, seed: int) -> Iterator[str]:
        with gzip.open(self.path, "rt", encoding="utf-8") as f:
            yield from f.read().removesuffix("\n").split(self.SEPARATOR)


class RandomTokens:
    """Seeded uniform token ids: offline data for `random_gpt2` tests and benchmarks."""

    name = "random_tokens"

    def contexts(
        self, tokenizer: Any, vocab_size: int, n: int, n_ctx: int, bos: int | None, seed: int
    ) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, vocab_size, (n, n_ctx), generator=generator)
        if bos is not None:
            tokens[:, 0] = bos
        return tokens


def pack(
    documents: Iterable[str],
    tokenizer: Any,
    n: int,
    n_ctx: int,
    bos: int | None,
    desc: str = "tokenize",
) -> tuple[Tensor, Tensor]:
    """Join documents with end-of-text and cut up to `n` contexts of `n_ctx` tokens; also, per
    position, the index of the document its token came from (a document's end-of-text token is
    its own; a BOS takes the document of the token after it)."""
    body = n_ctx - (bos is not None)
    eos = tokenizer.eos_token_id
    out = torch.empty(n, n_ctx, dtype=torch.long)
    doc_ids = torch.empty(n, n_ctx, dtype=torch.long)
    buffer: list[int] = []
    buffer_docs: list[int] = []
    filled = 0
    with tqdm(total=n, desc=desc, unit="ctx", leave=False) as bar:
        for index, doc in enumerate(documents):
            ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
            buffer.extend(ids)
            buffer.append(eos)
            buffer_docs.extend([index] * (len(ids) + 1))
            while len(buffer) >= body and filled < n:
                head = [bos] if bos is not None else []
                out[filled] = torch.tensor(head + buffer[:body])
                doc_ids[filled] = torch.tensor(buffer_docs[: len(head)] + buffer_docs[:body])
                del buffer[:body], buffer_docs[:body]
                filled += 1
                bar.update()
            if filled == n:
                break
    return out[:filled], doc_ids[:filled]


class TokenDataModule(L.LightningDataModule):
    """Fixed-length token contexts for `test`, with the positions that count in metrics."""

    def __init__(
        self,
        source: TokenSource,
        n_tokens: int = 1 << 20,
        n_ctx: int = 64,
        batch_size: int = 32,
        prepend_bos: bool = True,
        exclude_first: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.source, self.n_tokens, self.n_ctx = source, int(n_tokens), int(n_ctx)
        self.batch_size, self.prepend_bos = batch_size, prepend_bos
        self.exclude_first = exclude_first
        self.seed, self.num_workers = seed, num_workers
        self.tokens: Tensor | None = None
        self.documents: Tensor | None = None  # document id per position, if the source knows

    def prepare(
        self, tokenizer: Any, vocab_size: int, model_n_ctx: int, n_tokens: int | None = None
    ) -> None:
        """Tokenise once, before the loop starts (it needs the model's tokenizer).

        `n_tokens` overrides `data.n_tokens` (training sets its own budget)."""
        if self.n_ctx > model_n_ctx:
            raise UserError(f"data.n_ctx={self.n_ctx} exceeds the model's context {model_n_ctx}")
        n_tokens = self.n_tokens if n_tokens is None else n_tokens
        n_contexts = n_tokens // self.n_ctx
        if n_contexts < self.batch_size:
            raise UserError(
                f"data.n_tokens={n_tokens} is less than one batch "
                f"(data.batch_size={self.batch_size} x data.n_ctx={self.n_ctx} = "
                f"{self.batch_size * self.n_ctx} tokens); raise data.n_tokens or lower batch_size"
            )
        bos = tokenizer.bos_token_id if self.prepend_bos else None
        args = (tokenizer, vocab_size, n_contexts, self.n_ctx, bos, self.seed)
        if hasattr(self.source, "contexts_with_documents"):
            tokens, self.documents = self.source.contexts_with_documents(*args)
        else:
            tokens = self.source.contexts(*args)
        if len(tokens) == 0:
            raise UserError(f"the dataset {self.source.name} yielded no text")
        if len(tokens) < self.batch_size:
            raise UserError(
                f"the dataset {self.source.name} gave only {len(tokens)} contexts of "
                f"{self.n_ctx} tokens, less than one batch (data.batch_size={self.batch_size})"
            )
        if len(tokens) < n_contexts:  # the text ran out: say so rather than count fewer quietly
            print(
                f"note: {self.source.name} gave {len(tokens)} of the {n_contexts} contexts "
                f"asked for ({len(tokens) * self.n_ctx} of {n_tokens} tokens)"
            )
        self.tokens = tokens

    def position_mask(self, tokens: Tensor) -> Tensor:
        """True where a position counts in metrics (and where the SAE is spliced in)."""
        mask = torch.ones_like(tokens, dtype=torch.bool)
        if self.exclude_first:
            mask[:, 0] = False
        return mask

    def fingerprint(self) -> str:
        """sha256 of the evaluated tokens (every context, as int64) and of which positions count:
        two runs with the same fingerprint saw the same contexts, so their per-context values
        pair up (`saelab compare`)."""
        assert self.tokens is not None, "call prepare() first"
        layout = f"{tuple(self.tokens.shape)} exclude_first={self.exclude_first}"
        digest = hashlib.sha256(layout.encode())
        digest.update(self.tokens.to(torch.int64).cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def collate(self, indices: list[int]) -> dict[str, Tensor]:
        """A batch of contexts by index: tokens, mask (and its true positions as flat indices),
        the context indices and, per position, document ids (the context index where the
        source has no documents) for the export."""
        assert self.tokens is not None
        context = torch.tensor(indices)
        tokens = self.tokens[context]
        if self.documents is None:
            documents = context[:, None].expand_as(tokens)
        else:
            documents = self.documents[context]
        mask = self.position_mask(tokens)
        return {
            "tokens": tokens,
            "mask": mask,
            "positions": mask.flatten().nonzero().squeeze(1),  # on the host: no device sync
            "context": context,
            "document": documents,
        }

    def test_dataloader(self) -> DataLoader:
        """This rank's contexts: rank r of w takes contexts r, r + w, ... Lightning's
        distributed sampler would pad the shards to equal length by repeating contexts, which
        counts their tokens twice, so trainers run with `use_distributed_sampler=False`."""
        assert self.tokens is not None, "call prepare() before testing"
        rank, world = distributed_rank()
        if len(self.tokens) < world:
            raise UserError(
                f"{len(self.tokens)} contexts cannot be shared by {world} processes: "
                "raise data.n_tokens or use fewer devices"
            )
        return DataLoader(
            range(rank, len(self.tokens), world),
            batch_size=self.batch_size,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
