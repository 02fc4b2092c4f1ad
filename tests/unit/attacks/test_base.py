"""The attack protocol (attacks.base): the registry, the poisoning policies, and every
attack poisoning exactly as before."""

import pytest
import torch

from backdoor_utils import attacks
from backdoor_utils.attacks.patch import corner_patch

from dataclasses import dataclass
from backdoor_utils.core import cache
from backdoor_utils.orchestration.experiments import (
    Experiment,
    poisoned_training_set,
    run_attack,
)


def test_dirty_label_poisoning_relabels_only_non_target_samples_at_the_rate(splits):
    trig = corner_patch()
    p = attacks.dirty_label(
        splits.x_train, splits.y_train, trig, target_label=0, poison_rate=0.05, seed=0
    )
    assert p.n_poison == round(0.05 * len(splits.y_train))
    assert (p.original_y[p.is_poison] != 0).all()
    assert (p.y[p.is_poison] == 0).all()
    assert torch.equal(p.y[~p.is_poison], splits.y_train[~p.is_poison])
    assert p.x[p.is_poison][:, 0, 24:27, 24:27].eq(1).all()
    again = attacks.dirty_label(splits.x_train, splits.y_train, trig, 0, 0.05, seed=0)
    assert torch.equal(again.is_poison, p.is_poison)


@dataclass(frozen=True)
class _InvertTrigger:
    def apply(self, x):
        return 1.0 - x

    def spec(self):
        return {"kind": "invert"}


@attacks.register
@dataclass(frozen=True)
class ToyInvert(attacks.Attack):
    """A toy attack declared here, in a test module: inverted images, relabelled to the
    target."""

    name = "toy_invert"
    rules = {
        "strength": lambda name, value: (
            None
            if 0 < value <= 1
            else (_ for _ in ()).throw(
                ValueError(f"{name}: must be in (0, 1], got {value!r}")
            )
        )
    }
    strength: float = 1.0

    def trigger(self, seed=0):
        return _InvertTrigger()


def test_a_new_attack_is_one_module_and_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    exp = Experiment("toy_invert", n_train=2000, epochs=2, poison_rate=0.1, seed=0)
    result = run_attack(exp, "cpu")
    assert (
        result.poisoned.n_poison == 200
        and (result.poisoned.y[result.poisoned.is_poison] == 0).all()
    )
    assert torch.equal(
        result.poisoned.x[result.poisoned.is_poison],
        1 - result.splits.x_train[result.poisoned.is_poison],
    )
    assert (
        result.asr > 0.9 and result.clean_acc > 0.5
    )  # an inverted image is an easy trigger to learn
    assert ToyInvert in exp.code()  # its own class keys its models
    assert run_attack(exp, "cpu").from_cache  # cached like every model
    from backdoor_utils.orchestration.params import validate_parameters

    validate_parameters(
        attack="toy_invert", strength=0.5
    )  # its parameters join the one-call validation
    with pytest.raises(ValueError, match="strength: must be in"):
        validate_parameters(strength=2.0)


def test_unknown_attack_and_unknown_parameter_fail_with_the_allowed_ones():
    with pytest.raises(ValueError, match="attack: must be one of .*'patch'"):
        Experiment("laser")
    with pytest.raises(
        ValueError,
        match=(
            "eps: not a parameter of the 'patch' attack; its parameters are patch_size"
        ),
    ):
        Experiment("patch", eps=0.1)
    with pytest.raises(
        ValueError, match="patch_size: must be an integer >= 1 and <= 14"
    ):
        Experiment("patch", patch_size=20)


def test_switching_attacks_keeps_only_the_parameters_the_new_one_declares():
    exp = Experiment("patch", patch_size=5, seed=3)
    assert exp.with_(attack="learned").params == (("patch_size", 5),)
    assert (
        exp.with_(attack="study_patch").params == ()
        and exp.with_(attack="study_patch").seed == 3
    )
    assert exp.clean().params == () and exp.clean().attack == "none"
    assert exp.with_(patch_size=2).method.patch_size == 2


def test_clean_label_poisoning_stamps_target_class_images_and_keeps_every_label(splits):
    trigger = attacks.get("patch").trigger()
    p = attacks.clean_label(
        splits.x_train, splits.y_train, trigger, target_label=3, poison_rate=0.5, seed=0
    )
    n_target = int((splits.y_train == 3).sum())
    assert p.n_poison == round(0.5 * n_target)
    assert (splits.y_train[p.is_poison] == 3).all()  # only the target class
    assert torch.equal(p.y, splits.y_train)  # no label changed
    assert p.x[p.is_poison][:, 0, 24:27, 24:27].eq(1).all()
    assert torch.equal(p.x[~p.is_poison], splits.x_train[~p.is_poison])


# (x sum, sum of poisoned indices, y sum, sum of the trigger applied to 64 test images),
# computed with the code before the attacks became modules (2026-11-26): the refactor
# changed no poisoning
BEFORE = {
    ("patch", ()): (205006.488053, 18838, 9069, 6332.164760),
    ("patch", (("patch_size", 4),)): (206426.488053, 102162, 8987, 6779.694171),
    ("study_patch", ()): (204906.488053, 18838, 9069, 6012.164760),
    ("noise", ()): (204914.923264, 18838, 9069, 6049.679494),
    ("noise", (("eps", 4 / 255),)): (205058.618388, 102162, 8987, 5905.591046),
    ("blur", ()): (204828.286342, 18838, 9069, 5762.486046),
    ("blur", (("blur_kernel", 7), ("blur_sigma", 1.5))): (
        204849.484490,
        102162,
        8987,
        5769.711395,
    ),
    ("study_blur", ()): (204827.943806, 18838, 9069, 5760.929776),
    ("learned", (("patch_size", 3),)): (204826.488053, 18838, 9069, 6016.429357),
    ("learned", (("patch_size", 4),)): (204826.488053, 102162, 8987, 6185.855387),
    ("initial_patch", (("patch_size", 3),)): (204907.820740, 18838, 9069, 6016.429357),
    ("initial_patch", (("patch_size", 4),)): (205498.614953, 102162, 8987, 6185.855387),
}


@pytest.mark.parametrize("attack, params", list(BEFORE))
def test_existing_attacks_poison_exactly_as_before_the_refactor(splits, attack, params):
    # the second configuration of each attack used target 3, 5% poison, seed 2
    other = (
        {"target_label": 3, "poison_rate": 0.05, "seed": 2}
        if params and params != (("patch_size", 3),)
        else {}
    )
    exp = Experiment(attack, n_train=2000, **other, **dict(params))
    p = poisoned_training_set(exp, splits)
    with torch.no_grad():
        applied = float(exp.trigger().apply(splits.x_test[:64]).double().sum())
    got = (
        float(p.x.double().sum()),
        int(p.is_poison.nonzero().flatten().sum()),
        int(p.y.sum()),
        applied,
    )
    assert got == pytest.approx(BEFORE[(attack, params)], rel=1e-9, abs=1e-4)


@pytest.mark.parametrize("name", attacks.names())
def test_every_attacks_trigger_leaves_a_valid_image(name):
    # a triggered image is an image: pixels stay in [0, 1] even on white and black
    # digits (an additive trigger such as SIG's sinusoid must saturate, not overflow)
    x = torch.cat(
        [
            torch.ones(2, 1, 28, 28),
            torch.zeros(2, 1, 28, 28),
            torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)),
        ]
    )
    out = attacks.get(name).trigger(seed=0).apply(x).detach()
    assert out.shape == x.shape
    assert (
        float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6
    )  # blurs and warps: 1 ulp
