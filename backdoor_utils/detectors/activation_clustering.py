"""Activation clustering (Chen et al. 2018): find poisoned training samples from
activations.

Per training label: penultimate activations -> FastICA (or PCA) to ~10 dims -> k-means.
The paper's recipe uses k = 2 and flags the smaller cluster when it is small (relative
size). This module also offers the principled variants the book needs: k chosen per
class by silhouette, and the paper's *exclusionary reclassification*, which retrains a
model without the suspicious clusters and asks it what those samples are. No function
here ever sees the true poison flags.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA
from sklearn.metrics import silhouette_score

from ..core.checks import choice, integer, open_unit, positive, silhouette
from ..core.training import TrainConfig, activations, predict, train_model
from ..core.column import Column
from .base import Detector, register


@dataclass
class ClassClustering:
    """The clustering of one training label's activations."""

    label: int
    index: np.ndarray  # indices into the training set
    projected: np.ndarray  # [n, n_components]
    assignments: np.ndarray  # cluster id per sample
    k: int
    silhouette: float
    silhouettes: dict = field(
        default_factory=dict
    )  # k -> silhouette, when k was chosen

    @property
    def relative_sizes(self) -> np.ndarray:
        return np.bincount(self.assignments, minlength=self.k) / len(self.assignments)


def reduce_activations(
    acts: np.ndarray, n_components: int = 10, reduction: str = "ica", seed: int = 0
) -> np.ndarray:
    """Project activations to ``n_components`` dims with FastICA (the paper) or PCA."""
    if reduction == "pca":
        return PCA(n_components, random_state=seed).fit_transform(acts)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # FastICA convergence chatter on near-degenerate units
        return FastICA(
            n_components, random_state=seed, whiten="unit-variance", max_iter=500
        ).fit_transform(acts)


def _silhouette(points: np.ndarray, assign: np.ndarray, seed: int) -> float:
    if len(np.unique(assign)) < 2:
        return -1.0
    return float(
        silhouette_score(
            points, assign, sample_size=min(len(points), 3000), random_state=seed
        )
    )


def cluster_activations(
    acts: torch.Tensor,
    labels: torch.Tensor,
    k: int | str = 2,
    max_clusters: int = 5,
    n_components: int = 10,
    reduction: str = "ica",
    seed: int = 0,
    min_silhouette: float | None = None,
) -> list[ClassClustering]:
    """Cluster each label's activations.

    ``k=2`` is the paper's recipe. ``k="silhouette"`` picks k in 2..``max_clusters`` per
    label by silhouette score, and with ``min_silhouette`` a label whose best split
    scores below it is left in one cluster (k = 1): "this label is clean".
    """
    acts_np, labels_np = acts.numpy(), labels.numpy()
    result = []
    for label in range(10):
        index = np.flatnonzero(labels_np == label)
        if len(index) < 4:
            continue
        proj = reduce_activations(acts_np[index], n_components, reduction, seed)
        candidates = range(2, max_clusters + 1) if k == "silhouette" else [int(k)]
        fits = {}
        for kk in candidates:
            assign = KMeans(kk, n_init=10, random_state=seed).fit_predict(proj)
            fits[kk] = (assign, _silhouette(proj, assign, seed))
        best = max(fits, key=lambda kk: fits[kk][1])
        assign, score = fits[best]
        if min_silhouette is not None and score < min_silhouette:
            best, assign = 1, np.zeros(len(index), dtype=int)
        result.append(
            ClassClustering(
                label,
                index,
                proj,
                assign,
                best,
                score,
                {kk: s for kk, (_, s) in fits.items()} if k == "silhouette" else {},
            )
        )
    return result


def candidate_clusters(
    clusterings: list[ClassClustering], size_threshold: float = 0.35
) -> list[tuple]:
    """``(label, cluster, indices)`` of every cluster holding <= ``size_threshold`` of
    its label.

    A label's largest cluster is never a candidate, so no label is ever suspected as a
    whole (and a label left in one cluster has no candidates at all).
    """
    out = []
    for c in clusterings:
        sizes = c.relative_sizes
        largest = int(np.argmax(sizes))
        out += [
            (c.label, i, c.index[c.assignments == i])
            for i, size in enumerate(sizes)
            if size <= size_threshold and i != largest
        ]
    return out


def flag_small_clusters(
    clusterings: list[ClassClustering], n_samples: int, size_threshold: float = 0.35
) -> torch.Tensor:
    """The paper's relative-size rule: flag every cluster holding <= ``size_threshold``
    of its label (never a label's largest cluster)."""
    flags = np.zeros(n_samples, dtype=bool)
    for _, _, idx in candidate_clusters(clusterings, size_threshold):
        flags[idx] = True
    return torch.from_numpy(flags)


@dataclass
class Reclassification:
    """Exclusionary reclassification of the candidate clusters."""

    flags: torch.Tensor  # bool [N]: samples judged poisoned
    table: list  # one dict per candidate cluster
    source_classes: torch.Tensor | None = (
        None  # int64 [N]: per flagged sample its source class, else -1
    )
    members: list = field(
        default_factory=list
    )  # per table row: the cluster's indices into the training set

    def relabelled(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` with every flagged sample relabelled to its source class (the paper's
        repair)."""
        if self.source_classes is None:
            return y.clone()
        return torch.where(self.flags, self.source_classes, y)


def reclassification_verdict(
    predictions: np.ndarray, label: int, ratio_threshold: float = 1.0
) -> dict:
    """Chen et al.'s decision for one excluded cluster: l = how many the reclassifier
    assigns to the cluster's label, p = the most assigned to any single other class C.
    The cluster is legitimate when l / p > T, else poisoned with source class C (p = 0
    means legitimate)."""
    counts = np.bincount(np.asarray(predictions), minlength=10)
    agree = int(counts[label])
    others = counts.copy()
    others[label] = -1
    source = int(others.argmax())
    p = int(counts[source])
    ratio = float("inf") if p == 0 else agree / p
    return {
        "l": agree,
        "p": p,
        "l_over_p": ratio,
        "source_class": source,
        "flagged": bool(p > 0 and ratio <= ratio_threshold),
    }


def source_classes(model, x: torch.Tensor, label: int) -> np.ndarray:
    """Each image's most likely class other than ``label`` under ``model`` (fp32): the
    source class of one image of a poisoned cluster."""
    penultimate = activations(model, x)  # batched, fp32
    with torch.no_grad():
        logits = (
            model.classifier(penultimate.to(model.classifier.weight.device))
            .float()
            .cpu()
        )
    logits[:, label] = -float("inf")
    return logits.argmax(1).numpy()


def exclusionary_reclassification(
    clusterings: list[ClassClustering],
    x: torch.Tensor,
    y: torch.Tensor,
    size_threshold: float = 0.35,
    ratio_threshold: float = 1.0,
    epochs: int = 2,
    seed: int = 0,
    device: str = "auto",
    train=None,
) -> Reclassification:
    """Chen et al.'s exclusionary reclassification, done once for all candidates.

    Candidates are the clusters of :func:`candidate_clusters`. A model trained from
    scratch *without* them classifies each candidate's images;
    :func:`reclassification_verdict` decides. A legitimate cluster is still recognised
    as its label; a poisoned one is called its source class, because nothing left in the
    training data teaches the trigger. Every image of a flagged cluster also gets its
    own source class (:func:`source_classes`), for the paper's repair by relabelling.

    Deviations from the paper: one reclassifier for all candidates instead of one per
    cluster (the same rule, ten times cheaper); a source class per image instead of the
    cluster's class C, since an all-to-one attack draws its poisons from nine classes.

    ``train(x, y, config, device)`` trains the reclassifier: :func:`train_model` by
    default; the orchestration passes a cached trainer.
    """
    train = train or (
        lambda xs, ys, config, dev: train_model(
            xs, ys, config, dev, desc="reclassifier"
        )
    )
    candidates = candidate_clusters(clusterings, size_threshold)
    flags = np.zeros(len(y), dtype=bool)
    sources = np.full(len(y), -1, dtype=np.int64)
    if not candidates:
        return Reclassification(torch.from_numpy(flags), [], torch.from_numpy(sources))
    excluded = np.zeros(len(y), dtype=bool)
    for _, _, idx in candidates:
        excluded[idx] = True
    keep = torch.from_numpy(~excluded)
    model = train(x[keep], y[keep], TrainConfig(epochs=epochs, seed=seed), device)
    table = []
    for label, cluster, idx in candidates:
        images = x[torch.from_numpy(idx)]
        verdict = reclassification_verdict(
            predict(model, images).numpy(), label, ratio_threshold
        )
        if verdict["flagged"]:
            flags[idx] = True
            sources[idx] = source_classes(model, images, label)
        table.append({"label": label, "cluster": cluster, "size": len(idx), **verdict})
    return Reclassification(
        torch.from_numpy(flags),
        table,
        torch.from_numpy(sources),
        [idx for _, _, idx in candidates],
    )


@dataclass
class Detection:
    """Result of :func:`detect_poison`."""

    clusterings: list
    reclassification: Reclassification

    @property
    def flags(self) -> torch.Tensor:
        return self.reclassification.flags


def detect_poison(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    max_clusters: int = 5,
    n_components: int = 10,
    reduction: str = "ica",
    seed: int = 0,
    reclassify_epochs: int = 2,
    device: str = "auto",
    min_silhouette: float = 0.15,
    size_threshold: float = 0.35,
    ratio_threshold: float = 1.0,
    train=None,
) -> Detection:
    """Activation clustering with k chosen by silhouette (a label may stay whole),
    decided by the paper's exclusionary reclassification. Uses only the model, the
    training images and their (possibly poisoned) labels."""
    clusterings = cluster_activations(
        activations(model, x),
        y,
        k="silhouette",
        max_clusters=max_clusters,
        n_components=n_components,
        reduction=reduction,
        seed=seed,
        min_silhouette=min_silhouette,
    )
    return Detection(
        clusterings,
        exclusionary_reclassification(
            clusterings,
            x,
            y,
            size_threshold=size_threshold,
            ratio_threshold=ratio_threshold,
            epochs=reclassify_epochs,
            seed=seed,
            device=device,
            train=train,
        ),
    )


@register
@dataclass(frozen=True)
class ActivationClustering(Detector):
    """The book's activation-clustering variant (:func:`detect_poison`) with its
    parameters."""

    name = "activation_clustering"
    column = Column("F1", True, 0.9, "activation\nclustering", "detection", "f1")
    rules = {
        "n_components": integer(2, 128),
        "reduction": choice(("ica", "pca")),
        "max_clusters": integer(2, 10),
        "min_silhouette": silhouette,
        "size_threshold": open_unit,
        "ratio_threshold": positive(100.0),
        "reclassify_epochs": integer(1, 50),
    }
    n_components: int = 10
    reduction: str = "pca"
    max_clusters: int = 5
    min_silhouette: float = 0.10
    size_threshold: float = 0.35
    ratio_threshold: float = 1.0
    reclassify_epochs: int = 2

    def detect(
        self,
        model,
        x: torch.Tensor,
        y: torch.Tensor,
        seed: int = 0,
        device: str = "auto",
        train=None,
    ) -> Detection:
        return detect_poison(
            model,
            x,
            y,
            max_clusters=self.max_clusters,
            n_components=self.n_components,
            reduction=self.reduction,
            seed=seed,
            reclassify_epochs=self.reclassify_epochs,
            device=device,
            min_silhouette=self.min_silhouette,
            size_threshold=self.size_threshold,
            ratio_threshold=self.ratio_threshold,
            train=train,
        )
