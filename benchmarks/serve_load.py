"""Load on `emotorch serve`: N concurrent clients on loopback posting face photos, as a table.

    python benchmarks/serve_load.py [--url http://127.0.0.1:8000] [--seconds 10] [--clients 1 8 32]

Without ``--url`` it starts ``emotorch serve`` (shipped default model, a throw-away SQLite
catalog) on a free port. Each client posts a 640x480 JPEG with one face (from scikit-image's
astronaut photo) to /v1/emotions in a loop for ``--seconds``; the table gives requests per
second, latency percentiles, errors (any non-200 or transport failure) and the mean micro-batch.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
from PIL import Image
from skimage.data import astronaut


def face_frame() -> bytes:
    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[60:420, 170:470] = cv2.resize(astronaut()[20:320, 110:360], (300, 360))
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=85)
    return buf.getvalue()


@contextmanager
def local_server(model: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "emotorch", "-q", "serve", "--port", str(port), "--model", model,
               "--db", f"sqlite:///{Path(tmp) / 'catalog.db'}"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                raise RuntimeError("emotorch serve did not start")
            yield url
        finally:
            proc.terminate()
            proc.wait()


async def load(url: str, clients: int, seconds: float, body: bytes) -> dict[str, float]:
    latencies, batches, errors = [], [], 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        stop = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    r = await http.post("/v1/emotions", content=body, headers={"content-type": "image/jpeg"})
                    ok = r.status_code == 200 and len(r.json()["faces"]) == 1
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                    batches.append(r.json()["batch_size"])
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"rps": len(latencies) / elapsed, "p50": p50, "p95": p95, "p99": p99, "errors": errors,
            "batch": float(np.mean(batches)), "n": len(latencies)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--model", default="default", help="model for the server this starts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    body = face_frame()
    with local_server(args.model) if args.url is None else _given(args.url) as url:
        asyncio.run(load(url, 2, 2.0, body))  # warm-up
        print(f"{url}, {args.seconds:g} s per row, 640x480 JPEG with one face ({len(body) / 1024:.0f} KiB)")
        print(f"{'clients':>7}{'requests':>10}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'errors':>8}"
              f"{'batch':>7}")  # fmt: skip
        for n in args.clients:
            r = asyncio.run(load(url, n, args.seconds, body))
            print(f"{n:>7}{r['n']:>10}{r['rps']:>8.1f}{r['p50']:>8.1f}{r['p95']:>8.1f}{r['p99']:>8.1f}"
                  f"{r['errors']:>8}{r['batch']:>7.1f}")  # fmt: skip


@contextmanager
def _given(url: str):
    yield url


if __name__ == "__main__":
    main()
