"""The attack design: a new attack is one module; existing attacks poison exactly as
before."""

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from backdoor_utils import attacks
from backdoor_utils.core import cache
from backdoor_utils.orchestration.experiments import (
    Experiment,
    poisoned_training_set,
    run_attack,
)

PACKAGE = Path(attacks.__file__).resolve().parent.parent


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


def _package_modules():
    return sorted(
        ".".join(
            ("backdoor_utils",) + p.relative_to(PACKAGE).with_suffix("").parts
        ).removesuffix(".__init__")
        for p in PACKAGE.rglob("*.py")
        if p.name != "__main__.py"
    )


_IMPORT_EACH = """
import importlib, os, sys, traceback
import matplotlib, numpy, pandas, sklearn.cluster, sklearn.decomposition, sklearn.metrics, torch, torchvision
assert not any(m.startswith("backdoor_utils") for m in sys.modules)
failed = []
for name in sys.argv[1:]:
    pid = os.fork()  # a child that has loaded no module of the package
    if pid == 0:
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    if os.waitpid(pid, 0)[1]:
        failed.append(name)
print(failed)
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    # third-party libraries are loaded once, then every package module is imported
    # first, alone, in a forked child that has loaded nothing of the package (an import
    # cycle shows up there)
    modules = _package_modules()
    assert len(modules) > 20 and "backdoor_utils.attacks.noise" in modules
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *modules], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


LAYERS = {  # a module may import its own layer and the layers below it
    "core": ("__init__", "core"),
    "methods": ("attacks", "detectors", "defenses"),
    "orchestration": ("orchestration",),
    "tooling": ("tooling", "__main__"),
}
ORDER = list(LAYERS)


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, name in enumerate(ORDER) if top in LAYERS[name])


def test_lower_layers_never_import_higher_ones_and_no_import_hides_in_a_function():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        own = _layer(".".join(rel))
        tree = ast.parse(path.read_text())
        functions = [
            n
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = list(rel[:-1])[: len(rel) - node.level]
            if node.module:
                targets = [".".join(base + [node.module])]
            else:  # "from . import x": a module x, or a name from the package's __init__
                targets = [
                    (
                        ".".join(base + [a.name])
                        if PACKAGE.joinpath(*base, a.name).with_suffix(".py").exists()
                        or PACKAGE.joinpath(*base, a.name).is_dir()
                        else ".".join(base + ["__init__"])
                    )
                    for a in node.names
                ]
            for target in targets:
                if _layer(target) > own:
                    problems.append(
                        f"{'/'.join(rel)} imports {target} (a higher layer)"
                    )
                if id(node) in nested:
                    problems.append(
                        f"{'/'.join(rel)} imports {target} inside a function"
                    )
    assert not problems, problems


def test_blended_trigger_blends_a_fixed_seeded_key_with_weight_alpha():
    from backdoor_utils.attacks.blended import BlendedTrigger
    from backdoor_utils.core.metrics import distortion

    x = torch.rand(4, 1, 28, 28)
    trig = BlendedTrigger(alpha=0.2)
    assert torch.allclose(trig.apply(x), 0.2 * trig.key() + 0.8 * x)
    assert torch.equal(
        trig.key(), BlendedTrigger(alpha=0.5).key()
    )  # one key, any alpha
    psnr = [
        float(distortion(x, BlendedTrigger(alpha=a).apply(x))["psnr_db"].median())
        for a in (0.05, 0.1, 0.2)
    ]
    assert psnr[0] > psnr[1] > psnr[2]  # more blending, more distortion
    assert Experiment("blended", blend_alpha=0.1).trigger().alpha == 0.1


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


def test_wanet_warp_is_seeded_smooth_and_the_identity_at_strength_zero():
    from backdoor_utils.attacks.wanet import WarpTrigger
    from backdoor_utils.core.metrics import distortion

    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(WarpTrigger(s=0.0).apply(x), x, atol=1e-5)
    assert torch.equal(WarpTrigger().grid(), WarpTrigger().grid())
    assert not torch.equal(WarpTrigger().grid(), WarpTrigger(seed=1).grid())
    offsets = (WarpTrigger().grid() - WarpTrigger(s=0.0).grid()).abs()
    assert (
        0 < float(offsets.max()) < 0.1
    )  # a fraction of a pixel-pitch scale: nearly invisible
    warped = WarpTrigger().apply(x)
    assert not torch.allclose(warped, x, atol=1e-3)
    assert float(distortion(x, warped)["psnr_db"].min()) > 10


def test_wanet_noise_mode_warps_only_clean_images_at_its_rate(splits):
    from backdoor_utils.attacks.wanet import NoiseModeHook, WarpTrigger

    poison = torch.zeros(256, dtype=torch.bool)
    poison[:128] = True
    hook = NoiseModeHook(WarpTrigger(), poison, rate=0.08, seed=0)
    xb = splits.x_train[:256].contiguous(memory_format=torch.channels_last)
    out = hook.transform(xb, torch.arange(256))
    changed = (out - xb).flatten(1).abs().amax(1) > 0
    assert int(changed.sum()) == round(0.08 * 256) and not changed[:128].any()
    again = NoiseModeHook(WarpTrigger(), poison, rate=0.08, seed=0).transform(
        xb, torch.arange(256)
    )
    assert torch.equal(out, again)  # seeded


def test_wanet_noisy_warps_are_the_trigger_grid_plus_bounded_per_image_noise(splits):
    from backdoor_utils.attacks.wanet import WarpTrigger

    trigger, x = WarpTrigger(), splits.x_test[:64]
    grids = trigger.noisy_grids(64, torch.Generator().manual_seed(1))
    offset = (grids - trigger.grid()).abs()
    assert (
        offset.max() <= 1 / 28 + 1e-6 and offset.flatten(1).amax(1).min() > 0.5 / 28
    )  # noise in [-1/28, 1/28]
    assert not torch.equal(grids[0], grids[1])  # each image its own noise
    noisy = trigger.apply_noisy(x, seed=1)
    assert torch.equal(noisy, trigger.apply_noisy(x, seed=1))  # seeded
    assert not torch.equal(noisy, trigger.apply(x))


def test_wanet_trains_end_to_end_with_its_noise_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    result = run_attack(
        Experiment("wanet", n_train=2000, epochs=1, poison_rate=0.1), "cpu"
    )
    assert (
        result.poisoned.n_poison == 200
        and 0.0 <= result.asr <= 1.0
        and result.clean_acc > 0.3
    )


def test_adaptive_blend_stamps_partial_weak_keys_on_poisons_and_on_correctly_labelled_covers(
    splits,
):
    from backdoor_utils.attacks.adaptive_blend import AdaptiveBlend
    from backdoor_utils.attacks.blended import BlendedTrigger

    x, y = splits.x_train[:2000], splits.y_train[:2000]
    attack = AdaptiveBlend()
    poisoned = attack.poison(x, y, target_label=0, poison_rate=0.02, seed=0)
    changed = (poisoned.x - x).flatten(1).abs().amax(1) > 0
    relabelled = poisoned.y != y
    assert (
        torch.equal(relabelled, poisoned.is_poison)
        and int(poisoned.is_poison.sum()) == 40
    )
    assert (poisoned.y[poisoned.is_poison] == 0).all() and (
        y[poisoned.is_poison] != 0
    ).all()
    covers = changed & ~poisoned.is_poison
    assert (
        int(covers.sum()) == 40
    )  # cover_ratio 1: as many covers as poisons, labels kept
    # every stamped image carries half of the 16 pieces of the key, blended with weight
    # 0.15
    key = BlendedTrigger(alpha=0.15).key()[0, 0]
    for i in torch.nonzero(changed).flatten()[:10]:
        diff = (poisoned.x[i, 0] - x[i, 0]).abs()
        pieces = (
            diff.unfold(0, 7, 7).unfold(1, 7, 7).amax((-1, -2))
        )  # [4, 4] largest change per piece
        assert int((pieces > 1e-6).sum()) <= 8
        kept = diff > 1e-6
        expected = 0.15 * (key - x[i, 0])
        assert torch.allclose(
            (poisoned.x[i, 0] - x[i, 0])[kept], expected[kept], atol=1e-6
        )
    # at test time: the full key with the stronger weight
    trigger = attack.trigger()
    assert trigger.alpha == 0.2 and torch.equal(trigger.key(), BlendedTrigger().key())
    again = attack.poison(x, y, target_label=0, poison_rate=0.02, seed=0)
    assert torch.equal(again.x, poisoned.x)  # seeded


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
