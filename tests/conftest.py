"""Shared fixtures: a private cache directory and small synthetic FER-style data sets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emotorch.choices import CLASSES
from emotorch.cli.options import shipped_names
from emotorch.runtime import registry

SHARED_FER = Path(__file__).resolve().parents[1] / ".." / "shared" / "fer2013"
needs_fer = pytest.mark.skipif(not SHARED_FER.is_dir(), reason=f"FER2013 not found at {SHARED_FER}")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EMOTORCH_CACHE", str(tmp_path_factory.mktemp("cache")))


def synthetic_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose class is learnable: class c brightens horizontal band c of a noisy image."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.integers(0, 120, size=(n, 48, 48)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, c * 6 : c * 6 + 6] += 120
    return images, labels


def pixels_text(image: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in image.ravel())


def write_image_folders(root: Path, splits: dict[str, int], seed: int = 0, names=CLASSES) -> Path:
    """ROOT/<split>/<class>/*.png with ``n`` faces per split, cycling over ``names``."""
    for s, (split, n) in enumerate(splits.items()):
        images, labels = synthetic_faces(n, seed + s)
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            d = root / split / names[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{split}_{i}.png")
    return root


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty folder standing in for the package's shipped weights (and its manifest)."""
    monkeypatch.setattr(registry, "WEIGHTS", tmp_path / "weights")
    monkeypatch.setattr(registry, "MANIFEST", tmp_path / "weights" / "manifest.json")
    for cached in (registry._verified, shipped_names):  # what was read from the real manifest, or will be
        cached.cache_clear()
    yield tmp_path / "weights"
    for cached in (registry._verified, shipped_names):
        cached.cache_clear()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory with a tiny EmoNet trained for two epochs on synthetic faces."""
    from emotorch.training.config import TrainConfig
    from emotorch.training.train import train

    root = tmp_path_factory.mktemp("evalrun")
    data = write_image_folders(root / "faces", {"train": 112, "val": 28})
    cfg = TrainConfig(data=str(data), model="emonet", model_options={"width": 4}, batch_size=16, epochs=2)
    train(cfg, root / "run", progress=False)
    return root / "run"


@pytest.fixture
def tiny_folders(tmp_path: Path) -> Path:
    """A train/val image-folder data set: 112 training and 28 validation faces."""
    return write_image_folders(tmp_path / "faces", {"train": 112, "val": 28})


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on a loopback port, for the database tests."""
    import os
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile

    pg_bin = _postgres_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server binaries not found (Debian package postgresql)")
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    root = Path(tempfile.mkdtemp(prefix="emotorch-pg-"))  # under /tmp: reachable by the postgres user
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init = subprocess.run(
        [*run_as, str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "emotorch"],
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, init.stderr
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*run_as, str(pg_bin / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(root / "log"), "start"],
        check=True,
        capture_output=True,
    )
    yield f"postgresql+psycopg://emotorch@127.0.0.1:{port}/postgres"
    subprocess.run([*run_as, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def run_cli(
    *args: str, quiet: bool = True, env: dict[str, str] | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """``emotorch [-q] ARGS`` in a fresh interpreter, as a user runs it: its exit status, stdout and stderr."""
    cmd = [sys.executable, "-m", "emotorch", *(["-q"] if quiet else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVERS: dict[str, tuple[subprocess.Popen, Path]] = {}  # base URL -> the server's process and log file


@contextmanager
def run_server(workdir: Path, *args: str, cache: Path | None = None, db: str | None = None) -> Iterator[str]:
    """``emotorch serve`` in a subprocess on a free loopback port; yields its base URL (see :data:`SERVERS`)."""
    port = free_port()
    env = os.environ | {"EMOTORCH_CACHE": str(cache or workdir / "cache"), "OMP_NUM_THREADS": "1"}
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed below, after the process
    cmd = [
        sys.executable,
        "-m",
        "emotorch",
        "serve",
        "--port",
        str(port),
        "--db",
        db or f"sqlite:///{workdir / 'catalog.db'}",
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"emotorch serve exited: {(workdir / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503):  # 503: up, database down
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("emotorch serve did not come up within 180 s")
            time.sleep(0.3)
        SERVERS[url] = (proc, workdir / "server.log")
        yield url
    finally:
        SERVERS.pop(url, None)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def app_client(tmp_path_factory) -> Iterator[TestClient]:
    """The EmoTorch app in this process (shipped model, SQLite catalog), its lifespan run once."""
    from emotorch.serve import Settings, create_app

    db = tmp_path_factory.mktemp("app") / "catalog.db"
    with TestClient(create_app(Settings(db=f"sqlite:///{db}"))) as client:
        yield client


@pytest.fixture
def client(app_client: TestClient) -> Iterator[TestClient]:
    """The in-process app with no cookies and no dependency overrides left from another test."""
    app_client.cookies.clear()
    yield app_client
    app_client.cookies.clear()
    app_client.app.dependency_overrides.clear()


@pytest.fixture(scope="session")
def server_cache(tmp_path_factory) -> Path:
    """One cache (ONNX exports) shared by every server the tests start."""
    return tmp_path_factory.mktemp("server-cache")


@pytest.fixture(scope="session")
def server(tmp_path_factory, server_cache) -> Iterator[str]:
    """A real EmoTorch server (shipped model, SQLite catalog) on loopback, shared by the tests."""
    with run_server(tmp_path_factory.mktemp("server"), cache=server_cache) as url:
        yield url
