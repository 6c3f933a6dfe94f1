"""The results folder of :mod:`emotorch.runtime.analyse`: its files, the columns of their rows, and
reading them back row by row (which :mod:`emotorch.runtime.report` shares)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emotorch.errors import DataError

FACES, FILES, PARQUET = "faces.jsonl", "files.jsonl", "faces.parquet"
# what every row analyse writes holds: anything else in --out is not ours to change
FILE_KEYS = frozenset({"source", "kind", "size", "mtime_ns", "frames", "faces", "seconds", "status", "error"})
FACE_KEYS = frozenset(
    {
        "source",
        "kind",
        "frame",
        "time_s",
        "face",
        "x",
        "y",
        "w",
        "h",
        "landmarks",
        "detection_score",
        "emotion",
        "model",
        "model_version",
    }
)


def printable(name: str) -> str:
    """A file name fit for UTF-8-only places (Parquet, plot titles): bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


class Results:
    """The output folder: append-only JSON Lines, one write per finished file, repaired on reopening."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.done: dict[tuple[str, int, int], dict[str, Any]] = {}
        self.models: set[tuple[str, str]] = set()  # (name, version) of every model with rows here
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._repair()
            self._faces = open(out / FACES, "ab")  # noqa: SIM115 - closed by close()
            self._files = open(out / FILES, "ab")  # noqa: SIM115
        except OSError as e:  # a read-only folder, a file in the way, a full disk
            raise DataError(
                f"{e.filename or out}: cannot hold the results ({e.strerror or e}); use another --out folder"
            ) from None

    def _repair(self) -> None:
        """Check every row before changing anything, then finish what a kill left: a half-written last
        line is cut, and face rows of the one file whose summary never arrived (a kill between the
        two writes) are dropped. Results this module did not write, links and folders in their place
        are refused untouched."""
        files_path, faces_path = self.out / FILES, self.out / FACES
        files, files_end, files_tail = checked_rows(files_path, FILE_KEYS, lambda row: row)
        faces, faces_end, faces_tail = checked_rows(
            faces_path, FACE_KEYS, lambda row: (row["source"], row["model"], row["model_version"])
        )
        if faces and not files:
            raise DataError(
                f"{faces_path} has {len(faces)} face rows but {files_path.name} lists no file: not "
                "a results folder analyse can continue; use another --out folder"
            )
        # a file that failed is tried again on the next run; one that succeeded is done
        self.done = {(row["source"], row["size"], row["mtime_ns"]): row for row, _ in files if row["status"] == "ok"}
        self.models = {(name, version) for (_, name, version), _ in faces}
        finished = {row["source"] for row, _ in files}
        keep = faces_end
        for (source, _, _), start in reversed(faces):  # the unfinished file's rows, at the end
            if source in finished:
                break
            keep = start
        unfinished = {source for (source, _, _), start in faces if start >= keep}
        if len(unfinished) > 1:
            raise DataError(
                f"{faces_path}: rows of {len(unfinished)} files that {files_path.name} does not list; "
                "a kill leaves at most one: use another --out folder"
            )
        for path, end, tail in ((files_path, files_end, files_tail), (faces_path, keep, faces_tail)):
            if tail or end < (path.stat().st_size if path.exists() else 0):
                with open(path, "r+b") as fh:
                    fh.truncate(end)

    def write(self, face_rows: list[dict[str, Any]], file_row: dict[str, Any]) -> None:
        """One file's rows: its faces in one write, then its summary in one write, each flushed to disk."""
        if face_rows:
            self._faces.write(b"".join(json.dumps(r, allow_nan=False).encode() + b"\n" for r in face_rows))
            self._faces.flush()
            os.fsync(self._faces.fileno())
        self._files.write(json.dumps(file_row, allow_nan=False).encode() + b"\n")
        self._files.flush()
        os.fsync(self._files.fileno())
        self.done[(file_row["source"], file_row["size"], file_row["mtime_ns"])] = file_row

    def close(self) -> None:
        self._faces.close()
        self._files.close()

    def write_parquet(self) -> Path | None:
        """``faces.parquet`` from ``faces.jsonl`` where pyarrow is installed (None where it is not)."""
        try:
            import pyarrow as pa  # optional: Ray Data brings it (emotorch[ray])
            import pyarrow.parquet as pq
        except ImportError:
            return None
        with open(self.out / FACES, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        for row in rows:  # Parquet holds UTF-8 only: a name that is not keeps U+FFFD where its bad bytes were
            row["source"] = printable(row["source"])
        dest = self.out / PARQUET
        tmp = dest.with_name(f".{dest.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, dest)
        return dest


def checked_rows(
    path: Path, keys: frozenset[str], project: Callable[[dict[str, Any]], Any]
) -> tuple[list[tuple[Any, int]], int, bool]:
    """``project(row)`` of every complete row of a results file with the offset where the row starts, the
    offset where the complete rows end, and whether a half-written row follows. A line that is not
    such a row, or a last line that is not the start of one, is an error naming the file and line."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise DataError(
            f"{path}: not a regular file (a link or a folder); analyse writes only files it made "
            "itself: use another --out folder"
        )
    rows: list[tuple[Any, int]] = []
    end, tail = 0, False
    if not path.exists():
        return rows, end, tail
    with open(path, "rb") as fh:
        for number, line in enumerate(iter(fh.readline, b""), start=1):
            try:
                row = json.loads(line)
                ours = isinstance(row, dict) and keys <= row.keys()
            except ValueError:
                row, ours = None, False
            if not line.endswith(b"\n") and not ours and line.startswith(b'{"source": '):
                tail = True  # a kill cut this row short: the only change a repair may make
                break
            if not ours or not line.endswith(b"\n"):
                raise DataError(
                    f"{path}, line {number}: not a row written by emotorch analyse; use another "
                    "--out folder (nothing in it was changed)"
                )
            rows.append((project(row), end))
            end += len(line)
    return rows, end, tail
