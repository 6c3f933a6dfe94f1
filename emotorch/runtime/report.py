"""What an ``analyse`` run found: per-emotion shares, a table per file, emotions over time per video."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from emotorch.errors import DataError, installed
from emotorch.runtime.annotate import COLORS
from emotorch.runtime.results import FACE_KEYS, FACES, FILE_KEYS, FILES, checked_rows, printable


def read_rows(path: Path, keys: frozenset[str]) -> list[dict[str, Any]]:
    """The rows of a results file, each checked (a half-written last line, from a run still going, is left
    out); a damaged row is an error naming the file and line."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; is {path.parent} the --out folder of `emotorch analyse`?")
    return [row for row, _ in checked_rows(path, keys, lambda row: row)[0]]


def current(files: list[dict[str, Any]], faces: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Each file's newest summary, and only the face rows of that analysis: a file that changed and was
    analysed again is counted once, with what it holds now (rows from before face rows carried the
    file's size and time are all kept)."""
    newest = {f["source"]: f for f in files}
    kept = [
        f
        for f in faces
        if "size" not in f
        or (f["size"], f["mtime_ns"])
        == (newest.get(f["source"], {}).get("size"), newest.get(f["source"], {}).get("mtime_ns"))
    ]
    return list(newest.values()), kept


def check_probabilities(path: Path, faces: list[dict[str, Any]], classes: list[str]) -> None:
    """Every face row's probabilities are numbers in [0, 1]; else an error naming the file and line."""
    for number, face in enumerate(faces, start=1):
        values = [face.get(c) for c in classes]
        if not all(isinstance(v, int | float) and 0 <= v <= 1 for v in values):  # NaN fails both bounds
            raise DataError(f"{path}, line {number}: the probabilities are not numbers between 0 and 1")


def classes_of(faces: list[dict[str, Any]]) -> list[str]:
    """The model's classes, in the results' column order (the columns between the emotion and the model)."""
    if not faces:
        return []
    keys = list(faces[0])
    return keys[keys.index("emotion") + 1 : keys.index("model")]


def shares(faces: list[dict[str, Any]], classes: list[str]) -> dict[str, dict[str, float]]:
    """Per emotion: faces whose top emotion it is, their share, and the mean probability over all faces."""
    top = [f["emotion"] for f in faces]
    mean = np.mean([[f[c] for c in classes] for f in faces], 0) if faces else np.zeros(len(classes))
    return {
        c: {"faces": top.count(c), "share": top.count(c) / len(faces) if faces else 0.0, "mean_probability": float(m)}
        for c, m in zip(classes, mean, strict=True)
    }


def report(results: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write ``summary.csv`` (one row per file) and, where matplotlib is installed, an over-time plot per
    video into ``out`` (default: ``RESULTS/report``); return the overall shares and what was written."""
    results = Path(results)
    faces, files = read_rows(results / FACES, FACE_KEYS), read_rows(results / FILES, FILE_KEYS)
    classes = classes_of(faces)
    check_probabilities(results / FACES, faces, classes)
    files, faces = current(files, faces)
    dest = Path(out) if out else results / "report"
    dest.mkdir(parents=True, exist_ok=True)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for f in faces:
        by_source.setdefault(f["source"], []).append(f)
    # errors="surrogateescape": a file name that is not UTF-8 is written back as the bytes it is
    with open(dest / "summary.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "kind", "status", "frames", "faces", "top_emotion", *classes, "error"])
        for file in files:
            mine = by_source.get(file["source"], [])
            mean = np.mean([[f[c] for c in classes] for f in mine], 0) if mine else None
            writer.writerow(
                [
                    file["source"],
                    file["kind"],
                    file["status"],
                    file["frames"],
                    file["faces"],
                    classes[int(mean.argmax())] if mean is not None else "",
                    *([f"{v:.4f}" for v in mean] if mean is not None else [""] * len(classes)),
                    file.get("error") or "",
                ]
            )
    videos = {source: rows for source, rows in by_source.items() if rows[0]["kind"] == "video"}
    can_plot = installed("matplotlib")  # the plots extra; the table and summary.csv need none
    plots = [_timeline(source, rows, classes, dest) for source, rows in videos.items()] if can_plot else []
    return {
        "files": len(files),
        "failed": sum(f["status"] == "error" for f in files),
        "faces": len(faces),
        "shares": shares(faces, classes),
        "summary": str(dest / "summary.csv"),
        "plots": plots,
        "plots_skipped": 0 if can_plot else len(videos),
    }


def _timeline(source: str, rows: list[dict[str, Any]], classes: list[str], dest: Path) -> str:
    """Mean probability of each emotion over the video's faces, frame by frame, with the legend above."""
    from emotorch.runtime import plots  # matplotlib: the plots extra (report's table needs none)

    by_time: dict[float, list[list[float]]] = {}
    for r in rows:
        by_time.setdefault(r["time_s"], []).append([r[c] for c in classes])
    times = sorted(by_time)
    at = {t: np.mean(by_time[t], 0) for t in times}
    fig, ax = plots.plt.subplots(figsize=(9, 3.2))
    for k, name in enumerate(classes):
        color = np.array(COLORS.get(name, (90, 90, 90))) / 255
        ax.plot(times, [at[t][k] for t in times], label=name, color=color)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mean probability")
    ax.set_title(printable(Path(source).name), fontsize=9)
    plots.legend_above(fig, ax)
    name = f"{Path(source).stem}-{hashlib.sha1(os.fsencode(source)).hexdigest()[:8]}.png"
    plots.save(fig, dest / name)
    return str(dest / name)
