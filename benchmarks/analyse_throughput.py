"""Throughput of `emotorch analyse`: photos a second with 1 and more workers, and video frames a second.

    python benchmarks/analyse_throughput.py [--photos 200] [--workers 1 2] [--video-seconds 20] [--engine local]

It writes a folder of 640x480 JPEGs, each with one face (scikit-image's astronaut, moved and
mirrored so no two are alike), and a 640x480 video at 25 fps with one face, into a temporary
folder, then times whole `analyse` runs (the shipped `fast` model; starting the worker
processes and loading the model included) into fresh output folders. The video row analyses
every frame (``--every 0``). Timings vary with the load on a shared machine: compare rows of
one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.data import astronaut

from emotorch.runtime.analyse import analyse
from emotorch.runtime.threads import available_cores


def frame(i: int) -> np.ndarray:
    """A 640x480 frame with one face, placed by ``i``."""
    face = cv2.resize(astronaut()[20:320, 110:360], (240, 288))
    out = np.full((480, 640, 3), 100 + (i * 7) % 50, np.uint8)
    x, y = 40 + (i * 37) % 340, 40 + (i * 23) % 140
    out[y : y + 288, x : x + 240] = face[:, ::-1] if i % 2 else face
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, available_cores()}))
    parser.add_argument("--video-seconds", type=float, default=20.0)
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emotorch-analyse-") as tmp:
        root = Path(tmp)
        (root / "photos").mkdir()
        for i in range(args.photos):
            Image.fromarray(frame(i)).save(root / "photos" / f"{i:05d}.jpg", quality=90)
        video = root / "clip.mp4"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
        n_frames = int(args.video_seconds * 25)
        for i in range(n_frames):
            writer.write(cv2.cvtColor(frame(i // 5), cv2.COLOR_RGB2BGR))
        writer.release()

        print(f"{args.engine} engine, model fast, {available_cores()} cores available")
        print(f"{'input':<34}{'workers':>8}{'seconds':>9}{'per second':>12}{'faces':>7}")
        for workers in args.workers:
            started = time.perf_counter()
            s = analyse([str(root / "photos")], root / f"out-photos-{workers}", workers=workers, engine=args.engine)
            took = time.perf_counter() - started
            print(
                f"{f'{args.photos} photos 640x480':<34}{workers:>8}{took:>9.1f}{args.photos / took:>8.1f} /s "
                f"{s.faces:>6}"
            )
        for workers in args.workers[:1]:  # one video is one task: more workers do not split it
            started = time.perf_counter()
            s = analyse([str(video)], root / f"out-video-{workers}", workers=workers, every_s=0, engine=args.engine)
            took = time.perf_counter() - started
            label = f"video {n_frames} frames 640x480"
            print(f"{label:<34}{workers:>8}{took:>9.1f}{n_frames / took:>8.1f} f/s{s.faces:>6}")


if __name__ == "__main__":
    main()
