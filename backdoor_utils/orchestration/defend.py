"""Detectors and defenses run against one attack result and scored: what the
activation-clustering detections and the attack x defense matrix cache, entry by entry.

It knows the true poison flags and the test trigger, and uses them only to *score* what
a detector or defense decided without them. Every cached detection and matrix cell is
keyed on this module's model's key and on the code that computes it (see
:mod:`backdoor_utils.codekey`), so the reader-side summaries in
:mod:`backdoor_utils.evaluation` can change without recomputing one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass

import numpy as np
import torch

from sklearn.metrics import roc_auc_score

from ..defenses import DefenderData, Measure
from ..detectors import Detector
from ..detectors.activation_clustering import (
    ActivationClustering,
    ClassClustering,
    Detection,
    Reclassification,
)
from .experiments import (
    AttackResult,
    cleanse,
    retrain_without,
    tensor_digest,
    train_cached,
    train_config,
    train_on_data_cached,
)
from ..core.metrics import defense_effectiveness_rating, detection_scores


def training_set(
    result: AttackResult,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, true poison flags)`` the model of ``result`` was trained
    on."""
    if result.poisoned is None:
        y = result.splits.y_train
        return result.splits.x_train, y, torch.zeros(len(y), dtype=torch.bool)
    return result.poisoned.x, result.poisoned.y, result.poisoned.is_poison


def _cached_reclassifier(x, y, config, device):
    """Exclusionary reclassification's model, cached like every model (keyed on its
    data)."""
    return train_on_data_cached(x, y, config, device, desc="reclassifier")


def detect_and_score(
    result: AttackResult,
    detector: Detector,
    seed: int = 0,
    device: str = "auto",
    defender: DefenderData | None = None,
) -> tuple[Detection, dict]:
    """``detector`` (e.g. ``detectors.get("activation_clustering")``) on the training
    set of ``result`` (any model it trains is cached), then precision / recall / F1
    against the true flags and the flagged share. A detector that declares
    ``needs_clean`` also gets the defender's clean tuning images and labels."""
    x, y, truth = training_set(result)
    extra = {}
    if getattr(detector, "needs_clean", False):
        if defender is None:
            raise ValueError(f"{detector.name}: needs the defender's clean images")
        extra["clean"] = (defender.x_tune, defender.y_tune)
    found = detector.detect(
        result.model,
        x,
        y,
        seed=seed,
        device=device,
        train=_cached_reclassifier,
        **extra,
    )
    return found, {
        **detection_scores(truth, found.flags),
        "flagged_fraction": float(found.flags.float().mean()),
    }


def _plain(value):
    """A numpy scalar as the Python number it holds (cache entries load with
    ``weights_only``)."""
    return value.item() if isinstance(value, np.generic) else value


def pack_detection(found: Detection, scores: dict) -> dict:
    """An activation-clustering :class:`Detection` and its scores as tensors and plain
    values."""
    reclassification = found.reclassification
    return {
        "clusterings": [
            {
                "label": int(c.label),
                "index": torch.from_numpy(c.index),
                "projected": torch.from_numpy(c.projected),
                "assignments": torch.from_numpy(c.assignments),
                "k": int(c.k),
                "silhouette": float(c.silhouette),
                "silhouettes": {int(k): float(v) for k, v in c.silhouettes.items()},
            }
            for c in found.clusterings
        ],
        "flags": reclassification.flags,
        "source_classes": reclassification.source_classes,
        "table": [
            {key: _plain(v) for key, v in row.items()} for row in reclassification.table
        ],
        "members": [torch.from_numpy(np.asarray(m)) for m in reclassification.members],
        "scores": {key: _plain(v) for key, v in scores.items()},
    }


def unpack_detection(payload: dict) -> tuple[Detection, dict]:
    """The inverse of :func:`pack_detection`."""
    clusterings = [
        ClassClustering(
            c["label"],
            c["index"].numpy(),
            c["projected"].numpy(),
            c["assignments"].numpy(),
            c["k"],
            c["silhouette"],
            c["silhouettes"],
        )
        for c in payload["clusterings"]
    ]
    reclassification = Reclassification(
        payload["flags"],
        payload["table"],
        payload["source_classes"],
        [m.numpy() for m in payload["members"]],
    )
    return Detection(clusterings, reclassification), payload["scores"]


def detect_cached(
    result: AttackResult, detector: Detector, seed: int = 0, device: str = "auto"
) -> tuple[Detection, dict]:
    """:func:`detect_and_score`, cached for activation clustering under the attack's
    full spec, the model's key, the detector's parameters, the seed and the code that
    runs and packs the detection: a chapter that rereads the same detection, or
    re-executes, recomputes nothing. Other detectors are run as they are."""
    if not isinstance(detector, ActivationClustering):
        return detect_and_score(result, detector, seed=seed, device=device)
    spec = {
        "kind": "detection",
        **result.experiment.spec(),
        "model": result.key,
        "detector": detector.name,
        "detector_params": asdict(detector),
        "detection_seed": seed,
    }
    payload, _ = train_cached(
        spec,
        lambda: pack_detection(
            *detect_and_score(result, detector, seed=seed, device=device)
        ),
        kind="detections",
        code=(detect_and_score, pack_detection, type(detector)),
        device=device,
    )
    return unpack_detection(payload)


@dataclass
class Screening:
    """An input filter (STRIP, SCALE-UP) on one attack: its statistic on clean and on
    triggered test inputs (STRIP: entropy in bits; SCALE-UP: scaled prediction
    consistency), the threshold the defender set on its own clean images, and the rates
    the reader scores."""

    clean_score: torch.Tensor
    triggered_score: torch.Tensor
    threshold: float
    frr: float  # clean test inputs rejected
    far: float  # triggered test inputs accepted
    auroc: float


def screen_inputs(
    result: AttackResult,
    method,
    defender: DefenderData,
    n_inputs: int = 1000,
    seed: int = 0,
) -> Screening:
    """An input filter against ``result``: the threshold from the defender's selection
    images (any overlays from its tuning images), then its statistic on the first
    ``n_inputs`` clean test images and as many triggered non-target test images,
    scored - an input is flagged on the side of the threshold that
    ``method.suspicious_below`` says."""
    splits, target = result.splits, result.experiment.target_label
    threshold = method.threshold(result.model, defender.x_select, defender.x_tune, seed)
    clean = splits.x_test[:n_inputs]
    keep = splits.y_test != target
    triggered = result.trigger.apply(splits.x_test[keep][:n_inputs])
    s_clean = method.statistic(result.model, clean, defender.x_tune, seed + 1)
    s_trig = method.statistic(result.model, triggered, defender.x_tune, seed + 2)

    def flagged(score: torch.Tensor) -> torch.Tensor:
        return score < threshold if method.suspicious_below else score >= threshold

    truth = np.r_[np.zeros(len(s_clean)), np.ones(len(s_trig))]
    suspicion = np.r_[s_clean.numpy(), s_trig.numpy()]
    if method.suspicious_below:
        suspicion = -suspicion
    return Screening(
        s_clean,
        s_trig,
        threshold,
        float(flagged(s_clean).float().mean()),
        float((~flagged(s_trig)).float().mean()),
        float(roc_auc_score(truth, suspicion)),
    )


def screen_inputs_cached(
    result: AttackResult,
    method,
    defender: DefenderData,
    n_inputs: int = 1000,
    seed: int = 0,
    device: str = "auto",
) -> Screening:
    """:func:`screen_inputs`, cached under the attack's full spec, the filter's
    parameters, a hash of the defender's images, ``n_inputs``, the seed, the model's key
    and the screening's code: a chapter that re-executes screens nothing again."""
    spec = {
        "kind": "screening",
        **result.experiment.spec(),
        "model": result.key,
        "detector": method.name,
        "detector_params": asdict(method),
        "defender_images": tensor_digest(defender.x_select, defender.x_tune),
        "n_inputs": n_inputs,
        "screening_seed": seed,
    }
    payload, _ = train_cached(
        spec,
        lambda: asdict(screen_inputs(result, method, defender, n_inputs, seed)),
        kind="screenings",
        code=(screen_inputs, type(method)),
        device=device,
    )
    return Screening(**payload)


def price(result: AttackResult, after: dict) -> dict:
    """What a defense left and what it cost, from the measures of the model after it
    (``after``: its test ``clean_acc`` and ``asr``): ASR and CA after, the CA cost in
    percentage points and the defense effectiveness rating (DER)."""
    return {
        "asr_after": after["asr"],
        "clean_acc_after": after["clean_acc"],
        "ca_cost_pp": 100 * (result.clean_acc - after["clean_acc"]),
        "der": defense_effectiveness_rating(
            result.asr, after["asr"], result.clean_acc, after["clean_acc"]
        ),
    }


def detection_cell(
    result: AttackResult, method, defender, seed, device, strip_inputs, priced
) -> dict:
    """A detector's cell: its column's score against the true flags as ``value``,
    precision, recall and F1 beside it and, when ``priced``, the price of the model
    retrained without what it flagged - the repair the detectors' papers propose."""
    found, scores = detect_and_score(result, method, seed, device, defender)
    cell = {
        "value": scores[method.column.score],
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
    }
    if not priced:
        return cell
    return {
        **cell,
        **_price_of(result, defender, retrain_without(result, found.flags, device)),
    }


def screening_cell(
    result: AttackResult, method, defender, seed, device, strip_inputs, priced
) -> dict:
    """An input filter's cell: the false-acceptance rate of triggered inputs as
    ``value``, with the AUROC and the clean false-rejection rate (its price: the model
    is not changed)."""
    screening = screen_inputs(result, method, defender, strip_inputs, seed)
    return {"value": screening.far, "auroc": screening.auroc, "frr": screening.frr}


def repair_cell(
    result: AttackResult, method, defender, seed, device, strip_inputs, priced
) -> dict:
    """A repair's cell: the ASR after the repair as ``value``, with its price."""
    model = method.repair(result.model, defender, seed, device).model
    after = _price_of(result, defender, model)
    return {"value": after["asr_after"], **after}


def reversal_repair_cell(
    result: AttackResult, method, defender, seed, device, strip_inputs, priced
) -> dict:
    """Neural Cleanse's cell: the labels its (cached) reversed triggers flag unlearned,
    the ASR after as ``value``, with its price."""
    report = cleanse(result, method, defender.x_tune)
    model = method.unlearn_flagged(result.model, report, defender, seed, device)
    after = _price_of(result, defender, model)
    return {"value": after["asr_after"], **after}


def training_cell(
    result: AttackResult, method, defender, seed, device, strip_inputs, priced
) -> dict:
    """A training-time defense's cell: the ASR of the model it trains on the poisoned
    training set (with the attack's recipe and seed) as ``value``, its price against
    the model trained without it and, when it sets images apart, their precision and
    recall against the true poisons."""
    x, y, truth = training_set(result)
    repair = method.train_defended(x, y, train_config(result.experiment), device)
    after = _price_of(result, defender, repair.model)
    cell = {"value": after["asr_after"], **after}
    isolated = repair.details.get("isolated")
    if isolated is not None:
        scores = detection_scores(truth, isolated)
        cell.update(
            isolated_precision=scores["precision"], isolated_recall=scores["recall"]
        )
    return cell


#: The function that computes a cell of each kind (:data:`~..core.column.CELL_KINDS`).
CELLS = {
    "detection": detection_cell,
    "screening": screening_cell,
    "repair": repair_cell,
    "reversal_repair": reversal_repair_cell,
    "training": training_cell,
}


def _price_of(result: AttackResult, defender: DefenderData, model) -> dict:
    """:func:`price` of ``model``, measured on the test set (and the defender's
    selection images)."""
    target = result.experiment.target_label
    measure = Measure(defender, result.splits, result.trigger, target)
    return price(result, measure(model))


def cell_function(method):
    """The function that computes ``method``'s cells (by its column's kind)."""
    return CELLS[type(method).column.cell]


def cell_roots(method) -> tuple:
    """What a cell of ``method`` is keyed on besides its spec: the function of its kind
    and the method's class - so a change to one kind's function, or to one method,
    re-keys only its own cells."""
    return (cell_function(method), type(method))


def defense_cell(
    result: AttackResult,
    method,
    defender: DefenderData,
    seed: int = 0,
    device: str = "auto",
    strip_inputs: int = 1000,
    priced: bool = True,
) -> dict:
    """One cell of the matrix: ``method`` against ``result``, computed as its column
    says (:data:`CELLS`) - its main metric as ``value`` plus what the reader needs
    beside it and, for every method that changes the model, its price (:func:`price`;
    a detector's only when ``priced``)."""
    return cell_function(method)(
        result, method, defender, seed, device, strip_inputs, priced
    )


def defense_cell_cached(
    result: AttackResult,
    name: str,
    method,
    defender: DefenderData,
    n_tune: int,
    seed: int = 0,
    device: str = "auto",
    strip_inputs: int = 1000,
    priced: bool = True,
) -> dict:
    """:func:`defense_cell`, cached under the attack's full spec, the defense's name and
    parameters, the defender's data (its size and a hash of its images), the seed, the
    model's key and the cell's code: an interrupted matrix resumes where it stopped, and
    a rerun recomputes nothing.
    """
    params = asdict(method) if is_dataclass(method) else repr(method)
    spec = {
        "kind": "matrix_cell",
        **result.experiment.spec(),
        "model": result.key,
        "defense": name,
        "defense_params": params,
        "n_tune": n_tune,
        "defender_data": tensor_digest(*vars(defender).values()),
        "cell_seed": seed,
        "strip_inputs": strip_inputs,
        "priced": priced,
    }
    cell, _ = train_cached(
        spec,
        lambda: cell_function(method)(
            result, method, defender, seed, device, strip_inputs, priced
        ),
        kind="matrix_cells",
        code=cell_roots(method),
        device=device,
    )
    return cell
