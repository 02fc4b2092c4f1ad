"""Adaptive-Blend (attacks.adaptive_blend): partial weak keys on poisons and covers."""

import torch


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
