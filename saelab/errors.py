"""User errors: bad input that deserves one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys

OFFLINE_HINT = (
    "offline? use files on disk: model=random_gpt2 or model=hf_local model.path=<dir>, "
    "sae=file sae.path=<file> (README: 'The same, offline')"
)


class UserError(Exception):
    """Something the user can fix: the message says what was wrong and how to fix it."""


def first_line(error: BaseException, limit: int = 120) -> str:
    """The gist of a library's exception, short enough for a one-line message."""
    return (str(error).splitlines() or [type(error).__name__])[0][:limit]


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the plain-argument tools: a bad argument is one line and exit 2."""

    def error(self, message: str) -> None:
        exit_with(UserError(f"{self.prog}: {message} ({self.prog} --help)"))


def exit_with(error: UserError) -> None:
    print(f"saelab: error: {error}", file=sys.stderr)
    raise SystemExit(2)
