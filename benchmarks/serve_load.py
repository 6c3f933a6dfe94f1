"""Load on `emotorch serve`: N concurrent clients on loopback posting face photos, as a table.

    python benchmarks/serve_load.py [--url http://127.0.0.1:8000] [--seconds 10] [--clients 1 8 32] [--mixed 16]
                                    [--writers 8]

Without ``--url`` it starts ``emotorch serve`` (shipped default model, a throw-away SQLite
catalog) on a free port. Each client posts a 640x480 JPEG with one face (from scikit-image's
astronaut photo) to /v1/emotions in a loop for ``--seconds``; the table gives requests per
second, latency percentiles, errors (any non-200 or transport failure) and the mean micro-batch.

The mixed row (``--mixed N`` clients, 0 to skip) has each client loop over a photo, a request for
recommendations under its own session id and a click on one of them, as the page does, and
``--writers N`` more clients only send clicks (the database's heaviest use). It reports 5xx
answers (503s: the database was locked too long), the clicks' p99 latency, and lost updates:
every acknowledged impression and click compared with
what the items' bandit arms counted in the server's database (only for a server this starts).
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
from collections import Counter
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
    """``emotorch serve`` on a free port with a throw-away SQLite catalog: yields (URL, database URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "emotorch",
            "-q",
            "serve",
            "--port",
            str(port),
            "--model",
            model,
            "--db",
            f"sqlite:///{Path(tmp) / 'catalog.db'}",
        ]
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
            yield url, f"sqlite:///{Path(tmp) / 'catalog.db'}"
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
    return {
        "rps": len(latencies) / elapsed,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "errors": errors,
        "batch": float(np.mean(batches)),
        "n": len(latencies),
    }


async def mixed(url: str, clients: int, seconds: float, body: bytes, writers: int = 0) -> dict[str, float]:
    """Photos, recommendations and clicks from ``clients`` sessions at once, and ``writers`` sessions that
    only send clicks; what was acknowledged and how long the clicks took."""
    shown, clicked, statuses, writes = Counter(), Counter(), Counter(), []
    limits = httpx.Limits(max_connections=clients + writers, max_keepalive_connections=clients + writers)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        stop = time.perf_counter() + seconds

        async def client(i: int) -> None:
            rounds = 0
            while time.perf_counter() < stop:
                r = await http.post("/v1/emotions", content=body, headers={"content-type": "image/jpeg"})
                statuses[r.status_code] += 1
                probs = r.json()["faces"][0]["probabilities"] if r.status_code == 200 else {"neutral": 1.0}
                r = await http.post(
                    "/v1/recommendations",
                    json={"probabilities": probs, "count": 3, "session_id": f"load-{i}-{rounds // 20}"},
                )
                statuses[r.status_code] += 1
                if r.status_code != 200:
                    continue
                items = [it["item"]["id"] for it in r.json()["items"]]
                shown.update(items)
                r = await http.post(
                    "/v1/feedback",
                    json={
                        "item_id": items[rounds % len(items)],
                        "kind": "click",
                        "session_id": f"load-{i}-{rounds // 20}",
                    },
                )
                statuses[r.status_code] += 1
                if r.status_code == 204:
                    clicked[items[rounds % len(items)]] += 1
                rounds += 1

        items = [it["id"] for it in (await http.get("/v1/catalog", params={"limit": 1000})).json()["items"]]

        async def writer(i: int) -> None:  # a click on an item its session was never shown: seen and clicked
            rounds = 0
            while time.perf_counter() < stop:
                item = items[(i * 7919 + rounds) % len(items)]
                t0 = time.perf_counter()
                r = await http.post(
                    "/v1/feedback", json={"item_id": item, "kind": "click", "session_id": f"writer-{i}-{rounds}"}
                )
                writes.append(time.perf_counter() - t0)
                statuses[r.status_code] += 1
                if r.status_code == 204:
                    shown[item] += 1
                    clicked[item] += 1
                rounds += 1

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)), *(writer(i) for i in range(writers)))
        elapsed = time.perf_counter() - began
    return {
        "rps": statuses.total() / elapsed,
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
        "503": statuses[503],
        "shown": shown,
        "clicked": clicked,
        "n": statuses.total(),
        "write_p99": float(np.percentile(np.asarray(writes) * 1000, 99)) if writes else float("nan"),
    }


def lost_updates(db: str, shown: Counter, clicked: Counter) -> int:
    """Acknowledged impressions and clicks that the items' bandit arms did not count (or counted twice)."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from emotorch.recommend.db import BanditArm

    with Session(create_engine(db)) as session:
        arms = {a.item_id: a for a in session.scalars(select(BanditArm))}
    lost = 0
    for item in shown | clicked:
        arm = arms.get(item)
        counted_shown = round(arm.a[-1][-1] - 1) if arm else 0  # the bias term: 1 + impressions
        counted_clicks = round(arm.b[-1]) if arm else 0
        lost += abs(counted_shown - shown[item]) + abs(counted_clicks - clicked[item])
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--model", default="fast", help="model for the server this starts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--mixed", type=int, default=16, metavar="N", help="clients in the mixed row (0: none)")
    parser.add_argument(
        "--writers",
        type=int,
        default=8,
        metavar="N",
        help="clients in the mixed row that only send clicks (database writes)",
    )
    args = parser.parse_args()
    body = face_frame()
    with local_server(args.model) if args.url is None else _given(args.url) as (url, db):
        asyncio.run(load(url, 2, 2.0, body))  # warm-up
        print(f"{url}, {args.seconds:g} s per row, 640x480 JPEG with one face ({len(body) / 1024:.0f} KiB)")
        print(
            f"{'clients':>7}{'requests':>10}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'errors':>8}"
            f"{'batch':>7}"
        )
        for n in args.clients:
            r = asyncio.run(load(url, n, args.seconds, body))
            print(
                f"{n:>7}{r['n']:>10}{r['rps']:>8.1f}{r['p50']:>8.1f}{r['p95']:>8.1f}{r['p99']:>8.1f}"
                f"{r['errors']:>8}{r['batch']:>7.1f}"
            )
        if args.mixed:
            m = asyncio.run(mixed(url, args.mixed, args.seconds, body, args.writers))
            lost = lost_updates(db, m["shown"], m["clicked"]) if db else "n/a"
            print(
                f"mixed load, {args.mixed} clients (photo, recommendations, click) and {args.writers} writers "
                f"(clicks): {m['n']} requests, {m['rps']:.1f} req/s, {m['5xx']} answers 5xx ({m['503']} x 503), "
                f"click p99 {m['write_p99']:.0f} ms, {sum(m['clicked'].values())} clicks and "
                f"{sum(m['shown'].values())} impressions acknowledged, lost updates: {lost}"
            )


@contextmanager
def _given(url: str):
    yield url, None  # a server this did not start: its database is not ours to read


if __name__ == "__main__":
    main()
