"""End-to-end speed of the face pipeline on 640x480 frames, per stage, printed as a table.

    python benchmarks/pipeline_speed.py [--model fast accurate RUN_OR_CHECKPOINT ...] [--frames 50]

Frames are JPEG-encoded 640x480 scenes with one and with four faces (from scikit-image's
astronaut photo); each frame is decoded, detected (YuNet), aligned and classified, by each model
(default: every shipped one) with the PyTorch and the ONNX Runtime backend (``int8``: the file a
model ships with). Times are medians over ``--frames`` runs on this machine.
A second table times streams whose faces move, with the detector on every frame or on every
2nd or 3rd frame and optical flow in between (``FaceFollower``, as ``emotorch webcam`` uses).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.data import astronaut

from emotorch.runtime import registry
from emotorch.runtime.detect import YuNetDetector, align
from emotorch.runtime.pipeline import EmotionRecognizer
from emotorch.runtime.registry import load_model
from emotorch.runtime.video import FaceFollower
from emotorch.training.loading import onnx_backend


def scene(n_faces: int, shift: int = 0) -> bytes:
    face = cv2.resize(astronaut()[40:300, 120:360], (110, 120))
    frame = np.full((480, 640, 3), 110, np.uint8)
    for k in range(n_faces):
        y, x = 60 + (k // 2) * 200, 80 + (k % 2) * 300 + shift
        frame[y : y + 120, x : x + 110] = face
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=list(registry.shipped()), help="models (default: all shipped)")
    parser.add_argument("--frames", type=int, default=50)
    args = parser.parse_args()
    runs = {}  # (model, backend) -> Classifier
    for name in args.model:
        model = load_model(name, "torch")
        runs[name, "torch"] = model
        runs[name, "int8" if model.onnx is not None else "onnx"] = onnx_backend(model)
    detector = YuNetDetector()
    print(f"{torch.get_num_threads()} threads; median ms per 640x480 frame over {args.frames} frames")
    print(
        f"{'faces':>5} {'model':<10}{'backend':<8}{'decode':>8}{'detect':>8}{'align':>8}{'classify':>10}"
        f"{'total':>8}{'FPS':>7}"
    )
    for n_faces in (1, 4):
        jpeg = scene(n_faces)
        for (name, backend), model in runs.items():
            stages: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "align", "classify")}
            for _ in range(args.frames + 3):
                t0 = time.perf_counter()
                rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
                t1 = time.perf_counter()
                faces = detector(rgb)
                t2 = time.perf_counter()
                crops = np.stack([align(rgb, f) for f in faces])
                t3 = time.perf_counter()
                model.predict_proba(crops)
                t4 = time.perf_counter()
                for k, (a, b) in zip(stages, ((t0, t1), (t1, t2), (t2, t3), (t3, t4)), strict=True):
                    stages[k].append((b - a) * 1000)
            assert len(faces) == n_faces, f"found {len(faces)} of {n_faces} faces"
            med = {k: statistics.median(v[3:]) for k, v in stages.items()}
            total = sum(med.values())
            print(
                f"{n_faces:>5} {name:<10}{backend:<8}{med['decode']:>8.2f}{med['detect']:>8.2f}{med['align']:>8.2f}"
                f"{med['classify']:>10.2f}{total:>8.2f}{1000 / total:>7.0f}"
            )
    print("\nstreams (faces drifting 3 px a frame; decode + FaceFollower), mean ms per frame")
    print(f"{'faces':>5} {'model':<10}{'backend':<8}{'detect every':>13}{'ms':>8}{'FPS':>7}")
    for n_faces in (1, 4):
        clip = [scene(n_faces, shift=3 * (i % 60)) for i in range(args.frames + 3)]
        for (name, backend), model in runs.items():
            for every in (1, 2, 3):
                follower = FaceFollower(EmotionRecognizer(model, detector), detect_every=every)
                times = []
                for jpeg in clip:
                    t0 = time.perf_counter()
                    faces = follower(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
                    times.append((time.perf_counter() - t0) * 1000)
                    assert len(faces) == n_faces, f"found {len(faces)} of {n_faces} faces"
                mean = statistics.fmean(times[3:])  # the mean: detection frames and flow frames alternate
                print(f"{n_faces:>5} {name:<10}{backend:<8}{every:>13}{mean:>8.2f}{1000 / mean:>7.0f}")


if __name__ == "__main__":
    main()
