"""WaNet (attacks.wanet): the warp, its noise mode, and training with it."""

import torch

from backdoor_utils import attacks
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
        Experiment("wanet", n_train=2000, epochs=2, poison_rate=0.1), "cpu"
    )
    assert (
        result.poisoned.n_poison == 200
        and 0.0 <= result.asr <= 1.0
        and result.clean_acc > 0.3
    )


def _dots(n=64):
    """``n`` images, each black but for one bright pixel at the centre (14, 14)."""
    x = torch.zeros(n, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    return x


def test_post_warp_crop_shifts_each_image_by_its_own_whole_pixels_within_the_padding():
    from backdoor_utils.attacks.wanet import PostWarpAugment

    out = PostWarpAugment().crop(_dots(), torch.Generator().manual_seed(0))
    assert out.shape == (64, 1, 28, 28)
    assert torch.equal(out.flatten(1).sum(1), torch.ones(64))  # moved, not blurred
    where = out.flatten(1).argmax(1)
    rows, cols = where // 28 - 14, where % 28 - 14
    assert rows.abs().max() <= 5 and cols.abs().max() <= 5
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 20  # each image its own shift
    assert rows.abs().max() == 5 or cols.abs().max() == 5  # the whole range is used


def test_post_warp_rotation_turns_about_half_the_images_by_at_most_ten_degrees():
    from backdoor_utils.attacks.wanet import PostWarpAugment

    x = torch.zeros(400, 1, 28, 28)
    x[:, 0, 4:24, 13:15] = 1.0  # a vertical bar through the centre
    out = PostWarpAugment().rotate(x, torch.Generator().manual_seed(0))
    turned = (out - x).flatten(1).abs().amax(1) > 1e-4
    assert 0.4 < float(turned.float().mean()) < 0.6  # per image, p 0.5
    # a 10-degree turn moves the bar's end (10 pixels out) by at most 10 sin(10°) ~ 1.7
    # pixels: nothing lands beyond 2.5 pixels of the bar's columns
    assert float(out[:, 0, :, :10].abs().max()) < 1e-4
    assert float(out[:, 0, :, 18:].abs().max()) < 1e-4


def test_wanet_trains_with_the_authors_post_warp_augmentation_unless_told_not_to(
    splits,
):
    from backdoor_utils.attacks.wanet import PostWarpAugment
    from backdoor_utils.attacks.base import PoisonedDataset

    poisoned = PoisonedDataset(
        splits.x_train[:256],
        splits.y_train[:256],
        torch.arange(256) < 26,
        splits.y_train[:256],
    )
    method = attacks.get("wanet")
    assert method.post_augment and method.training_hook(poisoned).augment == (
        PostWarpAugment()
    )
    assert (
        attacks.get("wanet", post_augment=False).training_hook(poisoned).augment is None
    )
    # the whole batch is augmented, poisons included (the authors' PostTensorTransform)
    hook = method.training_hook(poisoned)
    xb = splits.x_train[:256].contiguous(memory_format=torch.channels_last)
    moved = [
        float(
            ((hook.transform(xb, torch.arange(256)) - xb).flatten(1).abs().amax(1) > 0)[
                :26
            ]
            .float()
            .mean()
        )
        for _ in range(20)
    ]
    assert 0.5 < sum(m > 0.5 for m in moved) / 20 <= 1.0  # crop at p 0.8 per batch
