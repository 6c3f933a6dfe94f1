"""`emotorch analyse` and `report` on a small archive: photos, a video, a manifest, bad files, kills, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")
pytest.importorskip("yuface", reason="the YuNet detector package is not installed")

from test_video import make_video  # noqa: E402

from emotorch.errors import DataError  # noqa: E402
from emotorch.runtime.analyse import analyse  # noqa: E402
from emotorch.runtime.results import FACES, FILES  # noqa: E402


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """Two photos named x.jpg in two folders, a photo without a face, a truncated photo, a video, a manifest."""
    root = tmp_path / "archive"
    for name, photo in (("a", skdata.astronaut()), ("b", skdata.astronaut()[:, ::-1])):
        (root / "photos" / name).mkdir(parents=True)
        Image.fromarray(photo).save(root / "photos" / name / "x.jpg")
    Image.fromarray(skdata.coffee()).save(root / "photos" / "coffee.png")
    good = (root / "photos" / "a" / "x.jpg").read_bytes()
    (root / "photos" / "broken.jpg").write_bytes(good[:500])
    make_video(root / "clip.mp4", n=20)
    (root / "list.txt").write_text("photos/a/x.jpg\n# a comment\nnot/there.jpg\n")
    return root


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


emotorch = run_cli  # the command as a user runs it


def test_analyse_photos_video_manifest_and_glob_then_resume(archive, tmp_path):
    out = tmp_path / "results"
    inputs = [str(archive / "photos"), str(archive / "clip.mp4"), str(archive / "list.txt"), str(archive / "*.mp4")]
    res = emotorch("analyse", *inputs, "--out", str(out), "--workers", "2", "--every", "0.5")
    assert res.returncode == 1, res.stderr  # two inputs failed: a truncated photo, a path the manifest lists
    assert "6 file(s): 6 analysed (2 failed" in res.stdout
    files = {Path(r["source"]).relative_to(archive).as_posix(): r for r in rows(out / FILES)}
    assert set(files) == {
        "photos/a/x.jpg",
        "photos/b/x.jpg",
        "photos/coffee.png",
        "photos/broken.jpg",
        "clip.mp4",
        "not/there.jpg",
    }  # fmt: skip # the glob and the manifest repeat files
    assert files["photos/broken.jpg"]["status"] == "error" and "broken.jpg" in files["photos/broken.jpg"]["error"]
    assert "no such file (listed in" in files["not/there.jpg"]["error"]
    assert files["clip.mp4"]["frames"] == 4 and files["photos/coffee.png"]["faces"] == 0  # 20 frames at 10 fps
    faces = rows(out / FACES)
    photo = [f for f in faces if f["source"].endswith("a/x.jpg")]
    assert len(photo) == 1 and photo[0]["emotion"] == "happy" and photo[0]["model"] == "fast"
    assert {"x", "y", "w", "h", "landmarks", "angry", "surprise", "model_version"} <= set(photo[0])
    video = [f for f in faces if f["kind"] == "video"]
    assert {f["time_s"] for f in video} == {0.0, 0.5, 1.0, 1.5} and len(video) == 8  # two faces a frame
    assert not (out / "crops").exists()  # no image written unless asked for

    assert res.stderr.count("emotorch: error: ") == 2 and "broken.jpg" in res.stderr  # a line per failed input
    again = emotorch("analyse", *inputs, "--out", str(out))  # the two failures are tried again, the rest skipped
    assert again.returncode == 1 and "2 analysed (2 failed" in again.stdout and "4 done before" in again.stdout
    assert rows(out / FACES) == faces  # nothing repeated
    os.utime(archive / "photos" / "coffee.png", ns=(1, 1))  # a changed file is analysed again
    third = emotorch("analyse", *inputs, "--out", str(out))
    assert "3 analysed (2 failed" in third.stdout, third.stdout  # the changed file and the two failures

    pd = pytest.importorskip("pandas")
    table = pd.read_json(out / FACES, lines=True)  # one call, one row per face, one column per emotion
    assert len(table) == len(faces) and table["happy"].mean() > 0.5


def test_a_kill_loses_only_files_in_flight(tmp_path):
    photos = tmp_path / "many"
    photos.mkdir()
    face = skdata.astronaut()
    for i in range(60):
        Image.fromarray(np.roll(face, 7 * i, axis=1)).save(photos / f"p{i:02d}.jpg")
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "emotorch",
        "-q",
        "analyse",
        str(photos),
        "--out",
        str(out),
        "--workers",
        "1",
        "--batch-size",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not (out / FILES).exists() or len(rows(out / FILES)) < 5):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(rows(out / FILES))
    assert 5 <= done < 60, done
    unfinished = rows(out / FACES)[0] | {"source": str(photos / "p59.jpg")}
    with open(out / FACES, "ab") as fh:  # as if killed mid-write: a face row of an unfinished file, half a line
        fh.write(json.dumps(unfinished).encode() + b'\n{"source": "/half')
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    files, faces = rows(out / FILES), rows(out / FACES)  # every line parses
    assert sorted(Path(r["source"]).name for r in files) == [f"p{i:02d}.jpg" for i in range(60)]
    pairs = [(r["source"], r["face"]) for r in faces]
    assert len(set(pairs)) == len(pairs)  # no face twice, none left over from the killed run
    assert {r["source"]: r["faces"] for r in files} == {s: sum(x == s for x, _ in pairs) for s, _ in pairs} | {
        r["source"]: 0 for r in files if r["faces"] == 0
    }


def test_report_shares_table_and_plots(archive, tmp_path):
    out = tmp_path / "results"
    analyse([str(archive / "photos"), str(archive / "clip.mp4")], out, workers=1, every_s=0.5, save_crops=True)
    assert len(list((out / "crops").glob("*.png"))) == 10  # the aligned faces, only because they were asked for
    res = emotorch("report", str(out), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["files"] == 5 and doc["failed"] == 1 and doc["faces"] == 10
    assert doc["shares"]["happy"]["faces"] >= 8 and abs(sum(s["share"] for s in doc["shares"].values()) - 1) < 1e-9
    summary = (out / "report" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("source,kind,status,frames,faces,top_emotion,angry") and len(summary) == 6
    assert len(doc["plots"]) == 1 and Path(doc["plots"][0]).stat().st_size > 5000
    text = emotorch("report", str(out)).stdout
    assert "happy" in text and "%" in text


def test_ray_engine_writes_the_same_rows(archive, tmp_path):
    pytest.importorskip("ray", reason='the Ray engine needs pip install "emotorch[ray]"')
    inputs = [str(archive / "photos"), str(archive / "clip.mp4")]
    import ray

    analyse(inputs, tmp_path / "local", workers=1, every_s=0.5)
    try:
        analyse(inputs, tmp_path / "ray", workers=1, every_s=0.5, engine="ray")
    finally:
        ray.shutdown()

    def table(folder: Path, name: str) -> list[str]:
        found = rows(folder / name)
        for r in found:
            r.pop("seconds", None)
            for k, v in r.items():
                if isinstance(v, float):
                    r[k] = round(v, 4)
        return sorted(json.dumps(r, sort_keys=True) for r in found)

    assert table(tmp_path / "ray", FACES) == table(tmp_path / "local", FACES)
    assert table(tmp_path / "ray", FILES) == table(tmp_path / "local", FILES)


@pytest.fixture
def finished(tmp_path: Path) -> tuple[Path, Path]:
    """A photo folder and a finished results folder for it (in process: no second interpreter)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(skdata.astronaut(), 9 * i, axis=1)).save(photos / f"p{i}.jpg")
    out = tmp_path / "results"
    analyse([str(photos)], out, workers=1)
    return photos, out


def test_results_it_did_not_write_are_refused_untouched(finished, tmp_path):
    photos, out = finished
    face_row = rows(out / FACES)[0]
    outside = tmp_path / "outside.jsonl"
    outside.write_text(json.dumps(face_row) + "\n")
    cases = {  # what --out holds -> what the refusal says
        "one object, no newline": ({FILES: '{"a": 1}'}, "line 1: not a row written by emotorch analyse"),
        "foreign rows with a source": ({FILES: "", FACES: '{"source": "x.jpg", "n": 1}\n'}, "line 1: not a row"),
        "faces without files": ({FACES: (out / FACES).read_text()}, "lists no file"),
        "a symlink": ({FILES: (out / FILES).read_text(), FACES: outside}, "not a regular file"),
        "a folder": ({FILES: (out / FILES).read_text(), FACES: None}, "not a regular file"),
    }
    for name, (content, words) in cases.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        for file, text in content.items():
            if text is None:
                (folder / file).mkdir()
            elif isinstance(text, Path):
                (folder / file).symlink_to(text)
            else:
                (folder / file).write_text(text)
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        with pytest.raises(DataError, match=words):
            analyse([str(photos)], folder, workers=1)
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before, name
    assert outside.read_text() == json.dumps(face_row) + "\n"  # nothing written through the link


def test_one_results_folder_holds_one_models_rows(finished):
    photos, out = finished
    with pytest.raises(ValueError, match="holds results of the model 'fast', not 'accurate'"):
        analyse([str(photos)], out, model="accurate", workers=1)


def test_analyse_gives_the_probabilities_predict_gives(finished, tmp_path):
    from emotorch.runtime.pipeline import EmotionRecognizer

    photos, _ = finished
    out = tmp_path / "accurate"
    analyse([str(photos / "p0.jpg")], out, model="accurate", workers=1)  # accurate ships with TTA
    row = rows(out / FACES)[0]
    face = EmotionRecognizer("accurate").predict(photos / "p0.jpg")[0]  # as emotorch predict reads it
    assert all(abs(row[c] - p) < 1e-4 for c, p in face.probabilities.items())


def test_a_changed_file_supersedes_its_old_rows_and_failures_are_retried(finished, tmp_path):
    from emotorch.runtime.report import report

    photos, out = finished
    listed = tmp_path / "later.jpg"
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{listed}\n")
    summary = analyse([str(photos), str(manifest)], out, workers=1)
    assert summary.failed == 1 and "later.jpg: no such file" in summary.errors[0]
    Image.fromarray(skdata.astronaut()).save(listed)  # the missing photo appears
    Image.fromarray(skdata.coffee()).save(photos / "p0.jpg")  # a face no more
    again = analyse([str(photos), str(manifest)], out, workers=1)
    assert (again.files, again.skipped, again.failed) == (4, 2, 0)  # p0 changed, later.jpg is retried
    result = report(out)
    assert (result["files"], result["failed"], result["faces"]) == (4, 0, 3)  # p1, p2 and later.jpg: one face each


def test_odd_inputs_are_recorded_or_refused(tmp_path):
    import math

    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(skdata.astronaut()).save(photos / "good.jpg")
    (photos / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    os.mkfifo(photos / "pipe.jpg")
    Image.fromarray(skdata.astronaut()).save(photos / b"bad\xffname.jpg".decode("utf-8", "surrogateescape"))
    out = photos / "results"  # inside the input folder, with crops: they are never inputs
    first = analyse([str(photos)], out, workers=1, save_crops=True)
    reasons = sorted(first.errors)
    assert first.files == 4 and len(reasons) == 2
    assert "gone.jpg: a link to nothing" in reasons[0] and "pipe.jpg: not a regular file" in reasons[1]
    assert len(list((out / "crops").iterdir())) == 2
    second = analyse([str(photos)], out, workers=1, save_crops=True)
    assert second.files == 4 and second.skipped == 2  # its own crops are not analysed
    from emotorch.runtime.report import report

    assert report(out)["faces"] == 2  # a name that is not UTF-8 travels through the results and the report
    for bad in ({"every_s": math.nan}, {"every_s": math.inf}, {"detect_size": 0}, {"workers": 100_000}):
        with pytest.raises(ValueError, match=r"--every|--detect-size|--workers"):
            analyse([str(photos)], tmp_path / "other", **bad)
    with pytest.raises(DataError, match="cannot hold the results"):  # --out below a file
        analyse([str(photos)], photos / "good.jpg" / "results")
    with pytest.raises(DataError, match="no photo or video found"):
        analyse([str(tmp_path / "*.jpgx")], tmp_path / "none")


def test_report_names_the_damaged_row(finished):
    from emotorch.runtime.report import report

    _, out = finished
    good = (out / FACES).read_text()
    for damaged, words in (
        ("[1, 2, 3]\n", "line 4: not a row"),
        (
            good.splitlines()[0].replace('"happy": ', '"happy": NaN, "x0": ') + "\n",
            "line 4: the probabilities are not numbers",
        ),
    ):
        (out / FACES).write_text(good + damaged)
        with pytest.raises(DataError, match=words):
            report(out)


def test_analyse_names_the_emotion_predict_names(tiny_run, weights_dir, tmp_path):
    from emotorch.runtime.pipeline import EmotionRecognizer
    from emotorch.training import packaging

    data = tiny_run.parent / "faces"
    packaging.package(tiny_run, "tinyx", data=data, recipe="r", precise_bn=False, expressive=data, blend=1.0)
    model, photo = str(weights_dir / "tinyx.onnx"), tmp_path / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(photo)
    analyse([str(photo)], tmp_path / "out", model=model, workers=1)
    row = rows(tmp_path / "out" / FACES)[0]
    face = EmotionRecognizer(model).predict(photo)[0]  # as emotorch predict reads it: expressive, here
    crowd = EmotionRecognizer(model, reading="crowd").predict(photo)[0]
    assert row["emotion"] == face.emotion != crowd.emotion  # the two readings disagree on this face
    assert all(abs(row[c] - p) < 1e-4 for c, p in face.probabilities.items())
