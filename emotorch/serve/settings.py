"""What ``emotorch serve`` can be told, handed to each worker process as JSON in an environment variable."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

from emotorch.runtime.registry import STREAM_MODEL

ENV = "EMOTORCH_SERVE_SETTINGS"  # JSON settings handed to each worker process


@dataclass
class Settings:
    """What ``emotorch serve`` can be told; every field has a safe default."""

    model: str = STREAM_MODEL
    backend: str = "auto"
    reading: str | None = None  # None: the model's default (emotorch.runtime.reading.chosen), expressive if it can
    db: str | None = None  # SQLAlchemy URL of the catalog (default: EMOTORCH_DB or the user data dir)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000  # refused before decoding
    max_image_mb: float = 128.0  # refused before decoding: pixels times the mode's bytes per pixel
    max_decodes: int = 2  # images decoded at once (the rest wait): bounds the memory uploads take
    max_side: int = 1920  # larger photos are decoded at reduced scale or shrunk to this
    read_timeout_s: float = 15.0  # a client that sends no body bytes for this long gets 408
    batch_window_ms: float = 3.0
    max_batch: int = 16
    rate_limit: float = 0.0  # requests per second per client on /v1/; 0 turns limiting off
    rate_burst: float | None = None
    threads: int | None = None  # this worker's thread budget (emotorch serve: the cores / --workers)

    @classmethod
    def from_env(cls) -> Settings:
        raw = json.loads(os.environ.get(ENV, "{}"))
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{ENV} has unknown settings: {', '.join(sorted(unknown))}")
        return cls(**raw)

    def to_env(self) -> str:
        return json.dumps(asdict(self))
