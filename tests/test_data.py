import json

import pytest
import torch

from saelab.data import RandomTokens, TextFiles, TokenDataModule, pack
from saelab.errors import UserError
from saelab.models import byte_tokenizer

EOS = 511
TOKENIZER = byte_tokenizer(EOS)


def test_pack_joins_documents_with_eos_and_prefixes_bos():
    contexts = pack(["abc", "de"], TOKENIZER, n=2, n_ctx=4, bos=EOS)
    ids = [TOKENIZER.convert_tokens_to_ids(c) for c in "abcde"]
    # stream: a b c <eos> d e <eos>; each context: <bos> + 3 tokens
    assert contexts.tolist() == [[EOS, *ids[:3]], [EOS, EOS, ids[3], ids[4]]]


def test_text_files_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "first"}) + "\n\n" + json.dumps({"text": "second"}) + "\n"
    )
    docs = list(TextFiles([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")]).documents(0))
    assert docs == ["hello world", "first", "second"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(UserError, match="no 'text' field"):
        list(TextFiles([str(tmp_path / "c.jsonl")]).documents(0))
    with pytest.raises(UserError, match="not found"):
        TextFiles([str(tmp_path / "nope.txt")])


def test_random_tokens_are_seeded_and_in_vocab():
    a = RandomTokens().contexts(None, 100, 8, 16, bos=99, seed=3)
    b = RandomTokens().contexts(None, 100, 8, 16, bos=99, seed=3)
    c = RandomTokens().contexts(None, 100, 8, 16, bos=99, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (8, 16) and (a[:, 0] == 99).all() and a.max() < 100


def test_data_module_batches_and_mask():
    data = TokenDataModule(RandomTokens(), n_tokens=64 * 16, n_ctx=16, batch_size=8)
    data.prepare(TOKENIZER, 512, model_n_ctx=1024)
    batches = list(data.test_dataloader())
    assert len(batches) == 8 and batches[0]["tokens"].shape == (8, 16)
    assert not batches[0]["mask"][:, 0].any() and batches[0]["mask"][:, 1:].all()
    assert sum(int(b["mask"].sum()) for b in batches) == 64 * 15
    keep_first = TokenDataModule(
        RandomTokens(), n_tokens=256, n_ctx=16, batch_size=8, exclude_first=False
    )
    keep_first.prepare(TOKENIZER, 512, model_n_ctx=1024)
    assert next(iter(keep_first.test_dataloader()))["mask"].all()


def test_ranks_share_the_contexts_without_repeats(monkeypatch):
    """Under DDP each context is evaluated once: 9 contexts over 2 ranks are 5 + 4, not 5 + 5."""
    data = TokenDataModule(RandomTokens(), n_tokens=9 * 16, n_ctx=16, batch_size=2)
    data.prepare(TOKENIZER, 512, model_n_ctx=1024)
    assert data.tokens is not None
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr("saelab.data.distributed_rank", lambda rank=rank: (rank, 2))
        shards.append(torch.cat([b["tokens"] for b in data.test_dataloader()]))
    assert [len(shard) for shard in shards] == [5, 4]
    rows = {tuple(row.tolist()) for shard in shards for row in shard}
    assert rows == {tuple(row.tolist()) for row in data.tokens} and len(rows) == 9
    monkeypatch.setattr("saelab.data.distributed_rank", lambda: (0, 10))
    with pytest.raises(UserError, match="9 contexts cannot be shared by 10 processes"):
        data.test_dataloader()


def test_empty_dataset_and_small_budget_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    data = TokenDataModule(TextFiles([str(empty)]), n_tokens=4096, n_ctx=16, batch_size=2)
    with pytest.raises(UserError, match="less than one batch|no text"):
        data.prepare(TOKENIZER, 512, 1024)
    small = TokenDataModule(RandomTokens(), n_tokens=100, n_ctx=16, batch_size=8)
    with pytest.raises(UserError, match="less than one batch"):
        small.prepare(TOKENIZER, 512, 1024)
    long_ctx = TokenDataModule(RandomTokens(), n_tokens=10_000, n_ctx=2048, batch_size=1)
    with pytest.raises(UserError, match="exceeds the model's context"):
        long_ctx.prepare(TOKENIZER, 512, 1024)
