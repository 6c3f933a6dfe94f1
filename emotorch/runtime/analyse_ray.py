"""The ``analyse`` job on a Ray cluster (``pip install "emotorch[ray]"``), with Ray Data.

A dataset of the files to do is read file by file (``flat_map``: each task decodes a photo or a
video and finds and aligns its faces, one row per face plus one row per file), the faces are
classified by ``map_batches`` on an actor pool (each actor loads the model once), and this
process gathers each file's rows and hands them to :func:`emotorch.runtime.analyse.analyse`, which writes
them as the local engine does. ``RAY_ADDRESS`` (or ``ray.init``'s default) picks the cluster;
without one, Ray starts a local instance. Every node needs EmoTorch installed and the files at
the same paths (a shared filesystem), and ``--model`` must name a shipped model or a path the
nodes can read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from emotorch.runtime.scan import Scan, Source, scan

CROP = (48, 48)


def _scan_rows(item: dict[str, Any], every_s: float, detect_size: int) -> list[dict[str, Any]]:
    """One file's rows: a row per face (its 48x48 crop and where it is) and a last row for the file."""
    result = scan(Source(**item), every_s, detect_size)
    base = {"path": item["path"]}
    rows = [
        base | {"row": "face", "info": json.dumps(face), "crop": crop}
        for face, crop in zip(result.faces, result.crops, strict=True)
    ]
    info = {
        "source": item,
        "frames": result.frames,
        "faces": len(result.faces),
        "error": result.error,
        "seconds": result.seconds,
    }
    return [*rows, base | {"row": "file", "info": json.dumps(info), "crop": np.zeros(CROP, np.uint8)}]


class _Classifier:
    """An actor: the model, loaded once, classifies batches of face rows (file rows pass through)."""

    def __init__(self, model: str, backend: str, reading: str) -> None:
        from emotorch.runtime.pipeline import EmotionRecognizer  # in the actor's process, where the model runs

        self.recognizer = EmotionRecognizer(model, backend=backend, reading=reading)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        faces = batch["row"] == "face"
        probs = np.zeros((len(faces), len(self.recognizer.classes)), np.float32)
        answers = np.zeros(len(faces), np.int64)
        if faces.any():
            crops = np.stack(list(batch["crop"][faces])).astype(np.uint8)
            probs[faces], answers[faces] = self.recognizer.answer(crops)  # with the model's own TTA, as predict
        return {**{k: batch[k] for k in ("path", "row", "info", "crop")}, "probs": probs, "answer": answers}


def run(
    todo: list[Source],
    recognizer,
    *,
    model: str,
    backend: str,
    every_s: float,
    detect_size: int,
    workers: int | None,
    batch_size: int,
) -> Iterator[tuple[Scan, np.ndarray, np.ndarray]]:
    """(scan, probabilities, answers) for every file, as each one's rows have all come back from the cluster."""
    try:
        import ray  # an optional extra (emotorch[ray]), imported only for --engine ray
        import ray.data  # sets up its own logging, which the next lines turn down
    except ImportError:
        raise ValueError('--engine ray needs Ray: pip install "emotorch[ray]"') from None
    if not todo:
        return
    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS"),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our own progress bar says how it goes
    ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = float(ray.cluster_resources().get("CPU", 1))
    # classifier actors reserve half a CPU each, and leave at least one CPU to the decode tasks:
    # actors holding every CPU would leave the tasks that feed them none (a deadlock)
    classifiers = max(1, min(workers or max(1, int(cpus // 4)), int(2 * (cpus - 1))))
    actor_cpus = 0.5 if cpus - 0.5 * classifiers >= 1 else 0.0
    ds = ray.data.from_items([asdict(s) for s in todo], override_num_blocks=min(len(todo), 200))
    ds = ds.flat_map(_scan_rows, fn_kwargs={"every_s": every_s, "detect_size": detect_size}, num_cpus=1)
    ds = ds.map_batches(
        _Classifier,
        fn_constructor_kwargs={"model": model, "backend": backend, "reading": recognizer.reading},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=actor_cpus,
        compute=ray.data.ActorPoolStrategy(size=classifiers),
    )
    pending: dict[str, tuple[list[dict], list[np.ndarray], list[int], list[np.ndarray]]] = {}
    files: dict[str, dict[str, Any]] = {}
    for row in ds.iter_rows():
        path = row["path"]
        faces, probs, answers, crops = pending.setdefault(path, ([], [], [], []))
        if row["row"] == "face":
            faces.append(json.loads(row["info"]))
            probs.append(np.asarray(row["probs"]))
            answers.append(int(row["answer"]))
            crops.append(np.asarray(row["crop"], np.uint8))
        else:
            files[path] = json.loads(row["info"])
        info = files.get(path)
        if info is not None and len(faces) == info["faces"]:  # every row of this file is here
            order = sorted(range(len(faces)), key=lambda k: (faces[k]["frame"] or 0, faces[k]["face"]))
            done = Scan(
                Source(**info["source"]),
                info["frames"],
                [faces[k] for k in order],
                [crops[k] for k in order],
                info["error"],
                info["seconds"],
            )
            if order:
                yield done, np.stack([probs[k] for k in order]), np.asarray([answers[k] for k in order])
            else:
                yield done, np.zeros((0, len(recognizer.classes))), np.zeros(0, np.int64)
            del pending[path], files[path]
