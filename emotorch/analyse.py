"""Whole archives of photos and videos: every face's emotions, in parallel, resumable.

:func:`analyse` expands its inputs (photos, videos, folders, glob patterns, manifests) into
files, skips those a previous run into the same output folder finished (same path, size and
modification time), decodes files and detects and aligns their faces in worker processes
(``engine="local"``) or on a Ray cluster (``engine="ray"``), and classifies the faces of many
files in batches. A file's rows reach the results in one write once all of its faces are
classified, face rows first and its summary row last, so a kill at any moment loses at most
the files in flight; the next run trims a half-written file's rows and finishes the rest.

The output folder holds ``faces.jsonl`` (one row per face: source, frame and time for videos,
box, landmarks, the emotion and one probability column per class, model and version),
``files.jsonl`` (one row per file: kind, frames read, faces, seconds, status and error) and,
where pyarrow is installed, ``faces.parquet`` rewritten from ``faces.jsonl`` at the end.
No image and no face crop is written unless ``save_crops`` is asked for.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG as stat_is_regular
from typing import Any

import numpy as np

from emotorch.choices import ENGINES
from emotorch.data import IMAGE_EXTENSIONS, DataError
from emotorch.threads import available_cores

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
MANIFEST_EXTENSIONS = frozenset({".txt", ".csv"})
MIN_DETECT_SIZE = 64  # the smallest copy a face detector is given (YuNet finds nothing in less)
FACES, FILES, PARQUET = "faces.jsonl", "files.jsonl", "faces.parquet"
# what every row analyse writes holds: anything else in --out is not ours to change
FILE_KEYS = frozenset({"source", "kind", "size", "mtime_ns", "frames", "faces", "seconds", "status", "error"})
FACE_KEYS = frozenset({"source", "kind", "frame", "time_s", "face", "x", "y", "w", "h", "landmarks",
                       "detection_score", "emotion", "model", "model_version"})  # fmt: skip


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


def printable(name: str) -> str:
    """A file name fit for UTF-8-only places (Parquet, plot titles): bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


# --- inputs -----------------------------------------------------------------------------------


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


# --- the work in a worker ---------------------------------------------------------------------

_detector = None


def init_worker(detect_size: int, single_thread: bool = True) -> None:
    """Per worker process: one detector, and one thread for OpenMP and OpenCV: the processes are the
    parallelism, and threads on top of them made 2 workers 4 times slower than 1 on 2 cores."""
    if single_thread:
        os.environ["OMP_NUM_THREADS"] = "1"  # read when yuface's OpenMP runtime starts, below
    import cv2

    from emotorch.detect import YuNetDetector

    global _detector
    if single_thread:
        cv2.setNumThreads(1)
    _detector = YuNetDetector(max_side=detect_size)


def scan(source: Source, every_s: float, detect_size: int = 640) -> Scan:
    """Decode a photo, or a video's frames every ``every_s`` seconds (0: every frame), and find and
    align every face. Runs in a worker (its detector made on first use): no PyTorch, no model."""
    from emotorch.detect import align
    from emotorch.images import read_image
    from emotorch.video import frames

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
                result.faces.append({"frame": index, "time_s": time_s, "face": k,
                                     "box": [round(float(v), 1) for v in face.box],
                                     "landmarks": [[round(float(v), 1) for v in p] for p in face.landmarks],
                                     "detection_score": round(face.score, 4)})  # fmt: skip
                result.crops.append(align(rgb, face))
    except DataError as e:
        result.error, result.faces, result.crops = str(e), [], []
    except Exception as e:  # a decoder that fails in a way of its own: this file's error, not the run's
        result.error, result.faces, result.crops = f"{source.path}: {type(e).__name__}: {e}", [], []
    result.seconds = round(time.perf_counter() - started, 4)
    return result


# --- results ----------------------------------------------------------------------------------


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
            raise DataError(f"{e.filename or out}: cannot hold the results ({e.strerror or e}); use another "
                            "--out folder") from None  # fmt: skip

    def _repair(self) -> None:
        """Check every row before changing anything, then finish what a kill left: a half-written last
        line is cut, and face rows of the one file whose summary never arrived (a kill between the
        two writes) are dropped. Results this module did not write, links and folders in their place
        are refused untouched."""
        files_path, faces_path = self.out / FILES, self.out / FACES
        files, files_end, files_tail = checked_rows(files_path, FILE_KEYS, lambda row: row)
        faces, faces_end, faces_tail = checked_rows(faces_path, FACE_KEYS,
                                                     lambda row: (row["source"], row["model"], row["model_version"]))
        if faces and not files:
            raise DataError(f"{faces_path} has {len(faces)} face rows but {files_path.name} lists no file: not "
                            "a results folder analyse can continue; use another --out folder")  # fmt: skip
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
            raise DataError(f"{faces_path}: rows of {len(unfinished)} files that {files_path.name} does not list; "
                            "a kill leaves at most one: use another --out folder")  # fmt: skip
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
            import pyarrow as pa
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


def checked_rows(path: Path, keys: frozenset[str], project: Callable[[dict[str, Any]], Any]
                  ) -> tuple[list[tuple[Any, int]], int, bool]:  # fmt: skip
    """``project(row)`` of every complete row of a results file with the offset where the row starts, the
    offset where the complete rows end, and whether a half-written row follows. A line that is not
    such a row, or a last line that is not the start of one, is an error naming the file and line."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise DataError(f"{path}: not a regular file (a link or a folder); analyse writes only files it made "
                        "itself: use another --out folder")  # fmt: skip
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
                raise DataError(f"{path}, line {number}: not a row written by emotorch analyse; use another "
                                "--out folder (nothing in it was changed)")  # fmt: skip
            rows.append((project(row), end))
            end += len(line)
    return rows, end, tail


def face_rows(scan_result: Scan, probs: np.ndarray, classes: list[str], model: dict[str, str]) -> list[dict]:
    """The results' rows for one file's faces: position, emotion, one probability column per class."""
    rows = []
    for face, p in zip(scan_result.faces, probs, strict=True):
        x, y, w, h = face["box"]
        rows.append({"source": scan_result.source.path, "kind": scan_result.source.kind, "frame": face["frame"],
                     "time_s": face["time_s"], "face": face["face"], "x": x, "y": y, "w": w, "h": h,
                     "landmarks": face["landmarks"], "detection_score": face["detection_score"],
                     "emotion": classes[int(p.argmax())], **{c: round(float(v), 5) for c, v in zip(classes, p,
                                                                                                   strict=True)},
                     "model": model["name"], "model_version": model["version"],
                     "size": scan_result.source.size, "mtime_ns": scan_result.source.mtime_ns})  # fmt: skip
    return rows


def file_row(scan_result: Scan) -> dict[str, Any]:
    s = scan_result.source
    return {"source": s.path, "kind": s.kind, "size": s.size, "mtime_ns": s.mtime_ns, "frames": scan_result.frames,
            "faces": len(scan_result.faces), "seconds": scan_result.seconds,
            "status": "error" if scan_result.error else "ok", "error": scan_result.error}  # fmt: skip


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Summary:
    files: int = 0
    skipped: int = 0  # done by an earlier run
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # this run's failures, one line each
    faces: int = 0
    seconds: float = 0.0


def analyse(inputs: Iterable[str], out: str | os.PathLike, *, model: str | None = None, backend: str = "auto",
            workers: int | None = None, every_s: float = 1.0, detect_size: int = 640, batch_size: int = 256,
            engine: str = "local", save_crops: bool = False,
            progress: Callable[[int, int, int], None] | None = None) -> Summary:  # fmt: skip
    """Analyse every photo and video the inputs name into the folder ``out`` (see the module doc).

    ``progress(files_done, faces_done, files_to_do)`` is called after each file this run analyses.
    """
    from emotorch.pipeline import EmotionRecognizer
    from emotorch.zoo import STREAM_MODEL, shipped

    inputs = list(inputs)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if not (math.isfinite(every_s) and every_s >= 0):
        raise ValueError(f"--every must be 0 (every frame) or a number of seconds, not {every_s}")
    if detect_size < MIN_DETECT_SIZE:
        raise ValueError(f"--detect-size must be at least {MIN_DETECT_SIZE} pixels, not {detect_size}")
    most = 4 * available_cores()
    if workers is not None and not 1 <= workers <= most:
        raise ValueError(f"--workers must be between 1 and {most} (4 per core available here), not {workers}")
    started = time.perf_counter()
    results = Results(Path(out))
    summary = Summary()
    todo: list[Source] = []
    try:
        for item in sources(inputs, exclude=Path(out)):
            source, problem = item if isinstance(item, tuple) else (item, None)
            summary.files += 1
            if source.key in results.done:
                summary.skipped += 1
                continue
            if problem is not None:
                results.write([], file_row(Scan(source, error=problem)))
                summary.failed += 1
                summary.errors.append(problem)
                continue
            todo.append(source)
        if not summary.files:
            raise DataError(f"{', '.join(inputs)}: no photo or video found (photos: "
                            f"{', '.join(sorted(IMAGE_EXTENSIONS))}; videos: {', '.join(sorted(VIDEO_EXTENSIONS))})")
        model = str(model or STREAM_MODEL)
        recognizer = EmotionRecognizer(model, backend=backend)
        meta = recognizer.model.meta
        name = str(meta.get("name", recognizer.model.source))
        model_info = {"name": name, "version": str(shipped().get(name, {}).get("sha256", ""))}
        others = results.models - {(model_info["name"], model_info["version"])}
        if others:  # one results folder, one model: rows of two models would be averaged together
            raise ValueError(f"{out} holds results of the model {sorted(others)[0][0]!r}, not {name!r}: use another "
                             "--out folder for another model")  # fmt: skip
        crops_dir = Path(out) / "crops" if save_crops else None
        total = len(todo)
        options = {"every_s": every_s, "detect_size": detect_size, "workers": workers, "batch_size": batch_size}
        if engine == "ray":
            from emotorch.analyse_ray import run

            scans = run(todo, recognizer, model=model, backend=backend, **options)
        else:
            scans = _run_local(todo, recognizer, **options)
        for done, (scanned, probs) in enumerate(scans, start=1):
            rows = face_rows(scanned, probs, recognizer.classes, model_info)
            if crops_dir is not None:
                _save_crops(crops_dir, scanned)
            results.write(rows, file_row(scanned))
            if scanned.error is not None:
                summary.failed += 1
                summary.errors.append(scanned.error)
            summary.faces += len(rows)
            if progress is not None:
                progress(done, summary.faces, total)
    finally:
        results.close()
    results.write_parquet()
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary


def _classify_batches(scans: Iterator[Scan], recognizer, batch_size: int,
                      max_wait_s: float = 1.0) -> Iterator[tuple[Scan, np.ndarray]]:  # fmt: skip
    """Classify the faces of many files together: a call once ``batch_size`` faces (or files) wait,
    or the oldest has waited ``max_wait_s``, so results keep reaching the disk. Files come out in
    the order they arrived."""
    pending: list[Scan] = []
    since, waiting = 0.0, 0

    def flush() -> Iterator[tuple[Scan, np.ndarray]]:
        crops = [c for s in pending for c in s.crops]
        probs = (recognizer.predict_proba(np.stack(crops)) if crops
                 else np.zeros((0, len(recognizer.classes)), np.float32))  # fmt: skip
        start = 0
        for s in pending:
            yield s, probs[start : start + len(s.crops)]
            start += len(s.crops)
        pending.clear()

    for s in scans:
        if not pending:
            since, waiting = time.monotonic(), 0
        pending.append(s)
        waiting += len(s.crops)
        if waiting >= batch_size or len(pending) >= batch_size or time.monotonic() - since >= max_wait_s:
            yield from flush()
    yield from flush()


def _run_local(todo: list[Source], recognizer, *, every_s: float, detect_size: int, workers: int | None,
               batch_size: int) -> Iterator[tuple[Scan, np.ndarray]]:  # fmt: skip
    """Decode and detect in ``workers`` processes, classify here in batches across files."""
    import multiprocessing
    from functools import partial

    workers = workers or available_cores()
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    work = partial(scan, every_s=every_s, detect_size=detect_size)
    if workers == 1:  # in this process, which may keep its threads
        init_worker(detect_size, single_thread=False)
        yield from _classify_batches((work(s) for s in todo), recognizer, batch_size)
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no PyTorch, no inherited threads
    with context.Pool(workers, initializer=init_worker, initargs=(detect_size,)) as pool:
        # one photo per task keeps every worker busy; the batch of classified faces spans many files
        yield from _classify_batches(pool.imap_unordered(work, todo, chunksize=1), recognizer, batch_size)


def _save_crops(folder: Path, scanned: Scan) -> None:
    """The aligned 48x48 faces of one file, only when asked for (``--save-crops``)."""
    from PIL import Image

    if not scanned.crops:
        return
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(scanned.source.path).stem
    tag = hashlib.sha1(os.fsencode(scanned.source.path)).hexdigest()[:8]  # two x.jpg in two folders stay apart
    for face, crop in zip(scanned.faces, scanned.crops, strict=True):
        frame = "" if face["frame"] is None else f"-f{face['frame']}"
        Image.fromarray(crop).save(folder / f"{stem}-{tag}{frame}-{face['face']}.png")
