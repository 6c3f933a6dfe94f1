"""What pip is told: the Pythons EmoTorch supports, and dependencies that install on each of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

PROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]


def test_pip_refuses_pythons_the_face_detector_does_not_install_on():
    supported = SpecifierSet(PROJECT["requires-python"])
    assert "3.11.7" in supported
    for version in ("3.10.13", "3.12.1", "3.13.0"):  # yuface has no wheels for 3.12+; the code needs 3.11
        assert version not in supported, f"pip would install on Python {version}, where detection cannot work"


def test_every_dependency_installs_on_every_supported_python():
    supported = SpecifierSet(PROJECT["requires-python"])
    for version in (v for v in ("3.11.0", "3.11.7", "3.12.0", "3.13.0") if v in supported):
        env = {"python_version": version.rsplit(".", 1)[0], "python_full_version": version}
        markers = {d: Requirement(d).marker for d in PROJECT["dependencies"]}
        dropped = [d for d, marker in markers.items() if marker is not None and not marker.evaluate(env)]
        assert not dropped, f"on Python {version} pip would leave out {dropped}"
