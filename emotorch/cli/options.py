"""What the commands share: the parser class, option builders (model, backend, threads, reading, database,
data flags), the one overwrite check and JSON for stdout. Light imports only: `emotorch --help` builds
every command's parser from here without PyTorch, OpenCV or ONNX Runtime."""

from __future__ import annotations

import argparse
import difflib
import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emotorch.choices import BACKENDS, READINGS
from emotorch.runtime.registry import shipped

EXIT_FAILED = 1  # an input (photo, video, data set, checkpoint) could not be read or used
EXIT_USAGE = 2  # bad options or arguments, or an output that exists without --force
DB_HELP = (
    "SQLAlchemy database URL, or a file path for SQLite (default: $EMOTORCH_DB or a SQLite file in the user data dir)"
)


class HelpFormatter(argparse.HelpFormatter):
    """Adds each option's default to its help, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse that suggests the closest valid option for an unknown one (and takes no abbreviations)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        for extra in extras:
            if extra.startswith("-"):
                options = [o for a in self._actions for o in a.option_strings]
                hint = difflib.get_close_matches(extra.split("=")[0], options, n=1)
                self.error(f"unknown option {extra}" + (f"; did you mean {hint[0]}?" if hint else ""))
        return ns, extras


@functools.cache
def shipped_names() -> str:
    """The shipped models' names, from the manifest (read once however many options name them)."""
    return ", ".join(sorted(shipped()))


def model_help(default: str | None = None) -> str:
    """Help for an option naming a model: the shipped models by name."""
    return f"shipped model ({shipped_names()}), checkpoint file or run directory" + (
        f" (default: {default})" if default else ""
    )


def add_model(p: argparse.ArgumentParser, default: str | None = None, *, prefix: str = "") -> None:
    """``--model``: required where there is no default."""
    p.add_argument("--model", default=default, required=default is None, help=prefix + model_help(default))


def add_backend(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    own = "the model's own: ONNX Runtime for shipped models and .onnx files, PyTorch for checkpoints"
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=default,
        help=f"inference engine; auto: ONNX Runtime where it works (default: {default or own})",
    )


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads for ONNX Runtime, OpenCV, OpenMP and PyTorch together (default: the cores "
        "available to this process; serve: shared among its --workers)",
    )


def add_reading(p: argparse.ArgumentParser) -> None:
    """``--reading``; by default the model's own (:func:`emotorch.runtime.reading.chosen`)."""
    p.add_argument(
        "--reading",
        choices=READINGS,
        help="how each face's emotion is read: expressive (the expression it shows: the model's expressive "
        "head, or a non-neutral emotion once its share passes the model's threshold) or crowd (the most "
        "likely of ten people's votes, FER+'s measure) (default: expressive where the model has a head or "
        "threshold, as every shipped model does, else crowd)",
    )


def add_tta(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="average flipped and shifted views of each face: slower, slightly more accurate "
        "(default: the model's own setting)",
    )


def add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help=DB_HELP)


def add_force(p: argparse.ArgumentParser, what: str = "an existing --out file") -> None:
    p.add_argument("--force", action="store_true", help=f"overwrite {what}")


def add_json(p: argparse.ArgumentParser, what: str = "print one JSON object") -> None:
    p.add_argument("--json", action="store_true", help=what)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--labels",
        metavar="FER2013NEW_CSV",
        help="FER+ votes (fer2013new.csv) for a fer2013.csv given as the data; they pair row by row",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad rows or images instead of failing")
    p.add_argument("--skip-unknown", action="store_true", help="ignore class folders with unknown names")


def add_detection(p: argparse.ArgumentParser, every: int) -> None:
    """How often and at what size a video's faces are detected."""
    p.add_argument(
        "--detect-every",
        type=int,
        default=every,
        metavar="N",
        help=f"run the face detector every N frames, following faces by optical flow in between (default: {every})",
    )
    p.add_argument(
        "--detect-size",
        type=int,
        default=640,
        metavar="PX",
        help="detect faces on a copy at most PX pixels on its long side, boxes mapped back "
        "(default: 640; 320 detects about twice as fast but misses small faces)",
    )


def refuse_overwrite(paths: Iterable[Path], force: bool, where: str | None = None) -> None:
    """FileExistsError naming the outputs that exist, unless ``force``: nothing a user had is overwritten
    without asking. ``where``: the folder they are in, to say so."""
    existing = [str(p) for p in dict.fromkeys(paths) if p.exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        verb = "exists" if len(existing) == 1 else "exist"
        held = f"{where} already holds {shown}" if where else f"{shown} already {verb}"
        raise FileExistsError(f"{held}; pass --force to overwrite")


def to_json(obj: Any, **kwargs: Any) -> str:
    """JSON for stdout; NaN or infinity (not JSON) is an error rather than invalid output."""
    return json.dumps(obj, allow_nan=False, **kwargs)
