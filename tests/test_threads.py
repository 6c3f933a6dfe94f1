"""One thread budget per process: set once, read by OpenMP, OpenCV, PyTorch and ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from emotorch.runtime import threads

CHECK = """
import json, os, sys
from emotorch.runtime import threads, registry
n = threads.configure({threads!r}, workers={workers})
import cv2, torch
from emotorch.runtime.session import OnnxModel
session = OnnxModel(registry.WEIGHTS / registry.shipped()["fast"]["onnx"]).session
print(json.dumps({{"budget": n, "omp": os.environ["OMP_NUM_THREADS"], "wait": os.environ["OMP_WAIT_POLICY"],
                  "cv2": cv2.getNumThreads(), "torch": torch.get_num_threads(),
                  "onnx": session.get_session_options().intra_op_num_threads}}))
"""


def configured(threads_arg: int | None, workers: int = 1, env: dict[str, str] | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")} | (env or {})
    res = subprocess.run(
        [sys.executable, "-c", CHECK.format(threads=threads_arg, workers=workers)],
        env=clean,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_every_library_gets_the_same_budget():
    cores = threads.available_cores()
    assert configured(None) == {
        "budget": cores,
        "omp": str(cores),
        "wait": "PASSIVE",
        "cv2": cores,
        "torch": cores,
        "onnx": cores,
    }
    assert configured(1) == {"budget": 1, "omp": "1", "wait": "PASSIVE", "cv2": 1, "torch": 1, "onnx": 1}


def test_workers_share_the_cores_and_a_user_setting_is_kept():
    assert threads.budget(None, workers=2) == max(1, threads.available_cores() // 2)
    assert threads.budget(None, workers=64) == 1
    assert configured(None, env={"OMP_NUM_THREADS": "1"})["omp"] == "1"  # the user's environment wins
    assert configured(2, env={"OMP_NUM_THREADS": "1"})["omp"] == "2"  # but --threads wins over it
    with pytest.raises(ValueError, match="at least 1"):
        threads.budget(0)
