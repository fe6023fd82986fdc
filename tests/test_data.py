import json

import pytest
import torch

from saelab.data.tokens import RandomTokens, TextFiles, TokenDataModule, pack
from saelab.errors import UserError
from saelab.sources.models import byte_tokenizer

EOS = 511
TOKENIZER = byte_tokenizer(EOS)


def test_pack_joins_documents_with_eos_and_prefixes_bos():
    contexts, _ = pack(["abc", "de"], TOKENIZER, n=2, n_ctx=4, bos=EOS)
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
        monkeypatch.setattr("saelab.data.tokens.distributed_rank", lambda rank=rank: (rank, 2))
        shards.append(torch.cat([b["tokens"] for b in data.test_dataloader()]))
    assert [len(shard) for shard in shards] == [5, 4]
    rows = {tuple(row.tolist()) for shard in shards for row in shard}
    assert rows == {tuple(row.tolist()) for row in data.tokens} and len(rows) == 9
    monkeypatch.setattr("saelab.data.tokens.distributed_rank", lambda: (0, 10))
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


# -- the hub stream: eval/train document split and loading errors -----------------------------

N_DOCS = 30_000  # more than the default config's 20,000 reserved evaluation documents


def fake_hub(monkeypatch, n_docs: int = N_DOCS) -> list[dict]:
    """`datasets.load_dataset` answering with a real streamed dataset of local documents, in
    several shards (as a hub Parquet conversion is), recording each call's arguments."""
    import datasets

    docs = datasets.Dataset.from_dict({"text": [f"doc{i:05d}." for i in range(n_docs)]})
    calls: list[dict] = []

    def load_dataset(path, **kwargs):
        calls.append({"path": path, **kwargs})
        return docs.to_iterable_dataset(num_shards=8)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def compose(command: str, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from saelab.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name=command):
        return hydra_compose(command, overrides=list(overrides))


def doc_ids(tokens: torch.Tensor) -> set[int]:
    """The documents whose id appears whole in the contexts."""
    import re

    text = TOKENIZER.decode(tokens.flatten().tolist())
    return {int(match) for match in re.findall(r"doc(\d{5})\.", text)}


def test_default_eval_and_train_configs_read_disjoint_documents(monkeypatch):
    from hydra.utils import instantiate

    calls = fake_hub(monkeypatch)
    eval_data = instantiate(compose("eval").data)
    train_data = instantiate(compose("train").data)
    assert eval_data.source.document_range == (0, 20_000)
    assert train_data.source.document_range == (20_000, None)

    # the whole pipeline: documents -> packed contexts, at the default budgets' shape
    eval_data.prepare(TOKENIZER, 512, 1024)
    eval_ids = doc_ids(eval_data.tokens)
    train_data.prepare(TOKENIZER, 512, 1024, n_tokens=8 * 1024 * 64)
    train_ids = doc_ids(train_data.tokens)
    assert len(eval_ids) > 10_000 and len(train_ids) > 1_000
    assert not eval_ids & train_ids
    assert max(eval_ids) < 20_000 <= min(train_ids)
    assert min(train_ids) <= 20_001  # training starts right after the reserved block
    # both stream OpenWebText's Parquet conversion (datasets 4+ refuses its script)
    assert {(c["path"], c["revision"], c["streaming"]) for c in calls} == {
        ("Skylion007/openwebtext", "refs/convert/parquet", True)
    }


def test_split_holds_for_any_context_length_and_with_shuffling(monkeypatch):
    from hydra.utils import instantiate

    fake_hub(monkeypatch, n_docs=3_000)
    reserve = ["data.source.eval_documents=1000", "+data.source.shuffle_buffer=64"]
    for n_ctx in (16, 128):
        sources = {
            command: instantiate(compose(command, *reserve, f"data.n_ctx={n_ctx}").data).source
            for command in ("eval", "train")
        }
        read = {command: list(s.documents(seed=3)) for command, s in sources.items()}
        assert len(read["eval"]) == 1_000 and len(read["train"]) == 2_000
        assert read["eval"] != sorted(read["eval"])  # shuffled ...
        everything = sorted(read["eval"] + read["train"])  # ... within each part only
        assert everything == [f"doc{i:05d}." for i in range(3_000)]
        assert max(read["eval"]) < min(read["train"])


def test_training_holds_validation_out_of_its_own_part(monkeypatch):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from saelab.tasks import train as run_train

    fake_hub(monkeypatch, n_docs=3_000)
    cfg = compose(
        "train",
        "data.source.eval_documents=1000",
        "data.n_ctx=16",
        "data.batch_size=4",
        "train.n_tokens=4096",
        "train.val_tokens=1024",
    )
    seen = {}

    class Stream:  # stands in for the model's activations: records the training contexts
        def __init__(self, model, hooks, tokens, *args, **kwargs):
            seen["train"] = tokens

    model = SimpleNamespace(tokenizer=TOKENIZER, vocab_size=512, n_ctx=1024)
    monkeypatch.setattr(run_train, "ModelActivations", Stream)
    _, val = run_train.activations_and_validation(cfg, model, {"h": 0})
    val_ids, train_ids = doc_ids(val.tokens), doc_ids(seen["train"])
    assert OmegaConf.select(cfg, "data.source.part") == "train"
    assert val_ids and train_ids and not val_ids & train_ids
    assert min(val_ids) >= 1000 and max(val_ids) < min(train_ids)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            RuntimeError("Dataset scripts are no longer supported, but found openwebtext.py"),
            "script-based dataset.*data.source.revision=refs/convert/parquet",
        ),
        (ConnectionError("Couldn't reach 'x' on the Hub (ConnectError)"), "offline\\?"),
        (FileNotFoundError("Revision 'nope' doesn't exist"), "could not find .*revision"),
    ],
)
def test_hub_loading_failures_are_one_clear_line(monkeypatch, error, expected):
    import re

    import datasets

    from saelab.data.tokens import HubText

    def load_dataset(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(UserError) as info:
        list(HubText(part="eval", eval_documents=10).documents(0))
    message = str(info.value)
    assert re.search(expected, message) and "\n" not in message


def test_other_runtime_errors_are_not_disguised(monkeypatch):
    import datasets

    from saelab.data.tokens import HubText

    def load_dataset(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(RuntimeError, match="a bug"):
        list(HubText().documents(0))


def test_bad_split_settings_are_clear_errors():
    from saelab.data.tokens import HubText

    with pytest.raises(UserError, match="part must be one of eval, train, all"):
        HubText(part="test")
    with pytest.raises(UserError, match="eval_documents=0"):
        HubText(part="eval", eval_documents=0)


def test_bad_text_files_name_the_file_and_line(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"text": "cut\n')
    with pytest.raises(UserError, match=f"{jsonl}:2 is not valid JSON"):
        list(TextFiles([str(jsonl)]).documents(0))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(UserError, match=f"{latin1} is not UTF-8 text \\(byte 3: 0xe9\\)"):
        list(TextFiles([str(latin1)]).documents(0))
    latin1_lines = tmp_path / "latin1.jsonl"
    latin1_lines.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=f"{latin1_lines}:2 is not UTF-8"):
        list(TextFiles([str(latin1_lines)]).documents(0))
    not_object = tmp_path / "list.jsonl"
    not_object.write_text("[1, 2]\n")
    with pytest.raises(UserError, match=f"{not_object}:1 has no 'text' field"):
        list(TextFiles([str(not_object)]).documents(0))
