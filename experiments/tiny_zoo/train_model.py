"""Train the tiny zoo's GPT-2 on the bundled Shakespeare, and score it against n-gram baselines.

Deterministic on CPU for a given seed and thread count: the data order comes from a seeded
generator, and two runs with the same flags give bit-identical weights. Training examples are
random windows of the tokenised training split, each prefixed with ``<|endoftext|>`` as BOS, so the
model always sees a BOS at position 0, as it will when analysed later.

Validation scores every token of the validation split exactly once: the split is cut into
consecutive 128-token target chunks, each predicted from BOS plus the chunk's own earlier tokens.
The unigram and bigram baselines (fit on the training tokens) score the same targets, the bigram
conditioned on the same previous input token. ``metrics.json`` in the output holds the numbers.

    python experiments/tiny_zoo/train_model.py --out saelab/zoo/tiny --tokens 4000000 --seed 0

(the command that made the bundled model; about 12 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from prepare_corpus import DEFAULT_OUT as CORPUS_DIR
from prepare_corpus import read_split
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

ZOO_TINY = Path(__file__).resolve().parents[2] / "saelab" / "zoo" / "tiny"
CONTEXT = 128
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def token_stream(tokenizer: PreTrainedTokenizerBase, works: list[str]) -> Tensor:
    """All works as one token sequence: ``<eot> work <eot> work ... <eot>``."""
    eot = tokenizer.eos_token_id
    ids = [eot]
    for work in tokenizer(works, verbose=False)["input_ids"]:
        ids += [*work, eot]
    return torch.tensor(ids)


def eval_pairs(stream: Tensor, bos: int, limit: int | None) -> tuple[Tensor, Tensor]:
    """(inputs, targets) covering ``stream[1 : limit + 1]`` once; targets are padded with -100."""
    ys = list(stream[1:][:limit].split(CONTEXT))
    xs = [torch.cat([torch.tensor([bos]), y[:-1]]) for y in ys]
    pad = partial(pad_sequence, batch_first=True)
    return pad(xs, padding_value=bos), pad(ys, padding_value=-100)


@torch.no_grad()
def model_nats(model: GPT2LMHeadModel, x: Tensor, y: Tensor, batch_size: int = 64) -> float:
    """Summed cross-entropy (nats) of ``model`` on the target tokens in ``y``, in float32."""
    was_training = model.training
    model.eval()
    total = 0.0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        logits = model(xb).logits.float().flatten(0, 1)
        total += F.cross_entropy(logits, yb.flatten(), ignore_index=-100, reduction="sum").item()
    model.train(was_training)
    return total


def ngram_nats(train: Tensor, x: Tensor, y: Tensor, vocab: int) -> dict[str, float]:
    """Summed cross-entropy (nats) of unigram and bigram models fit on the ``train`` tokens."""
    mask = y != -100
    prev, nxt = x[mask].long(), y[mask].long()
    uni = torch.bincount(train, minlength=vocab).double()
    p_uni = (uni + 1) / (uni.sum() + vocab)
    pairs = torch.bincount(train[:-1] * vocab + train[1:], minlength=vocab * vocab)
    pairs = pairs.view(vocab, vocab)
    c_ab = pairs[prev, nxt].double()
    c_a = pairs.sum(1).double()[prev]
    types_a = (pairs > 0).sum(1).double()[prev]  # distinct successors of the previous token
    # Witten-Bell: interpolate with the unigram, trusting a context more the more often it was seen
    # relative to how many different tokens followed it. Parameter-free, and a fairer baseline
    # than add-one, which spreads too much mass over a 4096-token vocabulary.
    witten_bell = (c_ab + types_a * p_uni[nxt]) / (c_a + types_a).clamp(min=1)
    witten_bell = torch.where(c_a > 0, witten_bell, p_uni[nxt])
    return {
        "unigram_add_one": -p_uni[nxt].log().sum().item(),
        "bigram_add_one": -((c_ab + 1) / (c_a + vocab)).log().sum().item(),
        "bigram_witten_bell": -witten_bell.log().sum().item(),
    }


def lr_at(step: int, steps: int, warmup: int, peak: float) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, default=ZOO_TINY, help="tokenizer directory")
    parser.add_argument("--corpus", type=Path, default=CORPUS_DIR)
    parser.add_argument("--tokens", type=int, default=4_000_000, help="training token budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100, help="warmup steps")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=500, help="steps between val evals")
    parser.add_argument("--eval-tokens", type=int, default=None, help="score only N val tokens")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    bos, vocab = tokenizer.bos_token_id, len(tokenizer)
    train = token_stream(tokenizer, read_split(args.corpus / "train.txt.gz"))
    val = token_stream(tokenizer, read_split(args.corpus / "val.txt.gz"))
    val_x, val_y = eval_pairs(val, bos, args.eval_tokens)
    val_tokens = int((val_y != -100).sum())
    val_chars = len(tokenizer.decode(val_y[val_y != -100], skip_special_tokens=True))

    config = GPT2Config(
        vocab_size=vocab,
        n_positions=CONTEXT,
        n_embd=256,
        n_layer=4,
        n_head=4,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        bos_token_id=bos,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="sdpa",  # built into torch: fast to train, nothing extra to load
    )
    model = GPT2LMHeadModel(config)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    steps = math.ceil(args.tokens / (args.batch_size * CONTEXT))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters, {len(train):,} train tokens, {steps} steps")

    def evaluate() -> float:
        return model_nats(model, val_x, val_y) / val_tokens

    generator = torch.Generator().manual_seed(args.seed)
    history = []
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        starts = torch.randint(0, len(train) - CONTEXT, (args.batch_size,), generator=generator)
        y = torch.stack([train[s : s + CONTEXT] for s in starts.tolist()])
        x = torch.cat([torch.full((args.batch_size, 1), bos), y[:, :-1]], dim=1)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, args.warmup, args.lr)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        if done % 50 == 0 or done == steps:
            rate = done * args.batch_size * CONTEXT / (time.perf_counter() - start)
            lr = optimizer.param_groups[0]["lr"]
            print(f"step {done}/{steps} loss {loss.item():.4f} lr {lr:.2e} {rate:,.0f} tok/s")
        if done % args.eval_every == 0 and done < steps:
            val_ce = evaluate()
            history.append({"step": done, "train_loss": loss.item(), "val_nats_per_token": val_ce})
            print(f"  val {val_ce:.4f} nats/token")
    wall = time.perf_counter() - start

    def score(nats: float) -> dict[str, float]:
        bits_per_char = nats / math.log(2) / val_chars
        return {"nats_per_token": nats / val_tokens, "bits_per_char": bits_per_char}

    results = {"model": score(model_nats(model, val_x, val_y))}
    results |= {name: score(nats) for name, nats in ngram_nats(train, val_x, val_y, vocab).items()}
    metrics = {
        "val": results,
        "val_tokens": val_tokens,
        "val_chars": val_chars,
        "train_split_tokens": len(train),
        "train_tokens": steps * args.batch_size * CONTEXT,
        "steps": steps,
        "parameters": n_params,
        "wall_time_s": round(wall, 1),
        "tokens_per_s": round(steps * args.batch_size * CONTEXT / wall),
        "torch": torch.__version__,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "history": history,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)  # float32 model.safetensors + config.json
    # Copied, not re-saved: save_pretrained would add loading kwargs to tokenizer_config.json.
    for name in TOKENIZER_FILES:
        if (args.tokenizer / name).resolve() != (args.out / name).resolve():
            shutil.copyfile(args.tokenizer / name, args.out / name)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
