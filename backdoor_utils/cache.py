"""Atomic writes and the on-disk model cache (``artifacts/``)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

ARTIFACTS = Path(os.environ.get("BACKDOOR_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))


def atomic_write_bytes(path: Path | str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    """``torch.save`` through a temp file + rename: a crash never leaves a half-written file."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def cache_key(spec: dict) -> str:
    """Stable short hash of a JSON-serialisable spec (sorted keys)."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def cache_path(kind: str, spec: dict, root: Path | str | None = None) -> Path:
    return Path(root or ARTIFACTS) / kind / f"{cache_key(spec)}.pt"


def load_cached(path: Path) -> dict | None:
    """Load a cache entry with ``weights_only=True``; None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # a damaged entry is recomputed, not trusted


def save_cached(path: Path, payload: dict, spec: dict) -> None:
    atomic_torch_save(payload, path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(spec, indent=2, sort_keys=True, default=str))
