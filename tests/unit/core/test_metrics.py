"""The book's metrics (core.metrics), each against a case computed by hand."""

import pytest
import torch

from backdoor_utils.core import metrics
from backdoor_utils.attacks.patch import corner_patch
from backdoor_utils.core.models import SimpleCNN


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


def test_der_rewards_the_asr_removed_and_charges_the_clean_accuracy_lost():
    from backdoor_utils.core.metrics import defense_effectiveness_rating as der

    assert der(1.0, 0.0, 0.99, 0.99) == pytest.approx(1.0)  # all removed, for free
    assert der(0.9, 0.9, 0.99, 0.99) == pytest.approx(0.5)  # nothing changed
    # 0.8 of ASR removed for 4 points of CA: (0.8 - 0.04 + 1) / 2; BackdoorBench's
    # other code path adds the drop (0.92) - a defense must not gain by losing accuracy
    assert der(0.9, 0.1, 0.99, 0.95) == pytest.approx(0.88)
    # a rise counts as no change, not as a gain or a loss
    assert der(0.2, 0.5, 0.95, 0.97) == pytest.approx(0.5)
