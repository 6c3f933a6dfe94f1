"""The inputs of :mod:`emotorch.runtime.analyse` and the work on each: files named by paths, folders,
glob patterns and manifests, then, in a worker process, a file decoded and its faces found and aligned."""

from __future__ import annotations

import csv
import glob
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG as stat_is_regular
from typing import Any

import numpy as np

from emotorch.errors import DataError
from emotorch.runtime.detect import YuNetDetector, align
from emotorch.runtime.images import IMAGE_EXTENSIONS, read_image
from emotorch.runtime.video import frames

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
MANIFEST_EXTENSIONS = frozenset({".txt", ".csv"})
MIN_DETECT_SIZE = 64  # the smallest copy a face detector is given (YuNet finds nothing in less)


@dataclass(frozen=True)
class Source:
    """One input file, identified as a resumed run recognises it: absolute path, size, mtime."""

    path: str
    kind: str  # "photo" or "video"
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[str, int, int]:
        return self.path, self.size, self.mtime_ns


@dataclass
class Scan:
    """What a worker found in one file: aligned 48x48 faces with where they are, or an error."""

    source: Source
    frames: int = 0
    faces: list[dict[str, Any]] = field(default_factory=list)  # frame, time_s, face, box, landmarks, score
    crops: list[np.ndarray] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "photo" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def _manifest_paths(manifest: Path) -> Iterator[Path]:
    """Paths listed in a .txt (one a line, # comments) or .csv (a ``path`` column, else the first)."""
    base = manifest.parent  # relative paths are relative to the manifest
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        if manifest.suffix.lower() == ".csv":
            rows = list(csv.reader(fh))
            names = [cell.strip().lower() for cell in rows[0]] if rows else []
            column = names.index("path") if "path" in names else 0
            for row in rows[1:] if "path" in names else rows:  # without a "path" header every row is a path
                if len(row) > column and row[column].strip():
                    yield base / row[column].strip()
        else:
            for line in fh:
                if line.strip() and not line.lstrip().startswith("#"):
                    yield base / line.strip()


def expand(inputs: Iterable[str]) -> Iterator[Path | tuple[Path, str]]:
    """Files named by the inputs, in order: photos and videos as they are, folders searched
    recursively, glob patterns, and manifests (.txt or .csv); a missing path is yielded with the
    reason so it is recorded as an error rather than dropped."""
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():  # links to nothing and pipes named .jpg too: they are recorded as failed, not dropped
            yield from sorted(p for p in path.rglob("*") if _kind(p) and not p.is_dir())
        elif path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
            try:
                listed_paths = list(_manifest_paths(path))
            except (UnicodeDecodeError, csv.Error) as e:
                raise DataError(f"{path}: not a readable manifest of paths ({e})") from None
            for listed in listed_paths:
                yield listed if listed.exists() else (listed, f"{listed}: no such file (listed in {path})")
        elif path.is_file():
            yield path
        elif glob.has_magic(text):
            matches = (Path(p) for p in sorted(glob.glob(text, recursive=True)))
            yield from (p for p in matches if _kind(p) and not p.is_dir())
        else:
            yield path, f"{path}: no such file or folder"


def sources(inputs: Iterable[str], exclude: Path | None = None) -> Iterator[Source | tuple[Source, str]]:
    """:class:`Source` for every expanded input outside ``exclude`` (the results folder, whose crops are
    no input); unusable ones paired with the reason."""
    seen: set[str] = set()
    skip = exclude.resolve() if exclude is not None else None
    for item in expand(inputs):
        path, problem = item if isinstance(item, tuple) else (item, None)
        resolved = str(path.resolve())
        if resolved in seen or (skip is not None and path.resolve().is_relative_to(skip)):
            continue
        seen.add(resolved)
        if problem is not None:
            yield Source(resolved, _kind(path) or "unknown", 0, 0), problem
            continue
        try:
            stat = path.stat()
        except OSError as e:  # gone, or unreadable, since it was listed; or a link to nothing
            why = "a link to nothing" if path.is_symlink() else e.strerror
            yield Source(resolved, _kind(path) or "unknown", 0, 0), f"{path}: {why}"
            continue
        kind = _kind(path)
        source = Source(resolved, kind or "unknown", stat.st_size, stat.st_mtime_ns)
        if kind is None:
            yield source, f"{path}: not a photo or video ({path.suffix or 'no extension'})"
        elif not stat_is_regular(stat.st_mode):  # a pipe or a device would block a worker for ever
            yield source, f"{path}: not a regular file (a pipe, socket or device)"
        else:
            yield source


_detector = None


def init_worker(detect_size: int, single_thread: bool = True) -> None:
    """Per worker process: one detector, and one thread for OpenMP and OpenCV: the processes are the
    parallelism, and threads on top of them made 2 workers 4 times slower than 1 on 2 cores."""
    if single_thread:
        os.environ["OMP_NUM_THREADS"] = "1"  # read when yuface's OpenMP runtime starts, below
    import cv2  # here, after OMP_NUM_THREADS is set, whatever imported OpenCV before

    global _detector
    if single_thread:
        cv2.setNumThreads(1)
    _detector = YuNetDetector(max_side=detect_size)


def scan(source: Source, every_s: float, detect_size: int = 640) -> Scan:
    """Decode a photo, or a video's frames every ``every_s`` seconds (0: every frame), and find and
    align every face. Runs in a worker (its detector made on first use): no PyTorch, no model."""
    if _detector is None:
        init_worker(detect_size)
    started = time.perf_counter()
    result = Scan(source)
    try:
        if source.kind == "photo":
            images: Iterable[tuple[int | None, float | None, np.ndarray]] = [(None, None, read_image(source.path))]
        else:
            images = ((i, round(i / fps, 3), rgb) for i, rgb, fps in frames(source.path, every_seconds=every_s))
        for index, time_s, rgb in images:
            result.frames += 1
            for k, face in enumerate(_detector(rgb)):
                result.faces.append(
                    {
                        "frame": index,
                        "time_s": time_s,
                        "face": k,
                        "box": [round(float(v), 1) for v in face.box],
                        "landmarks": [[round(float(v), 1) for v in p] for p in face.landmarks],
                        "detection_score": round(face.score, 4),
                    }
                )
                result.crops.append(align(rgb, face))
    except DataError as e:
        result.error, result.faces, result.crops = str(e), [], []
    except Exception as e:  # a decoder that fails in a way of its own: this file's error, not the run's
        result.error, result.faces, result.crops = f"{source.path}: {type(e).__name__}: {e}", [], []
    result.seconds = round(time.perf_counter() - started, 4)
    return result
