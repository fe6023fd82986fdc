"""Model sources: a TransformerLens `TransformerBridge` plus its tokenizer and hook names.

Hook names are the contract between a model source and everything downstream; OpenAI's
location names map onto them as in their README. Weights are used as Hugging Face ships
them (no weight processing), so residual activations are the un-centred ones OpenAI's SAEs
were trained on.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from saelab.errors import OFFLINE_HINT, UserError, first_line
from saelab.sources.places import Place, every_place
from saelab.sources.precision import Precision
from saelab.zoo import ZOO_DIR

HookFn = Callable[[Tensor, Any], Tensor]


@dataclass
class ModelSource:
    """A language model with named hook points; `name` is recorded in results. Its forwards
    run at `precision` (`precision=`)."""

    name: str
    bridge: TransformerBridge
    tokenizer: Any
    precision: Precision = field(default_factory=Precision)

    @property
    def n_layers(self) -> int:
        return self.bridge.cfg.n_layers

    @property
    def n_ctx(self) -> int:
        return self.bridge.cfg.n_ctx

    @property
    def vocab_size(self) -> int:
        return self.bridge.cfg.d_vocab

    def places(self) -> list[Place]:
        """Every place an SAE can read in this model."""
        return every_place(self.n_layers)

    def capture(
        self,
        tokens: Tensor,
        hooks: Iterable[str],
        stop_at_layer: int | None = None,
        keep: Callable[[Tensor], Tensor] = lambda act: act,
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """One forward: the activation at each of `hooks` (through `keep`, e.g. a slice, as
        the forward goes), and the logits unless it stops before block `stop_at_layer`."""
        hooks = set(hooks)
        acts: dict[str, Tensor] = {}

        def capture(act: Tensor, hook: Any) -> Tensor:
            acts[hook.name] = keep(act)
            return act

        with self.precision.forward(tokens.device):
            out = self.bridge.run_with_hooks(
                tokens, fwd_hooks=[(name, capture) for name in hooks], stop_at_layer=stop_at_layer
            )
        # the bridge may fire a hook under its canonical name (an alias of the one asked for)
        acts = {name: acts[self.bridge.hook_dict[name].name] for name in hooks}
        return acts, (out if stop_at_layer is None else None)

    def replace_hooks(
        self, hook: str, positions: Tensor, value: Tensor
    ) -> list[tuple[str, HookFn]]:
        """Forward hooks that run the model with `value` [len(positions), width] as the
        activation at `hook` at `positions` (flat indices into batch x context, row-major),
        so that everything downstream of the hook sees the replacement. Indices rather than
        a boolean mask: a gather and a scatter of known size never wait for the GPU.

        Most hook points are the only way their value travels on. The residual stream after
        attention is not: it feeds ln_2 and the skip connection around the MLP, and the
        bridge's `hook_resid_mid` is ln_2's input alone. So it is replaced through the
        attention output, `attn_out' = value - resid_pre`, which both readers add up.
        """

        def put(act: Tensor, new: Tensor) -> Tensor:
            flat = act.flatten(0, 1).index_copy(0, positions, new.to(act.dtype))
            return flat.reshape(act.shape)

        if not hook.endswith(".hook_resid_mid"):
            return [(hook, lambda act, hook: put(act, value))]
        block = hook.removesuffix(".hook_resid_mid")
        resid_pre: list[Tensor] = []

        def keep_resid_pre(act: Tensor, hook: Any) -> Tensor:
            resid_pre.append(act)
            return act

        def replace_attn_out(act: Tensor, hook: Any) -> Tensor:
            return put(act, value - resid_pre[-1].flatten(0, 1).index_select(0, positions))

        return [
            (f"{block}.hook_resid_pre", keep_resid_pre),
            (f"{block}.hook_attn_out", replace_attn_out),
        ]

    def resid_pre(self, layer: int) -> str:
        """The hook of the residual stream entering block `layer` (`forward_from`'s input)."""
        return f"blocks.{layer}.hook_resid_pre"

    def forward_from(
        self, layer: int, resid_pre: Tensor, hooks: list[tuple[str, HookFn]] = ()
    ) -> Tensor:
        """Logits from block `layer` on, given the residual stream entering it, under `hooks`.

        The blocks are called one by one, so the blocks before `layer` do not run again (the
        bridge's own `start_at_layer` still runs them). Every source here boots the bridge
        with GPT-2's architecture, whose blocks need nothing but the residual stream (learned
        positions are added before block 0; attention is causal by default).
        """
        with self.bridge.hooks(fwd_hooks=list(hooks)), self.precision.forward(resid_pre.device):
            x = resid_pre
            for block in self.bridge.blocks[layer:]:
                x = block(x)
                x = x[0] if isinstance(x, tuple) else x
            return self.bridge.unembed(self.bridge.ln_final(x))

    def width(self, hook: str) -> int:
        cfg = self.bridge.cfg
        return cfg.d_mlp if hook.endswith("mlp.hook_post") else cfg.d_model

    def unembedding(self) -> tuple[Tensor, Tensor]:
        """(W_U [d_model, vocab], the final layer norm's scale [d_model]): a residual
        direction's direct effect on the logits."""
        return self.bridge.W_U, self.bridge.ln_final.w

    def mlp_out_weight(self, layer: int) -> Tensor:
        """[d_mlp, d_model]: how block `layer`'s MLP writes its activations to the residual."""
        return self.bridge.blocks[layer].mlp.W_out

    def __deepcopy__(self, memo: dict) -> ModelSource:
        """A model source is a shared, read-only resource: copies of a module share it."""
        return self

    def to(self, device: torch.device | str) -> ModelSource:
        with contextlib.redirect_stdout(io.StringIO()):  # the bridge prints each move
            self.bridge.to(device)
        return self


def _boot(name: str, hf_model: PreTrainedModel, tokenizer: Any) -> ModelSource:
    hf_model.eval().requires_grad_(False)
    # The bridge reports its boot on stdout and the root logger; keep the CLI output clean.
    with contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
        bridge = TransformerBridge.boot_transformers(
            "gpt2", hf_model=hf_model, tokenizer=tokenizer, device="cpu"
        )
    return ModelSource(name, bridge, bridge.tokenizer)


@contextlib.contextmanager
def _quiet_logging():
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def gpt2(name: str = "gpt2") -> ModelSource:
    """GPT-2 (small by default) from the Hugging Face hub; cached by Hugging Face after once."""
    from transformers import AutoTokenizer

    try:  # the Hugging Face cache first: no network needed once downloaded
        hf_model = GPT2LMHeadModel.from_pretrained(name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError:
        try:
            hf_model = GPT2LMHeadModel.from_pretrained(name)
            tokenizer = AutoTokenizer.from_pretrained(name)
        except OSError as error:
            raise UserError(
                f"could not load {name!r} from the Hugging Face hub ({first_line(error)}); "
                f"{OFFLINE_HINT}"
            ) from None
    return _boot(name, hf_model, tokenizer)


def hf_local(path: str, name: str | None = None) -> ModelSource:
    """A Hugging Face causal LM (GPT-2 family) and its tokenizer in a local directory (offline)."""
    from transformers import AutoTokenizer

    directory = Path(str(path)).expanduser()
    if not (directory / "config.json").is_file():
        raise UserError(
            f"no Hugging Face model in {directory} (expected config.json there; "
            "set model.path=<dir written by save_pretrained>)"
        )
    hf_model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return _boot(name or directory.name, hf_model, tokenizer)


def bundled(name: str = "tiny") -> ModelSource:
    """A model bundled in saelab/zoo, loaded exactly as `hf_local` loads a local directory."""
    return hf_local(str(ZOO_DIR / name), name=f"zoo/{name}")


def random_gpt2(
    seed: int = 0,
    n_layers: int = 12,
    d_model: int = 768,
    n_heads: int = 12,
    n_ctx: int = 1024,
    vocab_size: int = 50257,
) -> ModelSource:
    """GPT-2-small-shaped model with seeded random weights: offline tests and benchmarks."""
    hf_model = random_hf_gpt2(seed, n_layers, d_model, n_heads, n_ctx, vocab_size)
    return _boot(f"random_gpt2(seed={seed})", hf_model, byte_tokenizer(vocab_size - 1))


def random_hf_gpt2(
    seed: int, n_layers: int, d_model: int, n_heads: int, n_ctx: int, vocab_size: int
) -> GPT2LMHeadModel:
    config = GPT2Config(
        n_layer=n_layers,
        n_embd=d_model,
        n_head=n_heads,
        n_positions=n_ctx,
        vocab_size=vocab_size,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def byte_tokenizer(eos_id: int) -> PreTrainedTokenizerFast:
    """Bytes as tokens 0-255 and `<|endoftext|>` as `eos_id`: lets text data feed a random model."""
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = eos_id
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=special,
        eos_token=special,
        unk_token=special,
        add_bos_token=True,
        name_or_path="saelab/byte-level",
    )
