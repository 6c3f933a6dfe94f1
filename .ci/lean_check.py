"""The lean promise, checked for real: run by the Python of a virtualenv made with `pip install .` only.

predict, a `serve` request and `recommend --image` must work and never import torch (checked with
`python -X importtime`, which lists every module a process imports); `train` must say in one line
what to install. It prints the environment's size and holds the package itself (code and shipped
weights) to its share of the 450 MB target: the rest is what numpy, OpenCV, ONNX Runtime and
the server's dependencies weigh.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "emotorch" / "samples" / "astronaut.jpg"
HEAVY = ("torch", "torchvision", "tensorboard", "matplotlib")
PACKAGE_MB = 25  # the lean environment's target is 450 MB; its dependencies alone weigh about 425


def imported(stderr: str) -> set[str]:
    """Top-level packages a `-X importtime` run imported."""
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def emotorch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "emotorch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    heavy = imported(done.stderr) & set(HEAVY)
    assert not heavy, f"emotorch {' '.join(args)} imported {', '.join(sorted(heavy))}"
    return done


def size_mb(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def main() -> None:
    assert importlib.util.find_spec("torch") is None, "this check needs a virtualenv without PyTorch"
    package = Path(importlib.util.find_spec("emotorch").origin).parent
    own, env = size_mb(package), size_mb(Path(sys.prefix))
    print(f"lean environment: {env:.0f} MB, of which emotorch {own:.1f} MB")
    assert own <= PACKAGE_MB, f"the emotorch package weighs {own:.1f} MB, over its {PACKAGE_MB} MB share"
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"EMOTORCH_CACHE": f"{tmp}/cache", "EMOTORCH_DB": f"sqlite:///{tmp}/emotorch.db"}
        out = emotorch("predict", str(SAMPLE), env=env)
        assert out.returncode == 0 and "happy" in out.stdout, out.stdout + out.stderr[-2000:]
        print("lean predict:", out.stdout.strip())
        rec = emotorch("recommend", "--image", str(SAMPLE), "--db", env["EMOTORCH_DB"], env=env)
        assert rec.returncode == 0 and "happy" in rec.stdout, rec.stdout + rec.stderr[-2000:]
        print("lean recommend --image:", rec.stdout.strip().splitlines()[0])
        train = emotorch("train", "--data", tmp, env=env)
        assert train.returncode == 1 and 'pip install "emotorch[train]"' in train.stderr.splitlines()[-1]
        models = emotorch("models", env=env)  # the shipped models need no PyTorch to be listed
        assert models.returncode == 0 and "accurate" in models.stdout and "emotorch[train]" in models.stdout
        analysed = emotorch("analyse", str(SAMPLE), "--out", f"{tmp}/results", "--workers", "1", env=env)
        assert analysed.returncode == 0, analysed.stdout + analysed.stderr[-2000:]
        report = emotorch("report", f"{tmp}/results", env=env)  # the table without matplotlib
        assert report.returncode == 0 and "happy" in report.stdout, report.stdout + report.stderr[-2000:]
        print("lean models, analyse and report:", report.stdout.strip().splitlines()[0])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115 (closed below)
        server = subprocess.Popen(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "emotorch",
                "serve",
                "--port",
                str(port),
                "--db",
                env["EMOTORCH_DB"],
            ],
            stderr=log,
            stdout=log,
            env=env,
        )
        try:
            body = None
            for _ in range(120):
                try:
                    request = urllib.request.Request(
                        f"http://127.0.0.1:{port}/v1/emotions",
                        data=SAMPLE.read_bytes(),
                        headers={"Content-Type": "image/jpeg"},
                    )
                    body = urllib.request.urlopen(request, timeout=30).read().decode()
                    break
                except OSError:
                    time.sleep(0.5)
            assert body is not None and '"happy"' in body, f"no answer from serve: {body}"
            print("lean serve: POST /v1/emotions ->", body[:100], "...")
        finally:
            server.terminate()
            server.wait(30)
            log.close()
        heavy = imported((Path(tmp) / "serve.log").read_text()) & set(HEAVY)
        assert not heavy, f"emotorch serve imported {', '.join(sorted(heavy))}"
    print("lean install: predict, serve and recommend --image work and never import", ", ".join(HEAVY))


if __name__ == "__main__":
    main()
