"""The learned patch (attacks.learned): trained with the model, on the poisons only."""

import torch

from backdoor_utils.core.training import (
    TrainConfig,
    train_model,
)

from backdoor_utils.attacks.learned import LearnedPatchTrigger


def test_learned_trigger_is_trained_jointly_and_only_on_poisoned_samples(splits):
    from backdoor_utils.attacks.learned import LearnedPatchHook, LearnedPatchTrigger

    x, y = splits.x_train[:512], splits.y_train[:512].clone()
    poison = torch.zeros(512, dtype=torch.bool)
    poison[:50] = True
    y[poison] = 0
    trigger = LearnedPatchTrigger(size=4, row=23, col=23, init_seed=0)
    before = trigger.logits.detach().clone()
    train_model(
        x, y, TrainConfig(epochs=1), "cpu", hook=LearnedPatchHook(trigger, poison)
    )
    assert not torch.equal(trigger.logits.detach(), before)  # the patch was optimised
    untouched = LearnedPatchTrigger(size=4, row=23, col=23, init_seed=0)
    train_model(
        x,
        y,
        TrainConfig(epochs=1),
        "cpu",
        hook=LearnedPatchHook(untouched, torch.zeros(512, dtype=torch.bool)),
    )
    assert torch.equal(
        untouched.logits.detach(), before
    )  # no poisoned sample, no gradient


def test_the_learned_patch_hook_stamps_the_poisoned_rows_of_a_batch_only():
    from backdoor_utils.attacks.learned import LearnedPatchHook, LearnedPatchTrigger

    trigger = LearnedPatchTrigger(size=4, row=23, col=23, init_seed=0)
    poison = torch.zeros(100, dtype=torch.bool)
    poison[[3, 50, 77]] = True
    xb = torch.rand(4, 1, 28, 28)
    out = (
        LearnedPatchHook(trigger, poison)
        .transform(xb, torch.tensor([3, 4, 50, 60]))
        .detach()
    )
    stamped = trigger.apply(xb).detach()
    assert torch.equal(out[[0, 2]], stamped[[0, 2]]) and torch.equal(
        out[[1, 3]], xb[[1, 3]]
    )


def test_the_learned_triggers_step_scale_multiplies_how_far_its_logits_move(splits):
    # Adam moves every parameter with a steady gradient by about the learning rate per
    # step, so with the logits parameterised as step_scale * raw they move step_scale
    # times as far (two steps here), from the same starting patch
    from backdoor_utils.attacks.learned import LearnedPatchHook, LearnedPatchTrigger

    x, y = splits.x_train[:512], splits.y_train[:512].clone()
    poison = torch.zeros(512, dtype=torch.bool)
    poison[:128] = True
    y[poison] = 0
    moved = {}
    for scale in (1.0, 10.0):
        trigger = LearnedPatchTrigger(
            size=4, row=23, col=23, init_seed=0, step_scale=scale
        )
        before = trigger.logits.detach().clone()
        assert torch.allclose(
            trigger.values(), LearnedPatchTrigger(size=4, row=23, col=23).values()
        )
        train_model(
            x,
            y,
            TrainConfig(epochs=1, batch_size=256),
            "cpu",
            hook=LearnedPatchHook(trigger, poison),
        )
        moved[scale] = (trigger.logits.detach() - before).abs()
    assert moved[1.0].min() > 0
    assert torch.allclose(moved[10.0], 10 * moved[1.0], rtol=0.05)


def test_learned_patch_values_stay_in_unit_range_and_get_gradients():
    trig = LearnedPatchTrigger(size=4, row=23, col=23)
    trig.raw.data.mul_(100)
    out = trig.apply(torch.rand(2, 1, 28, 28))
    assert out.min() >= 0 and out.max() <= 1
    out[..., 23:27, 23:27].sum().backward()
    assert trig.raw.grad is not None and trig.raw.grad.abs().sum() > 0
    frozen = trig.frozen()
    assert torch.allclose(
        frozen.apply(torch.zeros(1, 1, 28, 28))[0, 0, 23:27, 23:27],
        trig.values().detach(),
    )
