"""SCALE-UP (detectors.scale_up) on a stand-in model whose behaviour is known exactly."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from backdoor_utils import detectors
from backdoor_utils.detectors.scale_up import ScaleUp
from backdoor_utils.orchestration import defend


class PatchOrBrightness(nn.Module):
    """Class 0 whenever the top-left 3x3 patch is bright (the 'backdoor'); otherwise the
    class is the image's mean brightness in tenths - which scaling changes."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Linear(1, 1)

    def forward(self, x):
        level = (x.flatten(1).mean(1) * 10).long().clamp(0, 9)
        fired = x[:, 0, :3, :3].amin((1, 2)) > 0.9
        return nn.functional.one_hot(torch.where(fired, 0, level), 10).float()


def _images(n, seed=0, stamped=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.25 + 0.05  # mean ~0.175: class 1
    if stamped:
        x[:, :, :3, :3] = 1.0
    return x


def test_consistency_is_the_share_of_scaled_copies_that_keep_the_prediction():
    model, scale_up = PatchOrBrightness(), ScaleUp()
    x = _images(8)
    by_hand = (
        torch.stack(
            [
                model((x * h).clamp(0, 1)).argmax(1) == model(x).argmax(1)
                for h in (3, 5, 7, 9, 11)
            ]
        )
        .float()
        .mean(0)
    )
    assert torch.equal(scale_up.statistic(model, x), by_hand)
    assert float(by_hand.max()) < 0.5  # scaling moves a clean image's brightness class
    assert torch.equal(
        scale_up.statistic(model, _images(8, stamped=True)), torch.ones(8)
    )  # a triggered image keeps its class at every scale


def test_scale_up_flags_at_or_above_the_fixed_threshold_or_the_clean_frr_level():
    model = PatchOrBrightness()
    assert ScaleUp().threshold(model, _images(10)) == 0.5  # BackdoorBox's T
    calibrated = ScaleUp(threshold_rule="frr", frr=0.1)
    level = calibrated.threshold(model, _images(200))
    spc = ScaleUp().statistic(model, _images(200))
    assert float((spc >= level).float().mean()) <= 0.1
    lower = [v for v in set(spc.tolist()) if v < level]
    assert all(float((spc >= v).float().mean()) > 0.1 for v in lower)
    # when more than frr of the clean inputs are fully consistent, nothing is flagged
    assert calibrated.threshold(model, _images(20, stamped=True)) == math.inf
    found = ScaleUp().detect(model, _images(4, stamped=True), threshold=0.5)
    assert found.flags.all()


def test_scale_up_screens_triggered_inputs_as_the_suspicious_ones():
    y_test = torch.arange(200) % 10
    x_test = _images(200, seed=1)
    result = SimpleNamespace(
        model=PatchOrBrightness(),
        trigger=SimpleNamespace(apply=lambda x: _stamp(x)),
        experiment=SimpleNamespace(target_label=0),
        splits=SimpleNamespace(x_test=x_test, y_test=y_test),
    )
    defender = SimpleNamespace(x_tune=_images(10, 2), x_select=_images(50, 3))
    screening = defend.screen_inputs(result, detectors.get("scale_up"), defender, 100)
    assert screening.far == 0.0 and screening.frr == 0.0  # triggered: flagged
    assert screening.auroc == pytest.approx(1.0)


def _stamp(x):
    x = x.clone()
    x[:, :, :3, :3] = 1.0
    return x


def test_scale_up_refuses_bad_parameters_by_name():
    with pytest.raises(ValueError, match="scales"):
        detectors.get("scale_up", scales=[])
    with pytest.raises(ValueError, match="threshold_rule"):
        detectors.get("scale_up", threshold_rule="quantile")


def test_scaled_copies_stay_in_the_image_range():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = nn.Linear(1, 1)

        def forward(self, x):
            seen.append(float(x.max()))
            return torch.zeros(len(x), 10)

    ScaleUp().statistic(Spy(), _images(4))
    assert len(seen) == 6 and max(seen) <= 1.0  # the input itself and 5 clipped copies
