"""`saelab convert <in> <out> --to saelab|openai|saelens`: one SAE from any supported format
into another, where the target can express it (JumpReLU has no OpenAI form, for one).

`<in>` is anything `sae.path=` takes (format detected, or `--from`); `<out>` is a directory
for saelab and SAELens, a `.pt` file for OpenAI. Each file is written atomically, the config
last, so a reader never finds a config without its weights. The hook and model the input
records carry over to formats that record them.
"""

from __future__ import annotations

from pathlib import Path

from saelab import formats
from saelab.errors import ArgumentParser, UserError, exit_with
from saelab.sae import checkpoints


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="saelab convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="checkpoint file or directory, local or a blobfile URL")
    parser.add_argument("output", help="directory (saelab, saelens) or .pt file (openai)")
    parser.add_argument("--to", required=True, choices=formats.WRITABLE)
    parser.add_argument("--from", dest="source", default="auto", choices=["auto", *formats.FORMATS])
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.is_file() or (output.is_dir() and any(output.iterdir())):
        exit_with(UserError(f"convert: {output} exists; give a new path or remove it first"))
    try:
        loaded = checkpoints.load(path=args.input, format=args.source, check_model=False)
        metadata = {"hook": loaded.hook, "model": loaded.model_name, "source": loaded.source}
        written = formats.save(loaded.sae, output, args.to, metadata)
    except UserError as error:
        exit_with(error)
    print(f"{loaded.format} -> {args.to}: " + ", ".join(str(p) for p in written))
