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

import hashlib
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from emotorch.choices import ENGINES
from emotorch.errors import DataError
from emotorch.runtime.images import IMAGE_EXTENSIONS
from emotorch.runtime.pipeline import EmotionRecognizer
from emotorch.runtime.registry import STREAM_MODEL, shipped
from emotorch.runtime.results import Results
from emotorch.runtime.scan import MIN_DETECT_SIZE, VIDEO_EXTENSIONS, Scan, Source, init_worker, scan, sources
from emotorch.runtime.threads import available_cores


def face_rows(
    scan_result: Scan, probs: np.ndarray, answers: np.ndarray, classes: list[str], model: dict[str, str]
) -> list[dict]:
    """The results' rows for one file's faces: position, emotion (the recognizer's reading), one probability
    column per class."""
    rows = []
    for face, p, k in zip(scan_result.faces, probs, answers, strict=True):
        x, y, w, h = face["box"]
        rows.append(
            {
                "source": scan_result.source.path,
                "kind": scan_result.source.kind,
                "frame": face["frame"],
                "time_s": face["time_s"],
                "face": face["face"],
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "landmarks": face["landmarks"],
                "detection_score": face["detection_score"],
                "emotion": classes[int(k)],
                **{c: round(float(v), 5) for c, v in zip(classes, p, strict=True)},
                "model": model["name"],
                "model_version": model["version"],
                "size": scan_result.source.size,
                "mtime_ns": scan_result.source.mtime_ns,
            }
        )
    return rows


def file_row(scan_result: Scan) -> dict[str, Any]:
    s = scan_result.source
    return {
        "source": s.path,
        "kind": s.kind,
        "size": s.size,
        "mtime_ns": s.mtime_ns,
        "frames": scan_result.frames,
        "faces": len(scan_result.faces),
        "seconds": scan_result.seconds,
        "status": "error" if scan_result.error else "ok",
        "error": scan_result.error,
    }


@dataclass
class Summary:
    files: int = 0
    skipped: int = 0  # done by an earlier run
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # this run's failures, one line each
    faces: int = 0
    seconds: float = 0.0


def analyse(
    inputs: Iterable[str],
    out: str | os.PathLike,
    *,
    model: str | None = None,
    backend: str = "auto",
    workers: int | None = None,
    every_s: float = 1.0,
    detect_size: int = 640,
    batch_size: int = 256,
    engine: str = "local",
    save_crops: bool = False,
    reading: str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> Summary:
    """Analyse every photo and video the inputs name into the folder ``out`` (see the module doc).

    ``reading`` names each face's emotion as :class:`EmotionRecognizer` does (by default the model's own).
    ``progress(files_done, faces_done, files_to_do)`` is called after each file this run analyses.
    """
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
            raise DataError(
                f"{', '.join(inputs)}: no photo or video found (photos: "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}; videos: {', '.join(sorted(VIDEO_EXTENSIONS))})"
            )
        model = str(model or STREAM_MODEL)
        recognizer = EmotionRecognizer(model, backend=backend, reading=reading)
        name = recognizer.model.name
        model_info = {"name": name, "version": str(shipped().get(name, {}).get("sha256", ""))}
        others = results.models - {(model_info["name"], model_info["version"])}
        if others:  # one results folder, one model: rows of two models would be averaged together
            raise ValueError(
                f"{out} holds results of the model {sorted(others)[0][0]!r}, not {name!r}: use another "
                "--out folder for another model"
            )
        crops_dir = Path(out) / "crops" if save_crops else None
        total = len(todo)
        options = {"every_s": every_s, "detect_size": detect_size, "workers": workers, "batch_size": batch_size}
        if engine == "ray":
            from emotorch.runtime.analyse_ray import run  # Ray is an optional extra, imported only for it

            scans = run(todo, recognizer, model=model, backend=backend, **options)
        else:
            scans = _run_local(todo, recognizer, **options)
        for done, (scanned, probs, answers) in enumerate(scans, start=1):
            rows = face_rows(scanned, probs, answers, recognizer.classes, model_info)
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


def _classify_batches(
    scans: Iterator[Scan], recognizer, batch_size: int, max_wait_s: float = 1.0
) -> Iterator[tuple[Scan, np.ndarray, np.ndarray]]:
    """Classify the faces of many files together: a call once ``batch_size`` faces (or files) wait,
    or the oldest has waited ``max_wait_s``, so results keep reaching the disk. Files come out in
    the order they arrived."""
    pending: list[Scan] = []
    since, waiting = 0.0, 0

    def flush() -> Iterator[tuple[Scan, np.ndarray, np.ndarray]]:
        crops = [c for s in pending for c in s.crops]
        probs, answers = (
            recognizer.answer(np.stack(crops))
            if crops
            else (np.zeros((0, len(recognizer.classes)), np.float32), np.zeros(0, np.int64))
        )
        start = 0
        for s in pending:
            yield s, probs[start : start + len(s.crops)], answers[start : start + len(s.crops)]
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


def _run_local(
    todo: list[Source], recognizer, *, every_s: float, detect_size: int, workers: int | None, batch_size: int
) -> Iterator[tuple[Scan, np.ndarray, np.ndarray]]:
    """Decode and detect in ``workers`` processes, classify here in batches across files."""
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
    if not scanned.crops:
        return
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(scanned.source.path).stem
    tag = hashlib.sha1(os.fsencode(scanned.source.path)).hexdigest()[:8]  # two x.jpg in two folders stay apart
    for face, crop in zip(scanned.faces, scanned.crops, strict=True):
        frame = "" if face["frame"] is None else f"-f{face['frame']}"
        Image.fromarray(crop).save(folder / f"{stem}-{tag}{frame}-{face['face']}.png")
