"""The book's metrics, each defined once.

* clean accuracy (CA): accuracy on the full clean test set;
* attack success rate (ASR): share of triggered test images whose true label is *not*
  the target that the model classifies as the target;
* detection precision / recall / F1 against the true poison flags (scikit-learn);
* image distortion: L-inf, L2 and PSNR of triggered vs clean images;
* a defense's effectiveness rating (DER, BackdoorBench): the ASR it removes against the
  clean accuracy it costs.
"""

from __future__ import annotations

import torch
from sklearn.metrics import precision_recall_fscore_support

from .training import predict


def clean_accuracy(model, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Accuracy on clean test images."""
    return float((predict(model, x_test) == y_test).float().mean())


def non_target_mask(y: torch.Tensor, target_label: int) -> torch.Tensor:
    return y != target_label


def attack_success_rate(model, x_test, y_test, trigger, target_label: int) -> float:
    """Share of triggered non-target test images classified as ``target_label``."""
    keep = non_target_mask(y_test, target_label)
    preds = predict(model, trigger.apply(x_test[keep]))
    return float((preds == target_label).float().mean())


def trigger_fire_rate(
    model, x: torch.Tensor, y: torch.Tensor, target_label: int
) -> float:
    """Share of (already transformed) non-target images classified as the target."""
    keep = non_target_mask(y, target_label)
    return float((predict(model, x[keep]) == target_label).float().mean())


def detection_scores(is_poison: torch.Tensor, flagged: torch.Tensor) -> dict:
    """Precision, recall and F1 of ``flagged`` against the true poison flags."""
    p, r, f, _ = precision_recall_fscore_support(
        is_poison.numpy().astype(bool),
        flagged.numpy().astype(bool),
        average="binary",
        zero_division=0,
    )
    return {
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "n_flagged": int(flagged.sum()),
        "n_poison": int(is_poison.sum()),
    }


def distortion(clean: torch.Tensor, triggered: torch.Tensor) -> dict:
    """Per-image L-inf, L2 and PSNR (dB, peak 1.0) of ``triggered`` vs ``clean``;
    tensors [N]."""
    diff = (triggered - clean).flatten(1)
    mse = diff.pow(2).mean(1)
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-12))
    return {"linf": diff.abs().amax(1), "l2": diff.norm(dim=1), "psnr_db": psnr}


def defense_effectiveness_rating(
    asr_before: float, asr_after: float, ca_before: float, ca_after: float
) -> float:
    """BackdoorBench's DER, in [0, 1]: ``(max(0, ASR drop) - max(0, CA drop) + 1) / 2``
    - 0.5 for a defense that changes nothing, 1 for one that removes a backdoor of ASR 1
    at no cost in clean accuracy; a rise in CA or ASR counts as no change."""
    asr_drop = max(0.0, asr_before - asr_after)
    ca_drop = max(0.0, ca_before - ca_after)
    return (asr_drop - ca_drop + 1) / 2
