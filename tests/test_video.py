from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")
pytest.importorskip("yuface", reason="the YuNet detector package is not installed")

from emotorch.runtime.pipeline import FaceResult  # noqa: E402
from emotorch.runtime.video import FaceTracker, emotion_timeline, iou, smoothed_face, track_summary  # noqa: E402

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def make_video(path: Path, n: int = 12) -> Path:
    """Two astronaut faces drifting right across a 640x360 frame."""
    face = cv2.resize(skdata.astronaut()[40:300, 120:360], (120, 130))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 360))
    for i in range(n):
        frame = np.full((360, 640, 3), 90, np.uint8)
        frame[40:170, 40 + 8 * i : 160 + 8 * i] = face
        frame[200:330, 400 + 5 * i : 520 + 5 * i] = face[:, ::-1]
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def fake_face(box, happy: float) -> FaceResult:
    probs = dict.fromkeys(CLASSES, (1 - happy) / 6) | {"happy": happy}
    return FaceResult(box, [[0, 0]] * 5, 0.9, max(probs, key=probs.get), probs)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0


def test_tracker_keeps_ids_and_smooths_flicker():
    tracker = FaceTracker(CLASSES, alpha=0.3)
    labels = []
    for frame in range(10):
        happy = 0.9 if frame != 5 else 0.05  # one flickering frame
        out = tracker.update(
            frame, [fake_face((100 + 3 * frame, 50, 80, 80), happy), fake_face((400, 60, 80, 80), 0.9)]
        )
        labels.append(CLASSES[int(out[0][0].smoothed.argmax())])
        assert [t.id for t, _ in out] == [1, 2]
    assert labels.count("happy") == 10  # the smoothed label does not flicker
    tracker.update(30, [fake_face((100, 50, 80, 80), 0.9)])  # long gone: a new track
    assert [t.id for t in tracker.all_tracks()] == [1, 2, 3]


def test_the_smoothed_emotion_follows_the_reading():
    tracker = FaceTracker(CLASSES, alpha=0.5)
    crowd = dict.fromkeys(CLASSES, 0.05) | {"neutral": 0.7}  # the crowd says neutral, the head angry
    head = dict.fromkeys(CLASSES, 0.05) | {"angry": 0.7}
    for frame in range(3):
        face = FaceResult((100, 50, 80, 80), [[0, 0]] * 5, 0.9, "angry", crowd, head if frame != 1 else crowd)
        [(track, _)] = tracker.update(frame, [face])
    assert track.smoothed_head[CLASSES.index("angry")] == pytest.approx(0.5 * 0.7 + 0.25 * 0.05 + 0.25 * 0.7)
    assert smoothed_face(face, track, list(CLASSES), "expressive").emotion == "angry"
    assert smoothed_face(face, track, list(CLASSES), "expressive").expressive["angry"] > 0.5
    assert smoothed_face(face, track, list(CLASSES), "crowd").emotion == "neutral"
    assert track_summary(track, list(CLASSES), "expressive") == "mostly angry (100% of frames)"
    assert track_summary(track, list(CLASSES), "crowd") == "mostly neutral (100% of frames)"
    plain = FaceResult((100, 50, 80, 80), [[0, 0]] * 5, 0.9, "neutral", crowd)  # a model without a head
    [(track, _)] = FaceTracker(CLASSES).update(0, [plain])
    assert smoothed_face(plain, track, list(CLASSES), "expressive", threshold=0.05).emotion != "neutral"
    assert smoothed_face(plain, track, list(CLASSES), "expressive", threshold=0.5).emotion == "neutral"


def test_timeline_legend_covers_no_curve():
    tracker = FaceTracker(CLASSES)
    for frame in range(20):
        tracker.update(frame, [fake_face((100, 50, 80, 80), 0.9), fake_face((400, 60, 80, 80), 0.6)])
    fig = emotion_timeline(tracker, list(CLASSES))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert len(fig.legends[0].get_texts()) == len(CLASSES)
    for ax in fig.axes:  # the legend sits in its own strip, above every panel's plotting area
        assert legend.y0 >= ax.get_window_extent(renderer).y1 and not ax.get_legend()
    top = fig.axes[0].get_tightbbox(renderer).y1  # the first panel with its title
    assert 0 <= legend.y0 - top < 0.2 * fig.dpi  # close above the panels: no wide gap
    assert fig.axes[-1].get_xlabel() == "frame"
    seconds = emotion_timeline(tracker, list(CLASSES), fps=10.0)  # as `report` draws it, when the rate is known
    assert seconds.axes[-1].get_xlabel() == "time (s)" and seconds.axes[0].lines[0].get_xdata()[-1] == 1.9


def test_cli_video_writes_video_csv_and_plot(tiny_run, tmp_path):
    video = make_video(tmp_path / "in.mp4")
    out, table, plot = tmp_path / "out.mp4", tmp_path / "faces.csv", tmp_path / "faces.png"
    cmd = ["video", str(video), "--model", str(tiny_run), "--out", str(out), "--csv", str(table), "--plot", str(plot)]
    refused = run_cli(*cmd, "--reading", "expressive")  # a training run has neither an expressive head nor a threshold
    assert refused.returncode == 2 and "--reading crowd" in refused.stderr and not out.exists()
    res = run_cli(*cmd)  # by default it reads crowd
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(table.open()))
    assert {r["track"] for r in rows} == {"1", "2"}  # stable ids for the two faces
    assert len(rows) == 24
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    assert plot.stat().st_size > 10_000 and "face #1" in res.stdout
    assert run_cli(*cmd).returncode == 2  # no overwrite without --force


@pytest.mark.slow
def test_unreadable_video_is_a_clear_error(tiny_run, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all")
    res = run_cli("video", str(bad), "--model", str(tiny_run))
    assert res.returncode == 1 and "clip.mp4" in res.stderr and "Traceback" not in res.stderr
    text = tmp_path / "notes.mp4"  # FFmpeg decodes any text as "ANSI art" frames
    text.write_text("not a video, only words\n" * 50)
    csv_path = tmp_path / "notes.csv"
    res = run_cli("video", str(text), "--model", str(tiny_run), "--csv", str(csv_path))
    assert res.returncode == 1 and "notes.mp4: not a readable video" in res.stderr, res.stderr
    assert not csv_path.exists()


@pytest.mark.slow
def test_webcam_headless_prints_json_lines(tiny_run, tmp_path):
    video = make_video(tmp_path / "camera.mp4", n=5)  # stands in for a camera
    webcam = ["webcam", "--camera", str(video), "--model", str(tiny_run), "--headless"]
    res = run_cli(*webcam)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [d["frame"] for d in lines] == [0, 1, 2, 3, 4]
    assert all(len(d["faces"]) == 2 and d["fps"] > 0 for d in lines)
    assert {f["id"] for d in lines for f in d["faces"]} == {1, 2}
    small = run_cli(*webcam, "--detect-size", "320")
    assert small.returncode == 0, small.stderr
    for full, half in zip(lines, map(json.loads, small.stdout.splitlines()), strict=True):
        # detected on a 320x180 copy, the boxes come back in the 640x360 frame's pixels
        for a, b in zip(full["faces"], half["faces"], strict=True):
            assert np.abs(np.subtract(a["box"], b["box"])).max() < 8, (a["box"], b["box"])


def test_webcam_reads_the_shipped_models_expressive_head_by_default(tmp_path):
    video = make_video(tmp_path / "camera.mp4", n=3)
    res = run_cli("webcam", "--camera", str(video), "--headless", "--max-frames", "2")  # `fast`, its head
    assert res.returncode == 0, res.stderr
    faces = [f for line in res.stdout.splitlines() for f in json.loads(line)["faces"]]
    assert len(faces) == 4 and all(set(f["expressive"]) == set(f["probabilities"]) for f in faces)
    for f in faces:  # the emotion is the smoothed head's largest share
        assert f["emotion"] == max(f["expressive"], key=f["expressive"].get) == "happy"


def test_webcam_without_camera_or_display_says_so(tiny_run):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    cmd = ["webcam", "--model", str(tiny_run)]
    res = run_cli(*cmd, env=env)
    assert res.returncode == 2 and "--headless" in res.stderr
    res = run_cli(*cmd, "--camera", "7", "--headless")
    assert res.returncode == 1 and "cannot open camera 7" in res.stderr


def test_follower_tracks_moving_faces_between_detections(tmp_path):
    """Detecting every 4th frame, the followed boxes stay on the faces that a detector finds there."""
    from emotorch.runtime.pipeline import EmotionRecognizer
    from emotorch.runtime.video import FaceFollower, frames

    video = make_video(tmp_path / "two.mp4", n=12)
    recognizer = EmotionRecognizer("fer2013-fast")
    follower, every_frame = FaceFollower(recognizer, detect_every=4), FaceFollower(recognizer, detect_every=1)
    calls = 0
    detector = recognizer.detector

    def counting(rgb):
        nonlocal calls
        calls += 1
        return detector(rgb)

    for _, rgb, _ in frames(str(video)):
        recognizer.detector = counting
        followed = sorted(follower(rgb), key=lambda f: f.box[0])
        recognizer.detector = detector
        detected = sorted(every_frame(rgb), key=lambda f: f.box[0])
        assert len(followed) == len(detected) == 2
        for a, b in zip(followed, detected, strict=True):
            assert iou(a.box, b.box) > 0.8
            assert np.abs(np.asarray(a.landmarks) - np.asarray(b.landmarks)).max() < 4  # pixels
            assert a.emotion == b.emotion == "happy"
    assert calls == 3  # frames 0, 4 and 8


def test_follower_refuses_a_bad_interval():
    from emotorch.runtime.pipeline import EmotionRecognizer
    from emotorch.runtime.video import FaceFollower

    with pytest.raises(ValueError, match="at least 1"):
        FaceFollower(EmotionRecognizer("fer2013-fast"), detect_every=0)
