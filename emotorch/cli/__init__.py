"""The ``emotorch`` command: a thin shell over the Python API. Results to stdout, logs to stderr.

Each command group lives in its own module with ``add(subparsers)``, which declares its options
(shared ones from :mod:`emotorch.cli.options`) and sets ``run``, the function that carries it out.
Building the parser imports nothing heavy; a command imports what it uses when it runs.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys

from emotorch.cli import analyse, data, evaluate, predict, recommend, serve, train, video
from emotorch.cli.options import EXIT_FAILED, EXIT_USAGE, Parser
from emotorch.errors import (
    CatalogBusy,
    CatalogError,
    CheckpointError,
    DatabaseUnavailable,
    DataError,
    MissingExtra,
    require_torch,
)
from emotorch.runtime import threads

GROUPS = (data, train, evaluate, predict, video, analyse, recommend, serve)  # in the order --help lists them
FAILED = (DataError, CheckpointError, CatalogError, FileNotFoundError, CatalogBusy, DatabaseUnavailable, MissingExtra)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: ``args.run(args)`` carries out the one given."""
    parser = Parser(prog="emotorch", description="Facial emotion recognition on FER2013-style data.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log lines")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.add(sub)
    return parser


def _unknown_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The error for a first word that is no command, naming its nearest one (argparse lists them all)."""
    words = [w for w in argv if not w.startswith("-")]
    commands = list(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)
    if not words or words[0] in commands:
        return None
    hint = difflib.get_close_matches(words[0], commands, n=1)
    nearest = f"did you mean {hint[0]!r}?" if hint else f"commands: {', '.join(commands)}"
    return f"unknown command {words[0]!r}; {nearest}"


def _log_to_stderr(quiet: bool) -> None:
    """EmoTorch's own log lines go to stderr; other libraries keep their default (warnings only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("emotorch")
    ours.handlers[:] = [handler]
    ours.setLevel(logging.WARNING if quiet else logging.INFO)
    ours.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 0 on success, 1 when an input failed, 2 for a usage error."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    unknown = _unknown_command(parser, argv)
    if unknown:
        print(f"emotorch: error: {unknown}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    _log_to_stderr(args.quiet)
    try:
        if getattr(args, "needs_torch", False):
            require_torch(f"emotorch {args.command}")
        if hasattr(args, "threads") and not getattr(args, "own_threads", False):
            threads.configure(args.threads)
        return args.run(args) or 0
    except FAILED as e:  # an input, file or database could not be used
        print(f"emotorch: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, FileExistsError) as e:  # the command asked for something it cannot do
        print(f"emotorch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("emotorch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `emotorch report --json | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_FAILED
    except Exception as e:
        if type(e).__module__.split(".")[0] != "sqlalchemy":
            raise
        from emotorch.recommend.db import default_url, describe  # only a database that opened, then failed

        print(f"emotorch: error: {describe(getattr(args, 'db', None) or default_url(), e)}", file=sys.stderr)
        return EXIT_FAILED
