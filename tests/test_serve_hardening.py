"""The server under hostile input and careless operation: in process where the app alone decides, over
real HTTP on loopback where sockets, processes and their memory do."""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import SERVERS, free_port, run_server
from PIL import Image
from test_serve import assert_problem, encode, post_image

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(skdata.astronaut())


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def forged_png(width: int, height: int, rows: int) -> bytes:
    """A PNG whose header promises ``width`` x ``height`` pixels and whose data holds ``rows`` rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (rows * (width + 1)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_thin_images_are_refused_and_strips_never_fail_their_micro_batch(server, photo):
    http = httpx.Client(base_url=server, timeout=60)  # concurrent requests share micro-batches over sockets
    thin = [
        png(np.full((1, 1300, 3), 128, np.uint8)),
        png(np.full((1300, 1, 3), 128, np.uint8)),
        forged_png(1, 10_000_000, 1000),
    ]
    for data in thin:
        r = post_image(http, data, "image/png")
        assert r.status_code == 422 and "too thin to hold a face" in r.json()["detail"], r.text
    strip = png(np.full((20, 400, 3), 128, np.uint8))  # as thin as allowed: answered, with no face
    assert post_image(http, strip, "image/png").json()["faces"] == []
    with ThreadPoolExecutor(9) as pool:  # one strip among good photos, sent together: all of them answer
        replies = list(pool.map(lambda d: post_image(http, d, "image/png"), [*[photo] * 8, strip] * 3))
    assert [r.status_code for r in replies] == [200] * len(replies)
    assert all(len(r.json()["faces"]) == 1 for i, r in enumerate(replies) if i % 9 != 8)


def fuzzed(photo_rgb: np.ndarray, seed: int = 0) -> list[tuple[str, bytes]]:
    """Truncated and bit-flipped JPEG, WebP, PNG and BMP files."""
    rng = np.random.default_rng(seed)
    out = []
    for fmt in ("JPEG", "WEBP", "PNG", "BMP"):
        data = encode(photo_rgb, fmt)
        for cut in (1, 4, 8, 12, 16, 24, 33, 50, 80, 120, 200, 400, len(data) // 2, len(data) - 1):
            out.append((f"{fmt} cut at {cut}", data[:cut]))
        for _ in range(12):  # flip bits in the header, where decoders trust what they read
            flipped = bytearray(data)
            for pos in rng.integers(0, min(len(data), 256), size=3):
                flipped[pos] ^= 1 << int(rng.integers(8))
            out.append((f"{fmt} flipped", bytes(flipped)))
    return out


def test_fuzzed_images_never_get_a_5xx(client):
    small = np.asarray(Image.fromarray(skdata.astronaut()).resize((160, 160)))
    cases = fuzzed(small)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda case: post_image(client, case[1], "application/octet-stream"), cases))
    failures = [
        (name, r.status_code, r.text[:200])
        for (name, _), r in zip(cases, replies, strict=True)
        if r.status_code >= 500 or r.status_code not in (200, 400, 413, 415, 422)
    ]
    assert not failures, failures
    assert {r.status_code for r in replies} >= {200, 422}


def test_a_500_is_a_problem_document_keeps_the_connection_and_is_counted(tmp_path):
    """A bug in a route (simulated by a route that raises) answers like any other error."""
    import uvicorn

    from emotorch.serve.app import Settings, create_app

    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'db.sqlite'}"))

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            r = client.get("/v1/boom")
            assert_problem(r, 500, "the server failed on this request")
            assert r.headers.get("connection", "") != "close"
            assert client.get("/healthz").status_code == 200  # the same connection goes on
            assert client.get("/v1/boom").status_code == 500
            metrics = client.get("/metrics").text
        assert 'emotorch_http_requests_total{method="GET",route="/v1/boom",status="500"} 2.0' in metrics
    finally:
        server.should_exit = True
        thread.join(30)


def vm_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


def test_large_16_bit_pngs_cost_bounded_memory(tmp_path, server_cache):
    """A 6300x6300 16-bit PNG (75 KB, under the pixel cap) decoded by 8 clients at once."""
    big = np.full((6300, 6300), 1000, np.uint16)
    big[::97] = 40000  # some structure, still tiny once compressed
    data = png(big)
    assert len(data) < 500_000
    with run_server(tmp_path, cache=server_cache) as url, httpx.Client(base_url=url, timeout=60) as http:
        pid = SERVERS[url][0].pid
        post_image(http, png(np.full((64, 64, 3), 90, np.uint8)), "image/png")  # warm up
        before = vm_kib(pid, "VmHWM")
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: post_image(http, data, "image/png"), range(8)))
        assert [r.status_code for r in replies] == [200] * 8, replies[0].text
        grew = (vm_kib(pid, "VmHWM") - before) / 1024
        assert grew < 1024, f"the server's peak memory grew by {grew:.0f} MiB"  # about 500 here; 7 GB before
        r = post_image(http, png(np.zeros((6000, 6000, 3), np.uint8)), "image/png")  # 36 MP RGB: 137 MiB decoded
        assert_problem(r, 413, "MiB decoded")


def test_a_read_only_database_gives_503_on_health_and_writes_and_still_serves_reads(client, tmp_path, caplog):
    from emotorch.recommend import Recommender
    from emotorch.serve.deps import get_recommender

    db = tmp_path / "catalog.db"
    Recommender(f"sqlite:///{db}").engine.dispose()  # made and filled, then opened read-only
    read_only = Recommender(f"sqlite:///file:{db}?mode=ro&uri=true")
    client.app.dependency_overrides[get_recommender] = lambda: read_only
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert health.json()["database"] == "cannot be written now"  # the why goes to the log, not to clients
    assert "readonly" in caplog.text
    r = client.post("/v1/feedback", json={"item_id": "song:lean-on-me-bill-withers", "kind": "click"})
    assert_problem(r, 503, "cannot be written")
    assert r.headers["retry-after"]
    assert client.get("/v1/catalog", params={"limit": 2}).status_code == 200  # reading still works
    client.app.dependency_overrides.clear()
    assert client.get("/healthz").status_code == 200  # the app's own database again


def test_stalled_uploads_time_out(tmp_path, server_cache):
    with run_server(tmp_path, "--read-timeout", "1", cache=server_cache) as url:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(
                b"POST /v1/emotions HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" * 10
            )  # then nothing more
            started = time.monotonic()
            answer = s.recv(4096)
            assert time.monotonic() - started < 8
        assert answer.startswith(b"HTTP/1.1 408") and b"problem+json" in answer
    assert b"Traceback" not in (tmp_path / "server.log").read_bytes()


@pytest.mark.parametrize("kind", ["missing folder", "folder", "random bytes", "truncated", "scheme", "unreachable"])
def test_unusable_databases_are_one_line_errors(tmp_path, kind):
    good = tmp_path / "good.db"
    if kind in ("truncated",):
        subprocess.run(
            [sys.executable, "-m", "emotorch", "catalog", "list", "--db", f"sqlite:///{good}"],
            capture_output=True,
            check=True,
        )
        good.write_bytes(good.read_bytes()[:3000])
    if kind == "random bytes":
        good.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    url = {
        "missing folder": f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}",
        "folder": f"sqlite:///{tmp_path}",
        "random bytes": f"sqlite:///{good}",
        "truncated": f"sqlite:///{good}",
        "scheme": "nosuchdb://x/y",
        "unreachable": f"postgresql+psycopg://u@127.0.0.1:{free_port()}/x",
    }[kind]
    other = ["serve", "--port", str(free_port())] if kind in ("random bytes", "scheme") else ["user", "alice"]

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "emotorch", *args, "--db", url], capture_output=True, text=True, timeout=120
        )

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [["catalog", "list"], other]))
    for res in results:
        assert res.returncode == 1, (res.args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("emotorch: error: database "), (res.args, res.stderr)


def test_forget_leaves_no_copy_on_disk_and_user_ids_stay_out_of_the_log(server, tmp_path):
    from emotorch.recommend import Recommender, mood

    db = tmp_path / "privacy.db"
    rec = Recommender(f"sqlite:///{db}")
    secret = "user-3f9a1c77e2"
    rec.set_user(secret, opted_in=True)
    for _ in range(20):
        for r in rec.recommend(mood("sad"), categories="song", n=5, user_id=secret):
            rec.feedback(r.id, "click", mood("sad"), user_id=secret)
    files = [db, db.with_name(db.name + "-wal")]
    assert any(secret.encode() in f.read_bytes() for f in files if f.exists())
    assert rec.forget(secret) > 0
    assert not any(secret.encode() in f.read_bytes() for f in files if f.exists())

    made = httpx.post(f"{server}/v1/users").json()
    auth = {"Authorization": f"Bearer {made['token']}"}
    assert httpx.delete(f"{server}/v1/users/{made['user_id']}", headers=auth).status_code == 200
    time.sleep(0.2)
    log = SERVERS[server][1].read_text()
    assert "DELETE /v1/users/-" in log and made["user_id"] not in log and made["token"] not in log


def test_a_malformed_chunked_body_is_no_server_error(server):
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/emotions HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    time.sleep(0.3)
    metrics = httpx.get(f"{server}/metrics").text
    assert 'status="500"' not in metrics
    assert "No response returned" not in SERVERS[server][1].read_text()


def test_stalled_request_headers_are_cut_off(tmp_path, server_cache):
    with run_server(tmp_path, "--read-timeout", "1", cache=server_cache) as url:
        port = int(url.rsplit(":", 1)[1])
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        for s in stalled:  # a request line and one header, then nothing: the headers never end
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert all(s.recv(4096) == b"" for s in stalled)  # closed by the server, no answer
        assert time.monotonic() - started < 8
        for s in stalled:
            s.close()
        with httpx.Client(base_url=url) as client:  # a keep-alive client that takes its time between requests
            assert client.get("/healthz").status_code == 200
            assert client.get("/healthz").status_code == 200
