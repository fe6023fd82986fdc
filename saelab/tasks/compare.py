"""`saelab compare <run A> <run B>`: each metric of two runs evaluated on the same tokens, their
difference and its paired standard error (from the per-context values each run saved), and
whether it is significant at 95%. A run is an eval run folder or a sweep row's folder
(`<sweep>/<family>/<location>/<layer>`); runs on different tokens are refused."""

from __future__ import annotations

from saelab.errors import ArgumentParser, UserError, exit_with
from saelab.evals import compare


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="saelab compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="run folder (or its metrics.json): an eval run or a sweep row")
    parser.add_argument("b", help="the other run, evaluated on the same tokens")
    args = parser.parse_args(argv)
    try:
        a, b = compare.load(args.a), compare.load(args.b)
        rows = compare.differences(a, b)
    except UserError as error:
        exit_with(error)
    print(compare.table(a, b, rows))
