"""Emotions over time in videos: per-frame faces, tracks with stable ids, smoothed probabilities."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from emotorch.errors import DataError
from emotorch.runtime.annotate import COLORS, annotate
from emotorch.runtime.detect import Face, to_gray
from emotorch.runtime.reading import answer

if TYPE_CHECKING:  # reading frames and tracking need neither the pipeline (ONNX Runtime) nor matplotlib
    from matplotlib.figure import Figure

    from emotorch.runtime.pipeline import EmotionRecognizer, FaceResult


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter) if inter else 0.0


@dataclass
class Track:
    """One face followed across frames; ``smoothed`` is an exponential moving average of its probabilities,
    ``smoothed_head`` of its expressive head's shares (for a model with one); the histories hold them frame
    by frame."""

    id: int
    box: tuple[float, float, float, float]
    smoothed: np.ndarray
    last_frame: int
    history: list[tuple[int, np.ndarray]] = field(default_factory=list)
    smoothed_head: np.ndarray | None = None
    head_history: list[np.ndarray] = field(default_factory=list)


class FaceTracker:
    """Greedy IoU matching of each frame's faces to the live tracks; new faces get new ids.

    ``alpha`` weighs the newest frame in the moving average (lower: steadier labels); a track
    unseen for ``max_gap`` frames ends.
    """

    def __init__(self, classes: list[str], alpha: float = 0.3, min_iou: float = 0.3, max_gap: int = 10) -> None:
        self.classes = classes
        self.alpha = alpha
        self.min_iou = min_iou
        self.max_gap = max_gap
        self.tracks: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 1

    def update(self, frame: int, faces: list[FaceResult]) -> list[tuple[Track, FaceResult]]:
        live = [t for t in self.tracks if frame - t.last_frame <= self.max_gap]
        self.finished += [t for t in self.tracks if t not in live]
        pairs = sorted(
            ((iou(t.box, f.box), ti, fi) for ti, t in enumerate(live) for fi, f in enumerate(faces)), reverse=True
        )
        used_t, used_f, matched = set(), set(), {}
        for overlap, ti, fi in pairs:
            if overlap >= self.min_iou and ti not in used_t and fi not in used_f:
                used_t.add(ti)
                used_f.add(fi)
                matched[fi] = live[ti]
        out = []
        for fi, face in enumerate(faces):
            probs = np.array([face.probabilities[c] for c in self.classes])
            head = np.array([face.expressive[c] for c in self.classes]) if face.expressive else None
            track = matched.get(fi)
            if track is None:
                track = Track(self._next_id, face.box, probs, frame, smoothed_head=head)
                self._next_id += 1
                live.append(track)
            else:
                track.smoothed = self.alpha * probs + (1 - self.alpha) * track.smoothed
                if head is not None and track.smoothed_head is not None:
                    track.smoothed_head = self.alpha * head + (1 - self.alpha) * track.smoothed_head
                track.box, track.last_frame = face.box, frame
            track.history.append((frame, track.smoothed.copy()))
            if track.smoothed_head is not None:
                track.head_history.append(track.smoothed_head.copy())
            out.append((track, face))
        self.tracks = live
        return out

    def all_tracks(self) -> list[Track]:
        return sorted(self.finished + self.tracks, key=lambda t: t.id)


class FaceFollower:
    """Faces, frame after frame of one stream, for less than detection on every frame costs.

    The detector runs every ``detect_every`` frames (and on every frame while no face is known);
    in between, each face moves by the similarity transform that pyramidal Lucas-Kanade optical
    flow finds for its five landmarks, about a millisecond for a 640x480 frame. A face whose
    landmarks are lost is dropped until the next detection.
    """

    def __init__(self, recognizer: EmotionRecognizer, detect_every: int = 1) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, not {detect_every}")
        self.recognizer, self.detect_every = recognizer, detect_every
        self._faces: list[Face] = []
        self._gray: np.ndarray | None = None
        self._since_detection = 0

    def __call__(self, rgb: np.ndarray) -> list[FaceResult]:
        gray = to_gray(rgb)
        if not self._faces or self._gray is None or self._since_detection + 1 >= self.detect_every:
            faces, self._since_detection = self.recognizer.detector(rgb), 0
        else:
            faces = [f for f in (follow(f, self._gray, gray) for f in self._faces) if f is not None]
            self._since_detection += 1
        self._faces, self._gray = faces, gray
        return self.recognizer.classify([rgb], [faces])[0]


def follow(face: Face, previous: np.ndarray, gray: np.ndarray) -> Face | None:
    """``face`` from the gray frame ``previous`` moved onto ``gray`` by optical flow, or None if lost."""
    points = face.landmarks.astype(np.float32).reshape(-1, 1, 2)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, gray, points, None, winSize=(21, 21), maxLevel=3)
    ok = status.ravel() == 1
    if ok.sum() < 3:
        return None
    matrix, _ = cv2.estimateAffinePartial2D(points[ok], moved[ok])
    if matrix is None:
        return None
    landmarks = cv2.transform(points, matrix).reshape(-1, 2)
    x, y, w, h = face.box
    cx, cy = matrix @ np.array([x + w / 2, y + h / 2, 1.0])
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    box = (float(cx - w * scale / 2), float(cy - h * scale / 2), float(w * scale), float(h * scale))
    return Face(box, landmarks, face.score)


def frames(source: str | int, every_seconds: float = 0.0) -> Iterator[tuple[int, np.ndarray, float]]:
    """(index, RGB frame, fps) from a video file or a camera index: every frame, or one every
    ``every_seconds`` (the others are skipped undecoded); a file that yields no frame is a DataError."""
    what = f"camera {source}" if isinstance(source, int) else str(source)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise DataError(
            f"cannot open camera {source}"
            if isinstance(source, int)
            else f"{source}: not a readable video (no video format recognised)"
        )
    if int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") == b"ansi":  # FFmpeg "plays" any text file
        cap.release()
        raise DataError(f"{source}: not a readable video (it is text)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    step = max(1, round(every_seconds * fps))
    i = yielded = 0
    try:
        while cap.grab():
            if i % step == 0:
                ok, bgr = cap.retrieve()
                if not ok:
                    break
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), fps
                yielded += 1
            i += 1
    finally:
        cap.release()
    if yielded == 0:
        raise DataError(f"{what}: not a readable video (no frame could be decoded)")


def process_video(
    recognizer: EmotionRecognizer,
    source: str | os.PathLike,
    *,
    out: Path | None = None,
    csv_path: Path | None = None,
    plot_path: Path | None = None,
    tracker: FaceTracker | None = None,
    detect_every: int = 1,
) -> FaceTracker:
    """Run the recognizer on every frame (the detector on every ``detect_every``-th, see
    :class:`FaceFollower`); write an annotated video, per-frame CSV and a plot."""
    if not Path(source).is_file():
        raise DataError(f"{source}: no such video file")
    tracker = tracker or FaceTracker(recognizer.classes)
    faces_of = FaceFollower(recognizer, detect_every)
    writer = None
    rows = []
    fps = None
    for i, rgb, fps in frames(str(source)):
        matched = tracker.update(i, faces_of(rgb))
        smoothed = [smoothed_face(face, track, *_reading_of(recognizer)) for track, face in matched]
        for (track, _), face in zip(matched, smoothed, strict=True):
            rows.append(
                [
                    i,
                    f"{i / fps:.3f}",
                    track.id,
                    *(round(v, 1) for v in face.box),
                    face.emotion,
                    *(f"{p:.4f}" for p in track.smoothed),
                ]
            )
        if out is not None:
            frame = np.asarray(annotate(rgb, smoothed, labels=[f"#{t.id}" for t, _ in matched]))
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if writer is not None:
        writer.release()
    if csv_path is not None:
        with open(csv_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["frame", "time_s", "track", "x", "y", "w", "h", "emotion", *recognizer.classes])
            w.writerows(rows)
    if plot_path is not None:
        from emotorch.runtime import plots  # matplotlib: the plots extra, only for --plot

        plots.save(emotion_timeline(tracker, recognizer.classes, fps), plot_path)
    return tracker


def _reading_of(recognizer: EmotionRecognizer) -> tuple[list[str], str, float | None]:
    """What :func:`smoothed_face` reads with: the recognizer's classes, reading and threshold."""
    return recognizer.classes, recognizer.reading, recognizer.threshold


def _read(
    probs: np.ndarray, heads: np.ndarray | None, classes: list[str], reading: str, threshold: float | None
) -> np.ndarray:
    """The answers for smoothed probabilities and head shares (N, K; None without a head) under ``reading``."""
    return answer(probs, classes, reading, threshold, None if heads is None else np.log(heads + 1e-9))


def smoothed_face(
    face: FaceResult, track: Track, classes: list[str], reading: str = "crowd", threshold: float | None = None
) -> FaceResult:
    """``face`` with its track's smoothed probabilities (and head shares), its emotion read from them under
    ``reading`` (:func:`emotorch.runtime.reading.answer`; ``threshold``: the model's, for one without a head)."""
    from emotorch.runtime.pipeline import FaceResult  # here: frames and tracks need no model (analyse's workers)

    head = track.smoothed_head
    k = int(_read(track.smoothed[None], None if head is None else head[None], classes, reading, threshold)[0])
    probs = dict(zip(classes, map(float, track.smoothed), strict=True))
    shares = None if head is None else dict(zip(classes, map(float, head), strict=True))
    return FaceResult(face.box, face.landmarks, face.detection_score, classes[k], probs, shares)


def track_summary(track: Track, classes: list[str], reading: str = "crowd", threshold: float | None = None) -> str:
    """What a track showed, as its frames were labelled under ``reading``: "mostly X (N% of frames)", or the
    leading answers where none held half the frames."""
    probs = np.stack([p for _, p in track.history])
    heads = np.stack(track.head_history) if track.head_history else None
    shares = np.bincount(_read(probs, heads, classes, reading, threshold), minlength=len(classes)) / len(probs)
    order = np.argsort(-shares)
    if shares[order[0]] >= 0.5:
        return f"mostly {classes[order[0]]} ({shares[order[0]]:.0%} of frames)"
    return "mixed: " + ", ".join(f"{classes[k]} {shares[k]:.0%}" for k in order[:3] if shares[k] > 0) + " of frames"


def emotion_timeline(tracker: FaceTracker, classes: list[str], fps: float | None = None) -> Figure:
    """Smoothed probabilities over time, one panel per tracked face, with one legend above the panels; the
    time axis in seconds when the frame rate is known (as `emotorch report` draws it), else in frames."""
    from emotorch.runtime import plots  # matplotlib: the plots extra

    tracks = tracker.all_tracks()
    rows = max(1, len(tracks))
    fig, axes = plots.plt.subplots(rows, 1, figsize=(9, 0.6 + 2.4 * rows), squeeze=False)
    for ax, track in zip(axes[:, 0], tracks, strict=False):
        t = [f / fps if fps else f for f, _ in track.history]
        probs = np.stack([p for _, p in track.history])
        for k, name in enumerate(classes):
            ax.plot(t, probs[:, k], label=name, color=np.array(COLORS[name]) / 255)
        ax.set_title(f"face #{track.id}")
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
    axes[-1, 0].set_xlabel("time (s)" if fps else "frame")
    plots.legend_above(fig, axes[0, 0])
    return fig


def live(
    recognizer: EmotionRecognizer, source: str | int, *, on_frame, max_frames: int | None = None, detect_every: int = 2
) -> None:
    """Run the recognizer on a camera (or stream) frame by frame, tracking and smoothing faces, and
    hand each frame's (index, RGB frame, [(track, smoothed face)], fps) to ``on_frame``; stops when it
    returns False, when the source ends, or after ``max_frames``."""
    tracker = FaceTracker(recognizer.classes)
    faces_of = FaceFollower(recognizer, detect_every)
    started = time.perf_counter()
    for i, rgb, _ in frames(source):
        matched = tracker.update(i, faces_of(rgb))
        smoothed = [(track, smoothed_face(face, track, *_reading_of(recognizer))) for track, face in matched]
        fps = (i + 1) / max(time.perf_counter() - started, 1e-6)
        if on_frame(i, rgb, smoothed, fps) is False or (max_frames is not None and i + 1 >= max_frames):
            break


def window(
    recognizer: EmotionRecognizer, source: str | int, *, max_frames: int | None = None, detect_every: int = 1
) -> None:
    """`emotorch webcam`'s window (Tk): the annotated stream with track ids and FPS; q or Esc closes it."""
    # Tk: a window only where one can open (headless installs may lack it)
    import tkinter

    from PIL import ImageDraw, ImageTk

    root = tkinter.Tk()
    root.title("EmoTorch (q or Esc to quit)")
    panel = tkinter.Label(root)
    panel.pack()
    closed = []
    root.bind("<Key-q>", lambda _e: closed.append(1))
    root.bind("<Escape>", lambda _e: closed.append(1))
    root.protocol("WM_DELETE_WINDOW", lambda: closed.append(1))

    def show(_i, rgb, faces, fps) -> bool:
        image = annotate(rgb, [f for _, f in faces], labels=[f"#{t.id}" for t, _ in faces])
        ImageDraw.Draw(image).text((8, 8), f"{fps:.1f} FPS", fill=(255, 255, 0))
        photo = ImageTk.PhotoImage(image)
        panel.configure(image=photo)
        panel.image = photo
        root.update()
        return not closed

    live(recognizer, source, on_frame=show, max_frames=max_frames, detect_every=detect_every)
    root.destroy()
