"""The on-disk cache (core.cache): atomic writes, safe loading, the computed log, and
the keys' non-code parts."""

import os

import pytest
import torch

from backdoor_utils.core import cache


def test_atomic_write_leaves_old_file_intact_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        cache.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [
        "model.pt"
    ]  # no temp file left behind


def test_cache_key_depends_on_every_field():
    base = {"attack": "patch", "poison_rate": 0.01, "seed": 0}
    assert cache.cache_key(base) == cache.cache_key(dict(reversed(list(base.items()))))
    assert cache.cache_key(base) != cache.cache_key({**base, "seed": 1})


def test_cache_miss_then_hit(tmp_path, monkeypatch):
    from backdoor_utils.orchestration import experiments

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


def test_every_computed_entry_gets_a_line_in_the_log_with_its_time_and_a_loaded_one_none(
    tmp_path, monkeypatch
):
    import time

    from backdoor_utils.orchestration import experiments

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    spec = {"kind": "attack", "attack": "patch", "poison_rate": 0.01, "seed": 3}

    def train():
        time.sleep(0.3)
        return {"model": {"w": torch.arange(3.0)}}

    def lines():
        return (tmp_path / cache.LOG_NAME).read_text().splitlines()

    def seconds(line):
        return float(line.split("\t")[1].removesuffix(" s"))

    experiments.train_cached(spec, train)
    when, _, entry, what = lines()[0].split("\t")
    assert 0.3 <= seconds(lines()[0]) < 30 and time.strptime(when, "%Y-%m-%d %H:%M:%S")
    path = tmp_path / entry.replace("/", os.sep, 1)
    assert (
        path.with_suffix(".pt").exists()
        and what == "attack patch poison_rate 0.01 seed 3"
    )
    experiments.train_cached(spec, train)  # loaded: nothing computed, nothing logged
    assert len(lines()) == 1
    path.with_suffix(".pt").write_bytes(b"damaged")  # recomputed, so logged again
    experiments.train_cached(spec, train)
    assert (
        len(lines()) == 2
        and lines()[1].split("\t")[2] == entry
        and 0.3 <= seconds(lines()[1]) < 30
    )


def test_an_unwritable_log_costs_no_computed_entry(tmp_path):
    (
        tmp_path / cache.LOG_NAME
    ).mkdir()  # a folder where the log should be: appending fails
    path = tmp_path / "models" / "x.pt"
    assert cache.load_cached(path) is None
    cache.save_cached(path, {"w": torch.ones(2)}, {"kind": "test"})
    assert torch.equal(cache.load_cached(path)["w"], torch.ones(2))


def test_a_reloaded_model_keeps_its_measured_accuracy_and_asr_without_evaluating_again(
    tmp_path, monkeypatch
):
    from backdoor_utils.orchestration import experiments

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    exp = experiments.Experiment(
        "patch", n_train=600, epochs=1, poison_rate=0.1, patch_size=3
    )
    first = experiments.run_attack(exp, "cpu")

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a cached model was evaluated again")

    monkeypatch.setattr(experiments, "clean_accuracy", no_evaluation)
    monkeypatch.setattr(experiments, "attack_success_rate", no_evaluation)
    again = experiments.run_attack(exp, "cpu")
    assert again.from_cache and (again.clean_acc, again.asr) == (
        first.clean_acc,
        first.asr,
    )
    # the scores are bound to the weights they were measured on: other weights, other
    # entry
    payload = {
        "model": {name: t.clone() for name, t in first.model.cpu().state_dict().items()}
    }
    before = experiments.tensor_digest(payload)
    payload["model"]["classifier.bias"][3] += 1e-6
    assert experiments.tensor_digest(payload) != before
    assert experiments.tensor_digest(
        {**payload, "hook": {"trigger_logits": torch.zeros(2)}}
    ) != experiments.tensor_digest(payload)


def test_a_tensor_digest_changes_with_any_value_and_with_where_one_tensor_ends():
    from backdoor_utils.orchestration import experiments

    # the key of a retraining (the flags it removed), of a model trained on given data
    # (images, labels) and of a reversal (the clean images it used)
    flags = torch.zeros(1000, dtype=torch.bool)
    flipped = flags.clone()
    flipped[999] = True
    assert experiments.tensor_digest(flags) != experiments.tensor_digest(flipped)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    assert experiments.tensor_digest(x[:4], x[4:]) != experiments.tensor_digest(
        x[:3], x[3:]
    )  # same bytes
    assert experiments.tensor_digest(x, y) == experiments.tensor_digest(
        x.clone(), y.clone()
    )
    assert experiments.tensor_digest(x.transpose(2, 3)) == experiments.tensor_digest(
        x.transpose(2, 3).contiguous()
    )


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


def test_an_edit_to_the_metrics_evaluates_a_cached_model_again_without_retraining_it(
    tmp_path, monkeypatch
):
    from backdoor_utils.orchestration import experiments

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    evaluated = []
    measure = experiments.clean_accuracy
    monkeypatch.setattr(
        experiments,
        "clean_accuracy",
        lambda *a, **k: evaluated.append(1) or measure(*a, **k),
    )
    exp = experiments.Experiment("none", n_train=300, epochs=1)
    experiments.run_attack(exp, "cpu")
    assert experiments.run_attack(exp, "cpu").from_cache and len(evaluated) == 1
    evaluate = experiments.evaluate_attack

    def evaluate_attack(model, trigger, exp, splits):  # the evaluation's code edited
        return {**evaluate(model, trigger, exp, splits), "edited": True}

    monkeypatch.setattr(experiments, "evaluate_attack", evaluate_attack)
    assert experiments.run_attack(exp, "cpu").from_cache and len(evaluated) == 2


def test_cache_key_changes_with_precision_device_and_torch_version(monkeypatch):
    from backdoor_utils.orchestration import experiments
    from backdoor_utils.core.training import bf16_native

    def key(**kw):
        bf16_native.cache_clear()
        return cache.cache_key(experiments.model_spec({"kind": "attack"}, **kw))

    monkeypatch.setenv("BACKDOOR_BF16", "0")
    fp32 = key(device="cpu")
    monkeypatch.setenv("BACKDOOR_BF16", "1")
    assert key(device="cpu") != fp32
    monkeypatch.setenv("BACKDOOR_BF16", "0")
    assert key(device="cuda") != fp32
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert key(device="cpu") != fp32
    bf16_native.cache_clear()


def test_cache_key_changes_with_the_cpu_thread_count():
    # measured: one epoch on 4,000 images with 1 vs 2 threads differs by up to 7e-7 per
    # weight
    from backdoor_utils.orchestration import experiments

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cache.cache_key(experiments.model_spec({"kind": "attack"}, device="cpu"))
        torch.set_num_threads(2)
        two = cache.cache_key(experiments.model_spec({"kind": "attack"}, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    assert one != two


def test_experiment_spec_carries_the_attacks_full_spec():
    from backdoor_utils import attacks
    from backdoor_utils.orchestration.experiments import Experiment

    for attack in attacks.names():
        exp = Experiment(attack=attack)
        method = exp.spec()["method"]
        assert method["trigger"] == exp.trigger().spec()
        assert method["parameters"] == dict(exp.params) | exp.method.parameters()
        assert method["policy"] == exp.method.policy
    # a knob that only changes the trigger changes the spec through it
    assert (
        Experiment(attack="blur").spec()["method"]["trigger"]
        != Experiment(attack="study_blur").spec()["method"]["trigger"]
    )
    assert Experiment("noise", eps=4 / 255).spec() != Experiment("noise").spec()
    assert "method" not in Experiment(attack="none").spec()


def test_an_attacks_own_class_keys_its_models_and_only_its_models():
    from backdoor_utils.orchestration import experiments
    from backdoor_utils.attacks.noise import Noise
    from backdoor_utils.attacks.patch import Patch
    from backdoor_utils.orchestration.experiments import Experiment

    noise, patch = Experiment("noise"), Experiment("patch")
    assert Noise in noise.code() and Noise not in patch.code() and Patch in patch.code()
    assert Experiment("none").code() == ()

    def key(e):
        return cache.cache_key(
            experiments.model_spec(
                e.spec(), (experiments.train_attack_model, *e.code())
            )
        )

    assert len({key(e) for e in (noise, patch, Experiment("none"))}) == 3
