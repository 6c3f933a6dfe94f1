from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from emotorch.errors import DataError
from emotorch.runtime.detect import align

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")
pytest.importorskip("yuface", reason="the YuNet detector package is not installed")

from emotorch.runtime.pipeline import EmotionRecognizer  # noqa: E402


@pytest.fixture(scope="module")
def recognizer(tiny_run):
    return EmotionRecognizer(tiny_run)


def test_one_face_with_probabilities(recognizer):
    faces = recognizer.predict(skdata.astronaut())
    assert len(faces) == 1
    face = faces[0]
    assert set(face.probabilities) == {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}
    assert sum(face.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert face.emotion == max(face.probabilities, key=face.probabilities.get)
    assert len(face.box) == 4 and len(face.landmarks) == 5 and 0 < face.detection_score <= 1


def test_live_inference_matches_evaluation_for_the_same_face(recognizer):
    """The pipeline feeds the model exactly what evaluation would for the same aligned crop."""
    photo = skdata.astronaut()
    face = recognizer.detector(photo)[0]
    crop = align(photo, face)
    expected = recognizer.model.predict_proba(crop[None])[0]
    got = recognizer.predict(photo)[0].probabilities
    np.testing.assert_allclose([got[c] for c in recognizer.classes], expected, atol=1e-6)


def test_inputs_path_pil_and_array_agree(recognizer, tmp_path):
    photo = skdata.astronaut()
    Image.fromarray(photo).save(tmp_path / "a.png")
    a = recognizer.predict(tmp_path / "a.png")[0].probabilities
    b = recognizer.predict(Image.fromarray(photo))[0].probabilities
    c = recognizer.predict(photo)[0].probabilities
    assert a == pytest.approx(b) and b == pytest.approx(c)


def test_several_faces_in_one_batch_left_to_right(recognizer):
    face = cv2.resize(skdata.astronaut()[40:300, 120:360], (240, 260))
    tile = np.concatenate([face, face[:, ::-1], face], 1)
    faces = recognizer.predict(tile)
    assert len(faces) == 3
    assert [f.box[0] for f in faces] == sorted(f.box[0] for f in faces)


def test_no_face_is_an_empty_list_and_bad_files_are_named(recognizer, tmp_path):
    assert recognizer.predict(skdata.coffee()) == []
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        recognizer.predict(bad)


def test_cli_predict_goes_on_past_a_bad_file(tiny_run, tmp_path):
    Image.fromarray(skdata.astronaut()).save(tmp_path / "astronaut.jpg")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "astronaut.jpg").read_bytes()[:400])
    Image.fromarray(skdata.coffee()).save(tmp_path / "coffee.png")
    out = tmp_path / "out"
    photos = [str(tmp_path / name) for name in ("astronaut.jpg", "truncated.jpg", "coffee.png")]
    cmd = ["predict", *photos, "--model", str(tiny_run), "--json", "--out", str(out)]
    res = run_cli(*cmd)
    assert res.returncode == 1, res.stderr  # some input failed: not a success
    doc = json.loads(res.stdout)
    assert [len(r["faces"]) for r in doc] == [1, 0, 0]
    assert "truncated.jpg" in doc[1]["error"] and "truncated.jpg" in res.stderr
    assert "1 of 3 input(s) failed" in res.stderr
    face = doc[0]["faces"][0]
    assert len(face["box"]) == 4 and face["emotion"] in face["probabilities"]
    assert (out / "astronaut.annotated.png").is_file()
    summary = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))  # every input has a row
    assert [(r["path"].rsplit("/", 1)[-1], r["emotion"] != "", r["error"][:15]) for r in summary] == [
        ("astronaut.jpg", True, ""),
        ("truncated.jpg", False, str(tmp_path / "truncated.jpg")[:15]),
        ("coffee.png", False, "no face"),
    ]
    again = run_cli(*cmd)
    assert again.returncode == 2 and "--force" in again.stderr
    assert str(out / "astronaut.annotated.png") in again.stderr  # names the output, not the input


def test_cli_predict_a_missing_file_fails(tiny_run, tmp_path):
    res = run_cli("predict", str(tmp_path / "nope.jpg"), "--model", str(tiny_run), "--out", str(tmp_path / "out"))
    assert res.returncode == 1 and "nope.jpg: no such file" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()  # no empty outputs


def test_cli_predict_out_mirrors_folders(tiny_run, tmp_path):
    for name in ("a", "b"):
        (tmp_path / "in" / name).mkdir(parents=True)
        Image.fromarray(skdata.astronaut()[:, ::-1] if name == "b" else skdata.astronaut()).save(
            tmp_path / "in" / name / "x.jpg"
        )
    out = tmp_path / "out"
    photos = [str(tmp_path / "in" / name / "x.jpg") for name in ("a", "b")]
    for inputs in ([str(tmp_path / "in")], photos):
        res = run_cli("predict", *inputs, "--model", str(tiny_run), "--out", str(out), "--force")
        assert res.returncode == 0, res.stderr
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
        assert written == ["a/x.annotated.png", "b/x.annotated.png"]
        a, b = (np.asarray(Image.open(out / n / "x.annotated.png")) for n in ("a", "b"))
        assert not np.array_equal(a, b)  # two photos, two files: neither overwrote the other


def test_cli_predict_reads_expressive_by_default_where_the_model_has_a_head(tiny_run, weights_dir, tmp_path):
    from emotorch.training import packaging

    data = tiny_run.parent / "faces"
    packaging.package(tiny_run, "tinyx", data=data, recipe="r", precise_bn=False, expressive=data, blend=1.0)
    Image.fromarray(skdata.astronaut()).save(tmp_path / "astronaut.jpg")
    cmd = ["predict", str(tmp_path / "astronaut.jpg"), "--model", str(weights_dir / "tinyx.onnx"), "--json"]
    faces = {
        reading: json.loads(run_cli(*cmd, *extra).stdout)[0]["faces"][0]
        for reading, extra in (("default", ()), ("crowd", ("--reading", "crowd")))
    }
    for face in faces.values():
        assert face["expressive"] and face["probabilities"]

    def top(shares: dict[str, float]) -> str:
        return max(shares, key=shares.get)

    assert faces["default"]["emotion"] == top(faces["default"]["expressive"])
    assert faces["crowd"]["emotion"] == top(faces["crowd"]["probabilities"])
    assert faces["default"]["emotion"] != faces["crowd"]["emotion"]  # here the two disagree: the default is seen
