"""Atomic writes and the on-disk model cache (``artifacts/``)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ARTIFACTS = Path(
    os.environ.get(
        "BACKDOOR_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"
    )
)


def atomic_write_bytes(path: Path | str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same folder and an atomic
    rename."""
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
    """``torch.save`` through a temp file + rename: a crash never leaves a half-written
    file."""
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


#: The file beside the cache's folders where every computed entry gets a line (see
#: :func:`save_cached`).
LOG_NAME = "computed.log"


def load_cached(path: Path) -> dict | None:
    """Load a cache entry with ``weights_only=True``; None when absent or unreadable."""
    path = Path(path)
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            pass  # a damaged entry is recomputed, not trusted
    return None


def describe(spec: dict) -> str:
    """A cache entry in a few words: its kind, then the attack, poison rate and seed it
    belongs to and the detector or defense it ran, where the spec has them."""
    words = [str(spec.get("kind", "entry"))]
    for key in (
        "attack",
        "poison_rate",
        "seed",
        "detector",
        "defense",
        "cell_seed",
        "epochs",
    ):
        if spec.get(key) is not None:
            words.append(
                str(spec[key])
                if key in ("attack", "detector", "defense")
                else f"{key} {spec[key]}"
            )
    return " ".join(words)


def save_cached(
    path: Path, payload: dict, spec: dict, seconds: float | None = None
) -> None:
    """Store an entry and its spec, then append a line to ``computed.log`` in the
    cache's root: when, how long the computation took (``seconds``, "-" when not timed),
    which entry. A long build can be followed there (``make book`` prints it as it
    grows) and timed afterwards.
    """
    path = Path(path)
    atomic_torch_save(payload, path)
    atomic_write_text(
        path.with_suffix(".json"),
        json.dumps(spec, indent=2, sort_keys=True, default=str),
    )
    took = "-" if seconds is None else f"{seconds:.1f} s"
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    line = f"{when}\t{took}\t{path.parent.name}/{path.stem}\t{describe(spec)}\n"
    try:
        with open(
            path.parent.parent / LOG_NAME, "a"
        ) as log:  # one short append: whole lines even
            log.write(line)  # when several processes (Dask workers) compute at once
    except OSError:
        pass  # the log is a courtesy: an unwritable one never costs a computed entry
