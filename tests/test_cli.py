from __future__ import annotations

import argparse
import json
import subprocess
import sys

from conftest import pixels_text, run_cli, synthetic_faces, write_image_folders

from emotorch.cli import build_parser

emotorch = run_cli  # the command as a user runs it


def test_unknown_option_suggests_the_closest():
    res = emotorch("train", "--epoch", "3")
    assert res.returncode == 2 and "did you mean --epochs" in res.stderr


def test_models_lists_shipped_models_and_parameter_counts():
    listing = json.loads(emotorch("models", "--json").stdout)
    shipped = {r["name"]: r for r in listing["shipped"]}
    assert shipped["accurate"]["classes"] == 8 and shipped["fast"]["val_accuracy"] > 0.8
    assert 1 < shipped["fast"]["megabytes"] < 5
    rows = {r["name"]: r["parameters"] for r in listing["trainable"]}
    assert rows["baseline"] > 1_000_000 and rows["vgg19"] > 20_000_000


def test_a_mistyped_command_gets_the_nearest_one():
    res = emotorch("predit", "photo.jpg")
    assert res.returncode == 2 and "unknown command 'predit'; did you mean 'predict'?" in res.stderr


def test_catalog_and_recommend_take_what_users_write(tmp_path):
    db = str(tmp_path / "plain.db")  # a plain path: SQLite
    res = emotorch("recommend", "--emotion", "Happy", "--category", "songs,Movies", "-n", "4", "--json", "--db", db)
    assert res.returncode == 0, res.stderr
    assert {r["category"] for r in json.loads(res.stdout)["items"]} == {"song", "movie"}
    wrong = emotorch("catalog", "list", "--category", "fod", "--db", db)
    assert wrong.returncode == 2 and "unknown category 'fod'; expected one of product" in wrong.stderr
    exported = emotorch("catalog", "export", "--out", str(tmp_path / "c.csv"), "--db", db)
    assert exported.returncode == 0 and exported.stdout.startswith("wrote 300 items to")
    (tmp_path / "no-valence.csv").write_text("category,title,arousal\nfood,Soup,0.1\n")
    bad = emotorch("catalog", "import", str(tmp_path / "no-valence.csv"), "--db", db)
    assert bad.returncode == 1 and "the file has no 'valence' column" in bad.stderr


def test_a_busy_port_is_one_line():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        res = emotorch("serve", "--port", str(busy.getsockname()[1]), "--db", "sqlite://")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "cannot listen there" in res.stderr


def test_data_stats_one_folder_too_high_names_the_data_sets(tmp_path):
    write_image_folders(tmp_path / "sets" / "a", {"train": 7, "val": 7})
    write_image_folders(tmp_path / "sets" / "b", {"train": 7})
    res = emotorch("data", "stats", str(tmp_path / "sets"))
    assert res.returncode == 1 and "a folder of data sets, not one" in res.stderr
    assert str(tmp_path / "sets" / "a") in res.stderr and str(tmp_path / "sets" / "b") in res.stderr


def test_data_stats_counts_splits_classes_and_bad_rows(tmp_path):
    images, _ = synthetic_faces(3)
    rows = [f"4,{pixels_text(images[0])},Training", f"6,{pixels_text(images[1])},PublicTest", "3,1 2 3,Training"]
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    res = emotorch("data", "stats", str(tmp_path / "fer2013.csv"), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["splits"]["train"]["classes"]["sad"] == 1
    assert report["splits"]["val"]["classes"]["neutral"] == 1
    assert report["splits"]["train"]["bad"] == 1
    assert "line 4" in report["splits"]["train"]["bad_examples"][0]
    text = emotorch("data", "stats", str(tmp_path / "fer2013.csv")).stdout
    assert "pixels has 3 values" in text and "train" in text


def test_train_reports_bad_data_without_a_traceback(tmp_path):
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")
    res = emotorch("train", "--data", str(tmp_path / "fer2013.csv"), "--out", str(tmp_path / "run"))
    assert res.returncode == 1  # the input data is bad (2 is for usage errors)
    assert "fer2013.csv, line 2" in res.stderr and "Traceback" not in res.stderr


def test_data_stats_reports_unknown_class_folders(tmp_path):
    root = write_image_folders(tmp_path / "f", {"train": 7})
    (root / "train" / "bored").mkdir()
    res = emotorch("data", "stats", str(root))
    assert res.returncode == 0 and "bored" in res.stdout


def _options(parser: argparse.ArgumentParser, name: str = "emotorch"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _options(subparser, f"{name} {sub}")
        elif not isinstance(action, argparse._HelpAction):
            yield name, parser, action


def test_every_option_has_help_and_shows_its_default():
    for name, parser, action in _options(build_parser()):
        flag = f"{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{flag} has no help text"
        shown = parser._get_formatter()._get_help_string(action)
        if action.default not in (None, False, [], argparse.SUPPRESS):
            assert "default" in shown, f"{flag} hides its default {action.default!r}"
        if action.dest in ("model", "teacher") and "checkpoint" in shown:  # a model to load names the shipped ones
            assert "accurate" in shown and "fast" in shown, f"{flag}: {shown}"


def test_help_imports_no_heavy_library():
    """`emotorch --help` and every subcommand's help need only the parser: no PyTorch, SQLAlchemy or ONNX."""
    heavy = ("torch", "torchvision", "sqlalchemy", "onnxruntime", "cv2")
    code = (
        "import sys; from emotorch.cli import build_parser; build_parser().format_help(); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
    res = emotorch("serve", "--help")
    assert res.returncode == 0 and "--read-timeout" in res.stdout
