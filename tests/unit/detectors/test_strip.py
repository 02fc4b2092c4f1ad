"""STRIP (detectors.strip) on stand-in models whose behaviour is known exactly."""

import pytest
import torch
from torch import nn

from backdoor_utils.detectors.strip import STRIP


class PatchOrPixels(nn.Module):
    """Class 0 whenever the top-left 3x3 patch is bright (the 'backdoor'), else a fixed
    random linear read-out of the pixels: blends of a clean image are ambiguous, blends
    of a triggered one are not.
    """

    def __init__(self):
        super().__init__()
        self.read = nn.Linear(784, 10)
        torch.nn.init.normal_(
            self.read.weight, std=0.3, generator=torch.Generator().manual_seed(0)
        )

    def forward(self, x):
        logits = self.read(x.flatten(1))
        fired = (x[:, 0, :3, :3].amin((1, 2)) > 0.9).float()
        return logits + 50 * fired[:, None] * torch.nn.functional.one_hot(
            torch.zeros(len(x), dtype=torch.long), 10
        )


def _stamp(x):
    x = x.clone()
    x[:, :, :3, :3] = 1.0
    return x


def test_strip_threshold_sets_the_false_rejection_rate_and_flags_triggered_inputs():
    g = torch.Generator().manual_seed(0)
    pool, clean_val, clean_test = (
        torch.rand(n, 1, 28, 28, generator=g) * 0.8 for n in (300, 400, 400)
    )
    strip = STRIP(n_overlays=20, frr=0.05, threshold_rule="quantile")
    model = PatchOrPixels()
    threshold = strip.threshold(model, clean_val, pool)
    val_h = strip.entropy(model, clean_val, pool)
    assert float((val_h < threshold).float().mean()) == pytest.approx(0.05, abs=0.005)
    triggered = strip.detect(
        model, _stamp(clean_test), x_pool=pool, threshold=threshold
    )
    assert triggered.flags.all()  # every blend keeps the patch: entropy ~0
    assert float(triggered.entropy.max()) < 0.01
    clean = strip.detect(model, clean_test, x_pool=pool, threshold=threshold)
    assert float(clean.flags.float().mean()) < 0.15  # about frr on fresh clean inputs


def test_strip_draws_overlays_per_input_seeded_and_needs_enough_of_them():
    strip = STRIP(n_overlays=5)
    picks = strip.overlays(torch.zeros(10, 1, 28, 28), 3, seed=4)
    assert picks.shape == (3, 5) and torch.equal(
        picks, strip.overlays(torch.zeros(10, 1, 28, 28), 3, seed=4)
    )
    assert not torch.equal(picks[0], picks[1])
    with pytest.raises(ValueError, match="n_overlays"):
        STRIP(n_overlays=50).overlays(torch.zeros(10, 1, 28, 28), 1)


def test_strip_defaults_are_the_references_float_sum_and_normal_fit():
    strip = STRIP()
    assert (strip.blend, strip.threshold_rule) == ("sum", "normal")
    assert (strip.n_overlays, strip.frr) == (100, 0.01)


def test_strip_normal_threshold_is_the_frr_quantile_of_the_normal_fitted_to_clean_entropies():
    from scipy.stats import norm

    h = torch.tensor([2.0, 2.2, 2.5, 2.1, 1.9, 2.4, 2.3, 3.0])
    mean, sd = float(h.double().mean()), float(h.double().std(unbiased=False))
    assert STRIP(frr=0.01).cut(h) == pytest.approx(norm.ppf(0.01, mean, sd), rel=1e-9)
    assert STRIP(frr=0.01).cut(h) < float(h.min())  # a normal tail, not a data point
    empirical = STRIP(frr=0.25, threshold_rule="quantile").cut(h)
    assert empirical == pytest.approx(float(torch.quantile(h.double(), 0.25)))


@pytest.mark.parametrize("blend", ["sum", "saturated"])
def test_strip_entropy_is_the_mean_entropy_of_each_inputs_own_blends(blend):
    # by hand: input i blended (pixel sum, saturated at 1 only when asked) with the n
    # overlays drawn for input i
    g = torch.Generator().manual_seed(1)
    pool, x = torch.rand(50, 1, 28, 28, generator=g), torch.rand(
        6, 1, 28, 28, generator=g
    )
    strip, model = STRIP(n_overlays=4, blend=blend), PatchOrPixels()
    picks = strip.overlays(pool, len(x), seed=3)
    expected = []
    for i in range(len(x)):
        blends = x[i] + pool[picks[i]]
        assert float(blends.max()) > 1.5  # a sum that saturation would change
        if blend == "saturated":
            blends = blends.clamp(0.0, 1.0)
        with torch.no_grad():
            p = model(blends).double().softmax(1).clamp_min(1e-12)
        expected.append(float(-(p * p.log2()).sum(1).mean()))
    assert strip.entropy(model, x, pool, seed=3).tolist() == pytest.approx(
        expected, rel=1e-4, abs=1e-5
    )
