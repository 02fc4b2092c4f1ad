"""Helpers the defenses' tests share."""

import pytest
import torch

from backdoor_utils import defenses

# The tests that read ``planted`` share an xdist group: one worker trains its two models
# (about 12 s) instead of each worker its own copy.
uses_planted = pytest.mark.xdist_group("test_defenses.planted")


def reversed_triggers(l1s, reached):
    blank = torch.zeros(28, 28)
    return [
        defenses.ReversedTrigger(c, blank, blank, l1, 1.0, ok)
        for c, (l1, ok) in enumerate(zip(l1s, reached))
    ]


def recording_trainer(seen: dict):
    """A ``train`` for fine-tuning and unlearning that records what it was given and
    trains nothing."""

    def train(x, y, config, device, model=None, desc=""):
        seen.update(x=x, y=y, epochs=config.epochs)
        return model

    return train
