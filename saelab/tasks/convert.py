"""`saelab convert <in> <out> --to saelab|openai|saelens`: one SAE from any supported format
into another, where the target can express it (JumpReLU has no OpenAI form, for one).

`<in>` is anything `sae.path=` takes (format detected, or `--from`); `<out>` is a directory
for saelab and SAELens, a `.pt` file for OpenAI. Each file is written atomically, the config
last, so a reader never finds a config without its weights. The hook and model the input
records carry over to formats that record them; `--hook`/`--model` give them where it does not
(OpenAI's files record neither).
"""

from __future__ import annotations

from pathlib import Path

from saelab import formats
from saelab.errors import ArgumentParser, UserError, exit_with
from saelab.sae import checkpoints
from saelab.sources.places import Place


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="saelab convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="checkpoint file or directory, local or a blobfile URL")
    parser.add_argument("output", help="directory (saelab, saelens) or .pt file (openai)")
    parser.add_argument("--to", required=True, choices=formats.WRITABLE)
    parser.add_argument("--from", dest="source", default="auto", choices=["auto", *formats.FORMATS])
    parser.add_argument("--hook", help="the hook it reads (blocks.6.hook_mlp_out), if unrecorded")
    parser.add_argument("--model", help="the model it was trained on (e.g. gpt2), likewise")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.is_file() or (output.is_dir() and any(output.iterdir())):
        exit_with(UserError(f"convert: {output} exists; give a new path or remove it first"))
    try:
        loaded = checkpoints.load(path=args.input, format=args.source, check_model=False)
        hook, model = args.hook or loaded.hook, args.model or loaded.model_name
        if hook is not None:
            Place.of_hook(hook)  # a hook saelab knows: one line otherwise
        metadata = {"hook": hook, "model": model, "source": loaded.source}
        written = formats.save(loaded.sae, output, args.to, metadata)
    except UserError as error:
        exit_with(error)
    print(f"{loaded.format} -> {args.to}: " + ", ".join(str(p) for p in written))
