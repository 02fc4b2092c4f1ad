import pytest
import torch

from backdoor_utils import attacks
from backdoor_utils.core import metrics
from backdoor_utils.attacks.blur import BlurTrigger
from backdoor_utils.attacks.learned import LearnedPatchTrigger
from backdoor_utils.attacks.noise import NoiseTrigger
from backdoor_utils.attacks.patch import corner_patch
from backdoor_utils.core.models import SimpleCNN


def test_corner_patch_is_3x3_white_one_pixel_from_corner():
    x = torch.zeros(2, 1, 28, 28)
    out = corner_patch(3).apply(x)
    assert out.sum() == 2 * 9
    assert out[0, 0, 24:27, 24:27].eq(1).all()
    assert out[0, 0, 27].sum() == 0 and out[0, 0, :, 27].sum() == 0
    assert x.sum() == 0  # input untouched


def test_study_patch_is_really_2x2():
    out = attacks.get("study_patch").trigger().apply(torch.zeros(1, 1, 28, 28))
    assert out.sum() == 4


def test_noise_trigger_respects_linf_budget_and_range():
    x = torch.rand(10, 1, 28, 28)
    trig = NoiseTrigger(eps=8 / 255)
    out = trig.apply(x)
    assert float((out - x).abs().max()) <= 8 / 255 + 1e-6
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(trig.pattern(), NoiseTrigger(eps=8 / 255).pattern())  # seeded


def test_blur_trigger_matches_torchvision_and_region_variant_only_touches_corner():
    from torchvision.transforms.functional import gaussian_blur

    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(BlurTrigger().apply(x), gaussian_blur(x, [5, 5], [1.0, 1.0]))
    corner = BlurTrigger(region=7).apply(x)
    assert torch.equal(corner[..., :21, :], x[..., :21, :])


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


class _Constant(SimpleCNN):
    def __init__(self, label):
        super().__init__()
        self.label = label

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        out[:, self.label] = 1
        return out


class _TargetForTargetClassOnly(SimpleCNN):
    """Answers ``target`` exactly for the images whose (hidden) true label is the
    target, and the true label otherwise: a model with *no* backdoor at all."""

    def __init__(self, y, target):
        super().__init__()
        self.y, self.target = y, target

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        ids = (
            x[:, 0, 0, 0].round().long()
        )  # each image carries its own index in pixel (0, 0)
        out[torch.arange(len(x)), self.y[ids]] = 1
        return out


def test_asr_excludes_target_class():
    y = torch.tensor([0, 0, 0, 0, 0, 1, 2, 3, 4, 5])
    x = torch.zeros(10, 1, 28, 28)
    x[:, 0, 0, 0] = torch.arange(10, dtype=torch.float32)
    # target-class images are classified as the target, the others correctly: no
    # backdoor, ASR 0. Counting target-class images would give 0.5.
    model = _TargetForTargetClassOnly(y, target=0)
    assert (
        metrics.attack_success_rate(model, x, y, corner_patch(), target_label=0) == 0.0
    )
    # a model that always answers 0: every non-target image succeeds
    assert (
        metrics.attack_success_rate(_Constant(0), x, y, corner_patch(), target_label=0)
        == 1.0
    )


def test_clean_accuracy_counts_correct_predictions():
    y = torch.tensor([0, 0, 1, 2])
    assert metrics.clean_accuracy(_Constant(0), torch.rand(4, 1, 28, 28), y) == 0.5


def test_detection_scores_against_true_flags():
    truth = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    flagged = torch.tensor(
        [1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool
    )  # precision 1, recall 1/2
    s = metrics.detection_scores(truth, flagged)
    assert s["precision"] == pytest.approx(1.0) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(2 / 3)
    assert (s["n_flagged"], s["n_poison"]) == (2, 4)
    flagged = torch.tensor(
        [1, 1, 1, 1, 1, 1, 0, 0], dtype=torch.bool
    )  # precision 2/3, recall 1
    s = metrics.detection_scores(truth, flagged)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(1.0)


def test_distortion_matches_hand_computed_psnr():
    x = torch.full((1, 1, 28, 28), 0.5)
    y = x.clone()
    y[
        ..., :14, :
    ] += 0.1  # half the pixels off by 0.1: MSE 0.005, PSNR = 10 log10(1/0.005)
    d = metrics.distortion(x, y)
    assert float(d["linf"]) == pytest.approx(0.1, rel=1e-5)
    assert float(d["l2"]) == pytest.approx((392 * 0.01) ** 0.5, rel=1e-5)
    assert float(d["psnr_db"]) == pytest.approx(23.0103, rel=1e-4)
