"""`saelab view DIR [DIR ...] [overrides]`: browse exports (and OpenAI's viewer files) locally.

Not a Hydra app: it takes directories and flags. Hydra-style overrides (`experiment=tiny`)
name a model and SAE for the prompt view; they compose `conf/eval.yaml` like `saelab eval`.
"""

from __future__ import annotations

import argparse
import errno
import sys
import webbrowser
from pathlib import Path

from saelab.errors import ArgumentParser, UserError, exit_with

DESCRIPTION = """Serve the viewer on 127.0.0.1 and open it in the browser.
DIR: an export written by `saelab export`, a directory of OpenAI's viewer files
(<atom>.json), or evaluation results for the runs dashboard (a `saelab sweep` or multirun
folder with sweep.json, or a `saelab eval` run folder with metrics.json). Overrides such as
experiment=tiny (or model=... sae=... layer=... location=...) load a model and SAE for the
prompt view. Each latent page lists its matches in the other served exports (links) where a
match record of the two SAEs is known: a served sweep folder's (sweep.match=true) or a
`saelab match --out` file given with --matches. Ctrl-C stops the server."""


def port(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0: a free one)")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="saelab view", description=DESCRIPTION)
    parser.add_argument("paths", nargs="*", metavar="DIR|OVERRIDE")
    parser.add_argument("--port", type=port, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; ::1 for IPv6); beyond loopback anyone who "
        "can reach the port can read what is served: the viewer has no authentication",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to answer besides loopback's and this machine's (repeatable), "
        "e.g. the name a proxy or another machine uses",
    )
    parser.add_argument(
        "--matches",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a `saelab match --out` file whose two SAEs' exports are served: each latent page "
        "links its matches in the other (repeatable)",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="where OpenAI's viewer files are cached"
    )
    args = parser.parse_args(argv)
    args.host = args.host.removeprefix("[").removesuffix("]")  # [::1] as URLs write it
    # `key=value` that is not an existing path is an override; everything else a directory
    args.overrides = [a for a in args.paths if "=" in a and not Path(a).exists()]
    args.dirs = [a for a in args.paths if a not in args.overrides]
    return args


def serve(argv: list[str]):
    """Build the server (not yet serving): the part tests drive in-process."""
    from saelab.sae.checkpoints import default_cache_dir
    from saelab.server.app import ViewerServer, exposed
    from saelab.server.matches import links
    from saelab.server.runs import nested_exports, open_run

    args = parse(argv)
    runs = [open_run(i, d) for i, d in enumerate(args.dirs)]
    runs += nested_exports(runs)
    found = links(runs, args.matches)
    engine = None
    if args.overrides:
        from saelab.server.prompt import build_engine

        engine = build_engine(args.overrides)
    try:
        server = ViewerServer(
            (args.host, args.port),
            runs,
            args.cache_dir or default_cache_dir(),
            prompt=engine,
            prompt_info=engine.info if engine else None,
            allow_hosts=args.allow_host,
            links=found,
        )
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {args.port} is in use on {args.host}: pass another --port, "
                "or leave it out for a free one"
            ) from None
        raise UserError(f"cannot listen on {args.host}:{args.port} ({error.strerror})") from None
    if exposed(args.host):
        names = ", ".join(sorted(server.host_names))
        print(
            f"saelab view: warning: --host {args.host} serves beyond this machine and the viewer "
            "has no authentication: anyone who can reach the port reads what is served and runs "
            f"the prompt model. Host names answered: {names} (add more with --allow-host NAME)",
            file=sys.stderr,
        )
    return server, args


def main(argv: list[str]) -> None:
    try:
        server, args = serve(argv)
    except UserError as error:
        exit_with(error)
    given = [run for run in server.runs if run.parent is None]
    kinds = ", ".join(f"{run.kind} {run.path}" for run in given) or "no directories"
    print(f"saelab view: {kinds}", file=sys.stderr)
    if server.prompt:
        print(f"saelab view: prompt view on {server.prompt_info['hook']}", file=sys.stderr)
    print(server.url, flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
