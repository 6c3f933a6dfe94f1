"""``emotorch video`` and ``emotorch webcam``: tracked faces and smoothed emotions over time."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from emotorch.cli.options import (
    add_backend,
    add_detection,
    add_force,
    add_model,
    add_reading,
    add_threads,
    refuse_overwrite,
    to_json,
)
from emotorch.errors import require_plots
from emotorch.runtime.registry import STREAM_MODEL

if TYPE_CHECKING:  # the pipeline loads when a command runs
    from emotorch.runtime.pipeline import EmotionRecognizer


def add(sub: argparse._SubParsersAction) -> None:
    vid = sub.add_parser("video", help="emotions over time in a video: tracked faces, smoothed labels")
    vid.add_argument("input", help="video file")
    add_model(vid, STREAM_MODEL)
    add_reading(vid)
    vid.add_argument("--out", help="annotated video to write (.mp4)")
    vid.add_argument("--csv", help="per-frame results: frame, time, track id, box, emotion, probabilities")
    vid.add_argument("--plot", help="emotion-over-time plot per tracked face (.png)")
    add_force(vid, "existing output files")
    add_detection(vid, every=1)
    add_backend(vid)
    add_threads(vid)
    vid.set_defaults(run=video_command)

    cam = sub.add_parser("webcam", help="live emotions from a camera: a window, or JSON lines with --headless")
    cam.add_argument("--camera", default="0", help="camera index, or a video file or stream URL (default: 0)")
    add_model(cam, STREAM_MODEL)
    add_reading(cam)
    cam.add_argument("--headless", action="store_true", help="print one JSON line per frame instead of a window")
    cam.add_argument("--max-frames", type=int, help="stop after this many frames")
    add_detection(cam, every=2)
    add_backend(cam)
    add_threads(cam)
    cam.set_defaults(run=webcam_command)


def _recognizer(args: argparse.Namespace) -> EmotionRecognizer:
    """The model and detector the options name, read with ``--reading`` or else the model's default."""
    # the pipeline (OpenCV, ONNX Runtime) loads when the command runs, not for --help
    from emotorch.runtime.detect import YuNetDetector
    from emotorch.runtime.pipeline import EmotionRecognizer
    from emotorch.runtime.registry import load_model

    model = load_model(args.model, args.backend)
    detector = YuNetDetector(max_side=args.detect_size)
    return EmotionRecognizer(model, detector, backend=args.backend, reading=args.reading)


def video_command(args: argparse.Namespace) -> None:
    # the pipeline (OpenCV, ONNX Runtime) loads when the command runs, not for --help
    from emotorch.runtime.video import process_video, track_summary

    if args.plot:
        require_plots("video --plot")  # before the video is read, not after
    refuse_overwrite([Path(p) for p in (args.out, args.csv, args.plot) if p], args.force)
    recognizer = _recognizer(args)
    tracker = process_video(
        recognizer,
        args.input,
        out=Path(args.out) if args.out else None,
        csv_path=Path(args.csv) if args.csv else None,
        plot_path=Path(args.plot) if args.plot else None,
        detect_every=args.detect_every,
    )
    for track in tracker.all_tracks():  # what each face showed, as its frames were labelled
        gist = track_summary(track, recognizer.classes, recognizer.reading, recognizer.threshold)
        print(f"face #{track.id}: frames {track.history[0][0]}-{track.history[-1][0]}, {gist}")


def webcam_command(args: argparse.Namespace) -> None:
    # the pipeline (OpenCV, ONNX Runtime) loads when the command runs, not for --help
    from emotorch.runtime.video import live, window

    source: str | int = int(args.camera) if args.camera.isdigit() else args.camera
    if not args.headless and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise ValueError("no display to open a window on (DISPLAY is not set); use --headless for JSON lines")
    recognizer = _recognizer(args)
    if args.headless:

        def emit(i, _rgb, faces, fps) -> None:
            doc = {"frame": i, "fps": round(fps, 1), "faces": [{"id": t.id} | face.to_dict() for t, face in faces]}
            print(to_json(doc), flush=True)

        live(recognizer, source, on_frame=emit, max_frames=args.max_frames, detect_every=args.detect_every)
        return
    window(recognizer, source, max_frames=args.max_frames, detect_every=args.detect_every)
