"""The REST API: in process through FastAPI's TestClient (the app, its dependencies and middleware, real
photos, hostile uploads), and over real HTTP on a uvicorn server where sockets matter (concurrent
requests sharing micro-batches, per-client rate limits)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import run_server
from PIL import Image

from emotorch.choices import FERPLUS_CLASSES
from emotorch.runtime import registry
from emotorch.serve.app import ENV, Settings
from emotorch.serve.batching import MicroBatcher
from emotorch.serve.ratelimit import RateLimiter

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")


def encode(rgb: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(skdata.astronaut())  # one smiling face


def post_image(http: httpx.Client, data: bytes, content_type: str = "image/jpeg") -> httpx.Response:
    return http.post("/v1/emotions", content=data, headers={"content-type": content_type})


def assert_problem(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and words in body["detail"], body


def test_health_and_openapi(client):
    assert client.get("/healthz").json() == {
        "status": "ok",
        "model": registry.STREAM_MODEL,
        "version": "0.1.0",
        "database": "ok",
    }
    spec = client.get("/openapi.json").json()
    for path in ("/v1/emotions", "/v1/recommendations", "/v1/feedback", "/v1/catalog", "/v1/users/{user_id}"):
        assert path in spec["paths"]
    assert set(spec["paths"]["/v1/emotions"]["post"]["requestBody"]["content"]) >= {"image/*", "multipart/form-data"}
    assert client.get("/docs").status_code == 200


def test_emotions_raw_multipart_and_base64_agree(client, photo):
    raw = post_image(client, photo)
    multi = client.post("/v1/emotions", files={"image": ("me.jpg", photo, "image/jpeg")})
    data_url = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
    b64 = client.post("/v1/emotions", json={"image": data_url})
    bodies = [r.json() for r in (raw, multi, b64)]
    assert [r.status_code for r in (raw, multi, b64)] == [200, 200, 200]
    face = bodies[0]["faces"][0]
    assert len(bodies[0]["faces"]) == 1 and face["emotion"] == "happy"
    assert set(face["probabilities"]) == set(FERPLUS_CLASSES)
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-3
    x, y, w, _ = face["box"]
    assert 150 < x < 220 and 30 < y < 100 and 60 < w < 130  # the astronaut's face in the 512x512 photo
    assert bodies[0]["model"]["name"] == registry.STREAM_MODEL == "fast"
    assert bodies[0]["model"]["classes"] == list(FERPLUS_CLASSES)
    assert bodies[0]["model"]["version"] == registry.shipped()["fast"]["onnx_sha256"]  # the file that serves: int8
    assert bodies[0]["model"]["reading"] == "expressive" and bodies[0]["model"]["expressive_head"]
    assert (
        set(face["expressive"]) == set(FERPLUS_CLASSES)
        and max(face["expressive"], key=face["expressive"].get) == "happy"
    )
    assert bodies[0]["inference_ms"] > 0 and bodies[0]["batch_size"] >= 1
    for other in bodies[1:]:
        assert other["faces"][0]["box"] == face["box"] and other["faces"][0]["emotion"] == "happy"


def test_no_face_and_several_faces(client):
    empty = post_image(client, encode(skdata.coffee()))  # a cup of coffee, no face
    assert empty.status_code == 200 and empty.json()["faces"] == []
    face = skdata.astronaut()[20:260, 130:330]
    pair = post_image(client, encode(np.concatenate([face, face[:, ::-1]], axis=1), "PNG"), "image/png")
    assert pair.status_code == 200 and len(pair.json()["faces"]) == 2


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_other_pixel_modes_are_accepted(client, mode):
    im = Image.fromarray(skdata.astronaut()).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    r = post_image(client, buf.getvalue(), "image/png")
    assert r.status_code == 200 and len(r.json()["faces"]) == 1, r.text


def test_hostile_uploads_get_problem_responses_and_the_server_survives(client, photo):
    assert_problem(post_image(client, b"%PDF-1.4 not an image at all"), 415, "not a supported image")
    assert_problem(post_image(client, photo[: len(photo) // 3]), 422, "could not be decoded")
    assert_problem(post_image(client, b""), 400, "no image bytes")
    assert_problem(post_image(client, b"{not json", "application/json"), 400, "base64")
    assert_problem(post_image(client, b'{"image": "***"}', "application/json"), 400, "not valid base64")
    r = client.post("/v1/emotions", files={"other": ("a.txt", b"x", "text/plain"), "b": ("b", b"y")})
    assert_problem(r, 400, "named 'image'")
    # over the 10 MB cap, announced by Content-Length and streamed without one (chunked)
    assert_problem(post_image(client, b"\0" * (11 * 1024 * 1024)), 413, "limited to 10,485,760 bytes")
    chunks = (b"\0" * (1024 * 1024) for _ in range(12))
    r = client.post("/v1/emotions", content=chunks, headers={"content-type": "image/png"})
    assert_problem(r, 413, "limited to")
    assert_problem(post_image(client, png_bomb(10_000, 8_000), "image/png"), 413, "10000x8000 pixels, over the limit")
    assert_problem(post_image(client, png_bomb(30_000, 30_000), "image/png"), 413, "over the limit of 40,000,000")
    assert client.get("/healthz").status_code == 200


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header for a huge 1-bit image whose pixel data is a few kilobytes of zeros."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    rows = zlib.compress(b"\0" * ((width + 7) // 8 + 1) * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_huge_jpeg_dimensions_are_capped_before_decoding(client):
    big = np.asarray(Image.fromarray(skdata.astronaut()).resize((6000, 6000)))  # 36 MP
    r = post_image(client, encode(big, quality=60))
    assert r.status_code == 200, r.text
    body = r.json()
    assert max(body["width"], body["height"]) <= 1920 and len(body["faces"]) == 1


def test_concurrent_requests_share_micro_batches(server, photo):
    with httpx.Client(base_url=server, timeout=60) as http, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: post_image(http, photo), range(32)))
    assert all(r.status_code == 200 for r in responses)
    assert max(r.json()["batch_size"] for r in responses) > 1


def new_user(client: httpx.Client) -> tuple[str, dict[str, str]]:
    """A user made through the API: its id and the header that proves it."""
    made = client.post("/v1/users")
    client.cookies.clear()  # the header, not the page's cookie, proves who is asking
    assert made.status_code == 201, made.text
    return made.json()["user_id"], {"Authorization": f"Bearer {made.json()['token']}"}


def test_recommendations_feedback_catalog_and_forget(client):
    user, auth = new_user(client)
    r = client.post("/v1/recommendations", json={"emotion": "sad", "count": 4, "user_id": user}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["emotion"] == "sad" and len(body["items"]) == 4
    assert all(it["reason"] and it["strategy"] in ("match", "uplift") for it in body["items"])
    songs = client.post(
        "/v1/recommendations",
        json={
            "probabilities": {"happy": 0.7, "surprise": 0.3},
            "categories": ["songs"],  # singular or plural, as everywhere
            "count": 3,
            "strategy": "match",
        },
    )
    assert {it["item"]["category"] for it in songs.json()["items"]} == {"song"}
    item = body["items"][0]["item"]["id"]
    assert (
        client.post("/v1/feedback", json={"item_id": item, "kind": "like", "user_id": user}, headers=auth).status_code
        == 204
    )
    assert_problem(client.post("/v1/feedback", json={"item_id": "no:such", "kind": "click"}), 404, "no item")
    bored = client.post("/v1/recommendations", json={"emotion": "bored"})
    assert_problem(bored, 422, "body.emotion: Input should be 'angry'")
    assert_problem(client.post("/v1/recommendations", json={"emotion": "sad", "count": 0}), 422, "count")
    assert_problem(
        client.post("/v1/recommendations", json={"emotion": "sad", "categories": ["cars"]}),
        422,
        "body.categories.0: Input should be 'product'",
    )
    assert_problem(client.post("/v1/recommendations", json={"probabilities": {"sad": 0}}), 422, "must sum to 1")
    for hostile in ({"sad": 1e308, "happy": 1e308}, {"sad": 2}):  # out of range or overflowing: refused, not "angry"
        assert_problem(
            client.post("/v1/recommendations", json={"probabilities": hostile}), 422, "less than or equal to 1"
        )
        assert_problem(
            client.post("/v1/feedback", json={"item_id": item, "kind": "click", "probabilities": hostile}),
            422,
            "less than or equal",
        )
    for coerced in ("1", True, "0.5"):  # numbers only: nothing is coerced into one
        assert_problem(
            client.post("/v1/recommendations", json={"probabilities": {"sad": coerced}}),
            422,
            "body.probabilities.sad",
        )
    assert_problem(
        client.post(
            "/v1/recommendations",
            content=b'{"probabilities": {"sad": NaN}}',
            headers={"Content-Type": "application/json"},
        ),
        422,
        "probabilities",
    )
    assert_problem(client.get("/v1/catalog", params={"category": "cars"}), 422, "query.category")
    page = client.get("/v1/catalog", params={"category": "movie", "limit": 7, "offset": 7}).json()
    assert page["total"] == 60 and len(page["items"]) == 7 and {i["category"] for i in page["items"]} == {"movie"}
    stored = client.get(f"/v1/users/{user}", headers=auth).json()
    assert stored["events"] == {"impression": 4, "click": 0, "like": 1} and stored["opted_in"] is False
    forgot = client.delete(f"/v1/users/{user}", headers=auth).json()
    assert forgot == {"user_id": user, "events_deleted": 5}  # 4 impressions and a like
    assert_problem(client.get(f"/v1/users/{user}", headers=auth), 401, "token")  # the token went with it


def test_a_users_data_is_reachable_only_with_its_token(client):
    alice, alice_auth = new_user(client)
    mallory, mallory_auth = new_user(client)
    assert alice != mallory and alice_auth != mallory_auth
    rec = {"emotion": "sad", "count": 3, "user_id": alice}
    assert client.post("/v1/recommendations", json=rec, headers=alice_auth).status_code == 200
    item = client.get("/v1/catalog", params={"limit": 1}).json()["items"][0]["id"]
    like = {"item_id": item, "kind": "like", "user_id": alice}
    for method, url, body in (
        ("POST", "/v1/recommendations", rec),
        ("POST", "/v1/feedback", like),
        ("GET", f"/v1/users/{alice}", None),
        ("DELETE", f"/v1/users/{alice}", None),
    ):
        assert_problem(client.request(method, url, json=body), 401, "token")
        assert_problem(client.request(method, url, json=body, headers={"Authorization": "Bearer guess"}), 401, "token")
        assert_problem(client.request(method, url, json=body, headers=mallory_auth), 403, "another user")
    assert client.get(f"/v1/users/{alice}", headers=alice_auth).json()["events"]["impression"] == 3
    for bad in ("%2A", "*", "x" * 129, "%00", "%ff", "a%20b", "a'b"):
        r = client.delete(f"/v1/users/{bad}", headers=alice_auth)
        assert_problem(r, 422, "path.user_id")
    assert client.get(f"/v1/users/{alice}", headers=alice_auth).status_code == 200  # alice is still there


def test_the_page_gets_its_token_in_a_strict_httponly_cookie(client):
    made = client.post("/v1/users")  # the test client keeps cookies, as the browser does
    cookie = made.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/v1/" in cookie
    user = made.json()["user_id"]
    assert client.get(f"/v1/users/{user}").status_code == 200  # the cookie alone proves it
    assert client.delete(f"/v1/users/{user}").status_code == 200
    assert "emotorch_token" not in client.cookies  # the server took its cookie back


def test_every_answer_carries_the_security_headers(client):
    for path in ("/", "/static/app.js", "/healthz", "/v1/catalog?limit=1", "/docs"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY", path
    page = client.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in page and "connect-src 'self'" in page and "unsafe-inline" not in page
    health = client.get("/healthz").json()
    assert health["database"] == "ok" and "sqlite" not in str(health)


def test_metrics_in_prometheus_text_format(client, photo):
    post_image(client, photo)
    text = client.get("/metrics").text
    assert 'emotorch_http_requests_total{method="POST",route="/v1/emotions",status="200"}' in text
    assert 'emotorch_http_request_duration_seconds_bucket{le="0.5",route="/v1/emotions"}' in text
    faces = next(line for line in text.splitlines() if line.startswith("emotorch_faces_total"))
    assert float(faces.split()[1]) >= 1
    assert "emotorch_inference_batch_size_bucket" in text


def test_rate_limit_per_client(tmp_path, server_cache, photo):
    with run_server(tmp_path, "--rate-limit", "1", "--rate-burst", "2", cache=server_cache) as url:
        responses = [httpx.get(f"{url}/v1/catalog", params={"limit": 1}) for _ in range(4)]
        assert [r.status_code for r in responses[:2]] == [200, 200]  # the burst
        assert_problem(responses[-1], 429, "at most 1 requests a second")
        # a made-up forwarded address per request is no new client: no proxy was named (--trust-proxy)
        started = time.monotonic()
        forged = [
            httpx.get(f"{url}/v1/catalog", params={"limit": 1}, headers={"X-Forwarded-For": f"203.0.113.{i}"})
            for i in range(6)
        ]
        refilled = 1 + int(time.monotonic() - started)  # what 1 request a second gives back meanwhile
        assert sum(r.status_code == 200 for r in forged) <= refilled < 6  # believed, each would get 200
        assert int(responses[-1].headers["retry-after"]) >= 1
        assert httpx.get(f"{url}/healthz").status_code == 200  # health checks are never limited


def test_settings_travel_to_workers_and_refuse_unknown_keys(monkeypatch):
    monkeypatch.setenv(ENV, Settings(model="fast", rate_limit=3).to_env())
    assert Settings.from_env() == Settings(model="fast", rate_limit=3)
    monkeypatch.setenv(ENV, json.dumps({"modle": "x"}))
    with pytest.raises(ValueError, match="modle"):
        Settings.from_env()


def test_micro_batcher_groups_requests_and_passes_errors_back():
    calls = []

    def fn(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad input")
        return [i * 2 for i in items]

    async def scenario():
        batcher = MicroBatcher(fn, window=0.05, max_batch=8)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        with pytest.raises(ValueError, match="bad input"):
            await batcher.submit("bad")
        after = await batcher.submit(10)  # the worker survives an error
        mixed = await asyncio.gather(*(batcher.submit(i) for i in [1, 2, "bad", 3]), return_exceptions=True)
        await batcher.stop()
        return results, after, mixed

    results, after, mixed = asyncio.run(scenario())
    assert [r[0] for r in results] == [0, 2, 4, 6, 8] and {r[1] for r in results} == {5}
    assert calls[0] == [0, 1, 2, 3, 4] and after[0] == 20
    # a bad input in a batch fails only its own request: the batch is retried one input at a time
    assert [r[0] for r in mixed if not isinstance(r, Exception)] == [2, 4, 6] and isinstance(mixed[2], ValueError)


def test_rate_limiter_refills():
    limiter = RateLimiter(rate=20, burst=2)
    assert [limiter.wait("a") == 0 for _ in range(3)] == [True, True, False]
    assert limiter.wait("b") == 0  # clients are independent
    assert 0 < limiter.wait("a") <= 0.05
    import time

    time.sleep(0.06)
    assert limiter.wait("a") == 0
