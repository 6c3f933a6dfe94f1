"""The errors EmoTorch raises for things a user can fix. Each message is one line that names the
file, row, path or database and says what is wrong; the CLI prints it as it is and exits 1.

They live apart from the code that raises them, so that the CLI can catch them without importing
PyTorch, SQLAlchemy or NumPy.
"""

from __future__ import annotations

import importlib.util


class DataError(ValueError):
    """A data source is malformed; the message names the file, row or path and the problem."""


class CheckpointError(ValueError):
    """A file is not a usable EmoTorch checkpoint; the message names it and says why."""


class CatalogError(ValueError):
    """A catalog file is invalid; the message names the file, row and field."""


class CatalogBusy(RuntimeError):
    """Another import changed the catalog at the same moment; this one changed nothing."""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be opened, read or written; the message names it and says why, in one line."""


class MissingExtra(RuntimeError):
    """A command needs an optional part (PyTorch: the ``train`` extra) that is not installed."""


def installed(module: str) -> bool:
    """Whether an optional module (``torch``: the ``train`` extra, ``matplotlib``: ``plots``) is installed."""
    return importlib.util.find_spec(module) is not None


def _require(module: str, package: str, extra: str, what: str) -> None:
    if not installed(module):
        raise MissingExtra(f'{what} needs {package}, which this install lacks: pip install "emotorch[{extra}]"')


def require_torch(what: str) -> None:
    """Raise :class:`MissingExtra` in one line when PyTorch (the ``train`` extra) is not installed."""
    _require("torch", "PyTorch", "train", what)


def require_plots(what: str) -> None:
    """Raise :class:`MissingExtra` in one line when matplotlib (the ``plots`` extra) is not installed: called
    before any work, so a command never runs for minutes and then fails for its plot."""
    _require("matplotlib", "matplotlib", "plots", what)
