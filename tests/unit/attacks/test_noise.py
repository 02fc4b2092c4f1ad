"""The noise trigger (attacks.noise)."""

import torch

from backdoor_utils.attacks.noise import NoiseTrigger


def test_noise_trigger_respects_linf_budget_and_range():
    x = torch.rand(10, 1, 28, 28)
    trig = NoiseTrigger(eps=8 / 255)
    out = trig.apply(x)
    assert float((out - x).abs().max()) <= 8 / 255 + 1e-6
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(trig.pattern(), NoiseTrigger(eps=8 / 255).pattern())  # seeded
