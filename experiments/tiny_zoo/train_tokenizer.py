"""Train the tiny zoo's byte-level BPE tokenizer on the training split only.

Byte-level, like GPT-2, so any text encodes without unknown tokens. ``<|endoftext|>`` is the one
special token and serves as BOS, EOS and UNK. Saved as a Hugging Face tokenizer directory, loadable
offline with ``AutoTokenizer.from_pretrained(out)``.

    python experiments/tiny_zoo/train_tokenizer.py --out saelab/zoo/tiny
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prepare_corpus import DEFAULT_OUT as CORPUS_DIR
from prepare_corpus import read_split
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOT = "<|endoftext|>"


def train_tokenizer(works: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(works, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=CORPUS_DIR)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()

    train = read_split(args.corpus / "train.txt.gz")
    tokenizer = train_tokenizer(train, args.vocab_size)
    tokenizer.save_pretrained(args.out)
    # transformers 5 records its own class name, "TokenizersBackend", which transformers 4 cannot
    # resolve; "PreTrainedTokenizerFast" loads the same tokenizer.json in both.
    config_path = args.out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    for split, works in (("train", train), ("val", read_split(args.corpus / "val.txt.gz"))):
        tokens = sum(len(ids) for ids in tokenizer(works, verbose=False)["input_ids"])
        chars = sum(len(w) for w in works)
        print(f"{split}: {tokens:,} tokens, {chars:,} chars, {tokens / chars:.3f} tokens/char")


if __name__ == "__main__":
    main()
