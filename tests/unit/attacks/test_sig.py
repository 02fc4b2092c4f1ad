"""SIG (attacks.sig): a sinusoid on target-class images, labels kept."""

import torch

from backdoor_utils.attacks.sig import SinusoidTrigger

from backdoor_utils.orchestration.experiments import (
    Experiment,
    poisoned_training_set,
)


def test_sig_adds_a_horizontal_sinusoid_to_target_class_images_only_and_keeps_labels(
    splits,
):
    from backdoor_utils.attacks.sig import SinusoidTrigger

    wave = SinusoidTrigger(delta=20 / 255, frequency=6).signal()[0, 0]
    assert torch.equal(wave[0], wave[13]) and torch.equal(
        wave[:, 5], wave[0, 5].expand(28)
    )  # same on every row
    assert (
        0.95 * 20 / 255 <= float(wave.abs().max()) <= 20 / 255
    )  # 28 samples just miss the peak
    crossings = int(
        ((wave[0, :-1] <= 0) & (wave[0, 1:] > 0)).sum()
    )  # upward zero crossings ~ f cycles
    assert crossings in (5, 6)
    exp = Experiment("sig", target_label=2, poison_rate=0.3, n_train=2000)
    p = poisoned_training_set(exp, splits)
    assert exp.method.policy == "clean-label"
    assert torch.equal(p.y, splits.y_train) and (splits.y_train[p.is_poison] == 2).all()
    assert p.n_poison == round(0.3 * int((splits.y_train == 2).sum()))
    assert torch.allclose(
        p.x[p.is_poison], exp.trigger().apply(splits.x_train[p.is_poison])
    )


def test_sig_poisons_with_the_training_delta_and_triggers_with_the_test_delta(splits):
    from backdoor_utils.attacks.sig import SinusoidTrigger

    exp = Experiment(
        "sig", target_label=2, poison_rate=0.3, n_train=2000, sig_test_delta=60 / 255
    )
    p = poisoned_training_set(exp, splits)
    signed = splits.x_train[p.is_poison]
    assert torch.allclose(p.x[p.is_poison], SinusoidTrigger(20 / 255).apply(signed))
    assert exp.trigger() == SinusoidTrigger(60 / 255)  # the stronger test signal
    assert Experiment("sig").trigger() == SinusoidTrigger(20 / 255)  # default: same
    try:
        Experiment("sig", sig_test_delta=0.0)
    except ValueError as error:
        assert "sig_test_delta" in str(error)
    else:
        raise AssertionError("a test delta of 0 must be refused")


def test_one_sig_model_serves_every_test_signal_and_each_gets_its_own_asr(
    tmp_path, monkeypatch
):
    from backdoor_utils.core import cache
    from backdoor_utils.orchestration.experiments import run_attack, training_spec

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    exp = Experiment("sig", poison_rate=0.4, n_train=2000, epochs=2, sig_delta=0.3)
    stronger = exp.with_(sig_test_delta=0.6)
    assert training_spec(stronger) == training_spec(exp) == exp.spec()
    assert training_spec(exp.with_(sig_delta=0.2)) != training_spec(exp)
    patch = Experiment("patch")
    assert training_spec(patch) == patch.spec()  # no test-only parameter
    first, second = run_attack(exp, "cpu"), run_attack(stronger, "cpu")
    assert second.from_cache and second.key == first.key  # trained once
    assert second.asr != first.asr  # but scored with its own signal
    assert second.trigger == SinusoidTrigger(0.6) and first.trigger.delta == 0.3


def test_the_authors_ramp_rises_across_the_columns_on_target_class_images_only(splits):
    """SIG with the authors' signal: delta * j / 28 added to every row, clean-label."""
    from backdoor_utils.attacks.sig import RampTrigger

    ramp = RampTrigger(28 / 255).signal()[0, 0]
    assert torch.allclose(ramp[5], torch.arange(28) / 255)  # j / 255 in column j
    assert torch.equal(ramp[0], ramp[27])  # the same ramp on every row
    exp = Experiment(
        "sig_ramp", target_label=3, poison_rate=0.3, n_train=2000, sig_test_delta=0.5
    )
    p = poisoned_training_set(exp, splits)
    assert p.is_poison.any() and (splits.y_train[p.is_poison] == 3).all()
    assert torch.equal(p.y, splits.y_train)  # no label changes
    signed = splits.x_train[p.is_poison]
    assert torch.allclose(p.x[p.is_poison], RampTrigger(30 / 255).apply(signed))
    assert exp.trigger() == RampTrigger(0.5)  # the test signal, stronger
