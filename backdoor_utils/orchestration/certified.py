"""The certified defense in the book's runs: a DPA ensemble trained on a (possibly
poisoned) training set and cached like every model, its certificates on test images,
and the pixel attack against it (:mod:`backdoor_utils.defenses.dpa`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import pandas as pd
import torch

from ..core.metrics import non_target_mask
from ..defenses.dpa import (
    DPA,
    Ensemble,
    certificates,
    certified_accuracy,
    median_certified,
    nominal_size,
    vote_counts,
)
from .experiments import AttackResult, tensor_digest, train_cached


def dpa_ensemble(
    x: torch.Tensor, y: torch.Tensor, dpa: DPA, seed: int = 0, device: str = "auto"
) -> tuple[Ensemble, torch.Tensor, float]:
    """``dpa``'s ensemble trained on ``x``, ``y`` (cached under a hash of the data, the
    parameters, the seed and DPA's code): the model, which base models had data, and
    the seconds training took when it was computed."""
    spec = {
        "kind": "dpa",
        "data_hash": tensor_digest(x, y),
        **asdict(dpa),
        "seed": seed,
    }

    def train():
        start = time.perf_counter()
        model, active = dpa.train(x, y, seed)
        seconds = torch.tensor(time.perf_counter() - start)
        return {"model": model.state_dict(), "active": active, "seconds": seconds}

    payload, _ = train_cached(spec, train, kind="dpa", code=(DPA,), device=device)
    model = Ensemble(dpa.k, dpa.hidden, seed)
    model.load_state_dict(payload["model"])
    return model.eval(), payload["active"], float(payload["seconds"])


#: The paper's MNIST rows (Levine and Feizi 2021, Table 1; a Network-in-Network base
#: model): partitions k -> (clean accuracy, median certified robustness).
PAPER_MNIST = {1200: (0.9581, 448), 3000: (0.9335, 509)}


def partition_counts(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    dpa: DPA,
    ks,
    seed: int = 0,
    device: str = "auto",
) -> pd.DataFrame:
    """``dpa`` at each partition count of ``ks`` (its other settings kept, a
    partition's nominal size following k), each ensemble cached: one row per k - the
    images a partition, the clean accuracy, the median certified robustness, the seconds
    training took, and the paper's MNIST row where it has one at that k (NaN where
    not)."""
    rows = []
    for k in ks:
        at_k = replace(dpa, k=k, nominal_size=nominal_size(len(y), k))
        model, active, seconds = dpa_ensemble(x, y, at_k, seed, device)
        got = certify(model, active, x_test, y_test, [0])
        paper = PAPER_MNIST.get(k, (float("nan"), float("nan")))
        rows.append(
            {
                "k": k,
                "images a partition": at_k.nominal_size,
                "clean accuracy": got["clean_acc"],
                "median certified": got["median"],
                "seconds to train": seconds,
                "paper: clean accuracy": paper[0],
                "paper: median certified": paper[1],
            }
        )
    return pd.DataFrame(rows)


def partition_counts_text(table: pd.DataFrame) -> str:
    """Each row of :func:`partition_counts` as a clause for the prose, with the
    paper's row beside it where there is one."""
    clauses = []
    for _, row in table.iterrows():
        text = (
            f"at k = {int(row.k):,} (about {int(row['images a partition'])} images a"
            f" partition) clean accuracy {row['clean accuracy']:.4f} and median"
            f" certified robustness {int(row['median certified'])}"
        )
        if row["paper: clean accuracy"] == row["paper: clean accuracy"]:  # not NaN
            text += (
                f" (the paper: {row['paper: clean accuracy']:.4f} and"
                f" {int(row['paper: median certified'])})"
            )
        clauses.append(text)
    return "; ".join(clauses) or "no other partition count was run"


def certify(
    model: Ensemble, active: torch.Tensor, x: torch.Tensor, y: torch.Tensor, budgets
) -> dict:
    """The ensemble on ``x``: its accuracy, the median certified robustness, and the
    certified accuracy at each of ``budgets`` (a table)."""
    predicted, radius = certificates(vote_counts(model, active, x))
    return {
        "clean_acc": float((predicted == y).float().mean()),
        "median": median_certified(predicted, radius, y),
        "curve": pd.DataFrame(
            {
                "poisons (insertions or removals)": list(budgets),
                "certified accuracy": certified_accuracy(predicted, radius, y, budgets),
            }
        ),
        "radius": radius,
        "predicted": predicted,
    }


def attack_on_dpa(result: AttackResult, dpa: DPA, seed: int = 0) -> dict:
    """``dpa`` trained on ``result``'s poisoned set: its clean accuracy, its ASR on the
    triggered non-target test images, and the share of those images certified against
    as many changes as the attack made - each poison replaced a clean image, one removal
    and one insertion (``2 x`` poisons) - and against the number of poisons alone."""
    poisoned, splits = result.poisoned, result.splits
    target = result.experiment.target_label
    model, active, seconds = dpa_ensemble(poisoned.x, poisoned.y, dpa, seed)
    predicted, _ = certificates(vote_counts(model, active, splits.x_test))
    keep = non_target_mask(splits.y_test, target)
    triggered = result.trigger.apply(splits.x_test[keep])
    on_trigger, radius = certificates(vote_counts(model, active, triggered))
    n = poisoned.n_poison
    return {
        "clean_acc": float((predicted == splits.y_test).float().mean()),
        "asr": float((on_trigger == target).float().mean()),
        "n_poison": n,
        "certified_changes": float((radius >= 2 * n).float().mean()),
        "certified_poisons": float((radius >= n).float().mean()),
        "seconds": seconds,
    }
