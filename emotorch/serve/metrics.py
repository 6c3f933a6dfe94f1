"""Prometheus metrics of one app instance: requests, latency, faces and micro-batch sizes."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    """The server's counters and histograms, in a registry of their own (one per app)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "emotorch_http_requests",
            "HTTP requests by route, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "emotorch_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.faces = Counter("emotorch_faces", "faces detected and classified", registry=self.registry)
        self.images = Counter("emotorch_images", "images run through the face pipeline", registry=self.registry)
        self.batch_size = Histogram(
            "emotorch_inference_batch_size",
            "images per micro-batch",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.batch_seconds = Histogram(
            "emotorch_inference_batch_duration_seconds", "seconds per micro-batch", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        """One micro-batch of ``size`` images that took ``seconds``."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
