"""Detectors and defenses run against attack results, scored for the reader.

The orchestration above the methods: it knows the true poison flags and the test trigger, and
uses them only to *score* what a detector or defense decided without them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from .defenses import cleanse_report
from .detection import Detection, detect_poison
from .experiments import (CORE_SOURCES, AttackResult, Experiment, reversed_triggers, run_attack,
                          train_on_data_cached)
from .metrics import detection_scores


def training_set(result: AttackResult) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, true poison flags)`` the model of ``result`` was trained on."""
    if result.poisoned is None:
        y = result.splits.y_train
        return result.splits.x_train, y, torch.zeros(len(y), dtype=torch.bool)
    return result.poisoned.x, result.poisoned.y, result.poisoned.is_poison


def detect_and_score(result: AttackResult, **options) -> tuple[Detection, dict]:
    """Activation clustering (:func:`~backdoor_utils.detection.detect_poison`) on the training set
    of ``result``, then precision / recall / F1 against the true flags and the flagged share."""
    x, y, truth = training_set(result)
    found = detect_poison(result.model, x, y, **options)
    return found, {**detection_scores(truth, found.flags), "flagged_fraction": float(found.flags.float().mean())}


def detection_over_runs(exp: Experiment, runs, **options) -> pd.DataFrame:
    """The detector on the attack ``exp`` for every ``(seed, target_label)`` in ``runs`` (each
    its own poisoned training set and model, cached): one row of scores per run. ``options`` go
    to :func:`~backdoor_utils.detection.detect_poison` (with ``device`` also used for training)."""
    rows = []
    for seed, target in runs:
        result = run_attack(replace(exp, seed=seed, target_label=target), options.get("device", "auto"))
        _, scores = detect_and_score(result, **{**options, "seed": seed})
        rows.append({"seed": seed, "target_label": target, "asr": result.asr, **scores})
    return pd.DataFrame(rows)


def cleanse_over_runs(exp: Experiment, runs, x_clean: torch.Tensor, anomaly_threshold: float = 2.0,
                      device: str = "auto", **nc_options) -> pd.DataFrame:
    """Neural Cleanse (:func:`~backdoor_utils.experiments.reversed_triggers`, cached) on the attack
    ``exp`` for every ``(seed, target_label)`` in ``runs``, each its own model, with the same clean
    images: one row per run - the flagged classes, the true target's anomaly index and the largest
    index among the other classes. ``nc_options`` go to Neural Cleanse."""
    rows = []
    for seed, target in runs:
        result = run_attack(replace(exp, seed=seed, target_label=target), device)
        report = cleanse_report(reversed_triggers(result, x_clean, **nc_options), anomaly_threshold)
        others = np.delete(report.anomaly_index, target)
        rows.append({"seed": seed, "target_label": target, "asr": result.asr,
                     "flagged": ", ".join(map(str, report.flagged)) or "none",
                     "target_flagged": target in report.flagged,
                     "target_anomaly_index": float(report.anomaly_index[target]),
                     "max_other_anomaly_index": float(np.nanmax(others)) if np.isfinite(others).any() else np.nan,
                     "unreached": len(report.unreached)})
    return pd.DataFrame(rows)


def retrain_relabelled(result: AttackResult, labels: torch.Tensor, device: str = "auto"):
    """Retrain from scratch, with ``result``'s recipe, on its training images under ``labels``
    (e.g. :meth:`~backdoor_utils.detection.Reclassification.relabelled`): Chen et al.'s repair that
    keeps the flagged images but gives them their source class. Cached like every model."""
    x, _, _ = training_set(result)
    return train_on_data_cached(x, labels, result.experiment.train_config(), device, desc="relabelled",
                                sources=CORE_SOURCES + ("evaluation.py",))


def mean_and_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
