"""ONNX Runtime sessions: the engine every shipped and exported model runs on, without PyTorch."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from emotorch.errors import CheckpointError
from emotorch.runtime.threads import current

METADATA_KEY = "emotorch"  # the ONNX metadata entry holding the model's card as JSON


class OnnxModel:
    """An ONNX Runtime session: normalised faces (N, 1, 48, 48) float32 in, its named outputs (N, K) out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort  # 0.08 s (python -X importtime): paid by the first session, not by `--help`

        options = ort.SessionOptions()
        threads = threads or current()  # the process's thread budget, when one was set
        if threads:
            options.intra_op_num_threads = threads
        # idle worker threads must not spin: the face detector shares the same few cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own types for unreadable or invalid files
            raise CheckpointError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
        self.path = Path(path)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph (``logits`` and, with an expressive head, ``expressive``) for faces ``x``."""
        outputs = self.session.run(self.outputs, {"faces": np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.outputs, outputs, strict=True))

    def metadata(self) -> dict[str, Any]:
        """The EmoTorch metadata stored in the file (classes, normalisation, temperature, ...), after checking
        the file's graph against the digest written with it (files from before digests: not checked)."""
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise CheckpointError(
                f"{self.path}: an ONNX file without EmoTorch metadata (export it with `emotorch "
                "export`, which stores the classes and preprocessing)"
            )
        try:
            meta = json.loads(text)
            found = graph_digest(self.path) if "graph_sha256" in meta else None
        except ValueError as e:
            raise CheckpointError(f"{self.path}: damaged ({e})") from None
        if found != meta.get("graph_sha256"):
            raise CheckpointError(
                f"{self.path}: damaged: its weights differ from the ones it was written with "
                "(sha256 mismatch); export or download it again"
            )
        return meta


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def graph_digest(path: str | os.PathLike) -> str:
    """sha256 of an ONNX file's graph (its nodes and every weight), read from the protobuf wire format
    without the ``onnx`` package: what :func:`emotorch.training.export.set_metadata` records as ``graph_sha256``,
    so a file whose weights were damaged after writing is caught on load."""
    data, at, digest = Path(path).read_bytes(), 0, hashlib.sha256()
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        elif wire == 2:
            size, at = _varint(data, at)
            if field == 7:  # ModelProto.graph
                digest.update(data[at : at + size])
            at += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    if at != len(data):
        raise ValueError("truncated protobuf")
    return digest.hexdigest()
