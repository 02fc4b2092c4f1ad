import os

import pytest
import torch

from backdoor_utils import cache


def test_atomic_write_leaves_old_file_intact_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        cache.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind


def test_cache_key_depends_on_every_field():
    base = {"attack": "patch", "poison_rate": 0.01, "seed": 0}
    assert cache.cache_key(base) == cache.cache_key(dict(reversed(list(base.items()))))
    assert cache.cache_key(base) != cache.cache_key({**base, "seed": 1})


def test_cache_miss_then_hit(tmp_path, monkeypatch):
    from backdoor_utils import experiments

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    calls = []

    def train():
        calls.append(1)
        return {"model": {"w": torch.arange(3.0)}}

    first, hit1 = experiments.train_cached({"kind": "test"}, train)
    second, hit2 = experiments.train_cached({"kind": "test"}, train)
    assert (hit1, hit2) == (False, True)
    assert len(calls) == 1
    assert torch.equal(second["model"]["w"], torch.arange(3.0))


def test_damaged_cache_entry_is_recomputed(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"garbage")
    assert cache.load_cached(path) is None


def test_cache_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, path)
    assert cache.load_cached(path) is None  # weights_only=True refuses to build it
