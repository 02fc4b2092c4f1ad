"""Detectors and defenses run against attack results, scored for the reader.

The orchestration above the methods: it knows the true poison flags and the test trigger, and
uses them only to *score* what a detector or defense decided without them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .defenses import NeuralCleanse
from .detectors import Detector
from .detectors.activation_clustering import Detection
from .experiments import CORE_SOURCES, AttackResult, Experiment, cleanse, run_attack, train_on_data_cached
from .metrics import detection_scores


def training_set(result: AttackResult) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, true poison flags)`` the model of ``result`` was trained on."""
    if result.poisoned is None:
        y = result.splits.y_train
        return result.splits.x_train, y, torch.zeros(len(y), dtype=torch.bool)
    return result.poisoned.x, result.poisoned.y, result.poisoned.is_poison


def _cached_reclassifier(x, y, config, device):
    """Exclusionary reclassification's model, cached like every model (keyed on its module too)."""
    return train_on_data_cached(x, y, config, device, desc="reclassifier", sources=CORE_SOURCES + ("detectors/activation_clustering.py",))


def detect_and_score(result: AttackResult, detector: Detector, seed: int = 0, device: str = "auto") -> tuple[Detection, dict]:
    """``detector`` (e.g. ``detectors.get("activation_clustering")``) on the training set of
    ``result`` (any model it trains is cached), then precision / recall / F1 against the true
    flags and the flagged share."""
    x, y, truth = training_set(result)
    found = detector.detect(result.model, x, y, seed=seed, device=device, train=_cached_reclassifier)
    return found, {**detection_scores(truth, found.flags), "flagged_fraction": float(found.flags.float().mean())}


def where_the_poisons_went(found: Detection, truth: torch.Tensor) -> dict:
    """For the reader, from the true flags: the candidate cluster holding the most poisons - how
    many it holds, its size, the reclassifier's l and p for it and its verdict."""
    truth = truth.numpy()
    held, row = 0, None
    for candidate, idx in zip(found.reclassification.table, found.reclassification.members):
        if truth[idx].sum() > held:
            held, row = int(truth[idx].sum()), candidate
    return {"n_poison_total": int(truth.sum()), "poisons_in_best_candidate": held,
            "best_candidate_size": row["size"] if row else 0, "best_candidate_l": row["l"] if row else 0,
            "best_candidate_p": row["p"] if row else 0, "best_candidate_flagged": bool(row and row["flagged"])}


def failure_reason(run: dict, ratio_threshold: float = 1.0) -> str:
    """Why a detection run missed, in one clause, from its :func:`where_the_poisons_went` and
    scores ("" when it found at least 90% F1)."""
    if run["f1"] >= 0.9:
        return ""
    n, held = run["n_poison_total"], run["poisons_in_best_candidate"]
    if held < n / 2:
        reason = (f"no candidate cluster holds even half of the {n} poisons (the best holds {held}): "
                  "the chosen k mixes them with genuine digits")
    elif not run["best_candidate_flagged"]:
        l, p, size = run["best_candidate_l"], run["best_candidate_p"], run["best_candidate_size"]
        if held >= size / 2:  # the poisons' own cluster
            reason = (f"{held} of the {n} poisons form a cluster of {size:,}, but the reclassifier - trained "
                      f"with the other {n - held} poisons still in - calls {l} of them the target")
        else:
            reason = (f"{held} of the {n} poisons fall in a cluster of {size:,} images that are mostly genuine "
                      f"digits, and the reclassifier calls {l} of them the target")
        reason += (f" against {p} for the most common other class, so l / p = {l / max(p, 1):.2f} "
                   f"> T = {ratio_threshold:g} keeps the cluster")
    else:
        reason = f"the poisons' cluster is caught, but it holds only {held} of the {n} poisons"
    false_alarms = run["n_flagged"] - round(run["recall"] * n)
    if false_alarms > 0:
        reason += f"; {false_alarms:,} genuine images are flagged"
    return reason


def detection_over_runs(exp: Experiment, runs, detector: Detector, device: str = "auto") -> pd.DataFrame:
    """``detector`` on the attack ``exp`` for every ``(seed, target_label)`` in ``runs`` (each its
    own poisoned training set and model, cached): one row of scores per run, with where the poisons
    went and, for a run below F1 0.9, why it missed (:func:`failure_reason`)."""
    rows = []
    for seed, target in runs:
        result = run_attack(exp.with_(seed=seed, target_label=target), device)
        found, scores = detect_and_score(result, detector, seed=seed, device=device)
        row = {"seed": seed, "target_label": target, "asr": result.asr, **scores,
               **where_the_poisons_went(found, training_set(result)[2])}
        rows.append({**row, "why_missed": failure_reason(row, getattr(detector, "ratio_threshold", 1.0))})
    return pd.DataFrame(rows)


def cleanse_over_runs(exp: Experiment, runs, x_clean: torch.Tensor, defense: NeuralCleanse,
                      device: str = "auto") -> pd.DataFrame:
    """Neural Cleanse (``defense``, its reversed triggers cached) on the attack ``exp`` for every
    ``(seed, target_label)`` in ``runs``, each its own model, with the same clean images: one row
    per run - the flagged classes, whether the target is one of them, the target's anomaly index,
    the largest index among the other classes and how many classes never reached the target rate."""
    rows = []
    for seed, target in runs:
        result = run_attack(exp.with_(seed=seed, target_label=target), device)
        report = cleanse(result, defense, x_clean)
        others = np.delete(report.anomaly_index, target)
        rows.append({"seed": seed, "target": target, "asr": result.asr,
                     "flagged": ", ".join(map(str, report.flagged)) or "none",
                     "target_hit": target in report.flagged,
                     "target_index": float(report.anomaly_index[target]),
                     "max_other_index": float(np.nanmax(others)) if np.isfinite(others).any() else np.nan,
                     "unreached": len(report.unreached)})
    return pd.DataFrame(rows)


def retrain_relabelled(result: AttackResult, labels: torch.Tensor, device: str = "auto"):
    """Retrain from scratch, with ``result``'s recipe, on its training images under ``labels``
    (e.g. :meth:`~backdoor_utils.detectors.activation_clustering.Reclassification.relabelled`): Chen et al.'s repair that
    keeps the flagged images but gives them their source class. Cached like every model."""
    x, _, _ = training_set(result)
    return train_on_data_cached(x, labels, result.experiment.train_config(), device, desc="relabelled",
                                sources=CORE_SOURCES + ("evaluation.py",))


def mean_and_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
