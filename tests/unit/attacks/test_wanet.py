"""WaNet (attacks.wanet): the warp, its noise mode, and training with it."""

import torch

from backdoor_utils.core import cache
from backdoor_utils.orchestration.experiments import (
    Experiment,
    run_attack,
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
