"""Activation clustering (Chen et al. 2018): find poisoned training samples from activations.

Per training label: penultimate activations -> FastICA (or PCA) to ~10 dims -> k-means. The
paper's recipe uses k = 2 and flags the smaller cluster when it is small (relative size). This
module also offers the principled variants the book needs: k chosen per class by silhouette, and
the paper's *exclusionary reclassification*, which retrains a model without the suspicious
clusters and asks it what those samples are. No function here ever sees the true poison flags.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA
from sklearn.metrics import silhouette_score

from .training import TrainConfig, predict


@dataclass
class ClassClustering:
    """The clustering of one training label's activations."""

    label: int
    index: np.ndarray  # indices into the training set
    projected: np.ndarray  # [n, n_components]
    assignments: np.ndarray  # cluster id per sample
    k: int
    silhouette: float
    silhouettes: dict = field(default_factory=dict)  # k -> silhouette, when k was chosen

    @property
    def relative_sizes(self) -> np.ndarray:
        return np.bincount(self.assignments, minlength=self.k) / len(self.assignments)


def reduce_activations(acts: np.ndarray, n_components: int = 10, reduction: str = "ica", seed: int = 0) -> np.ndarray:
    """Project activations to ``n_components`` dims with FastICA (the paper) or PCA."""
    if reduction == "pca":
        return PCA(n_components, random_state=seed).fit_transform(acts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastICA convergence chatter on near-degenerate units
        return FastICA(n_components, random_state=seed, whiten="unit-variance", max_iter=500).fit_transform(acts)


def _silhouette(points: np.ndarray, assign: np.ndarray, seed: int) -> float:
    if len(np.unique(assign)) < 2:
        return -1.0
    return float(silhouette_score(points, assign, sample_size=min(len(points), 3000), random_state=seed))


def cluster_activations(
    acts: torch.Tensor, labels: torch.Tensor, k: int | str = 2, max_clusters: int = 5,
    n_components: int = 10, reduction: str = "ica", seed: int = 0,
) -> list[ClassClustering]:
    """Cluster each label's activations; ``k="silhouette"`` picks k in 2..max_clusters per label."""
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
        result.append(ClassClustering(
            label, index, proj, fits[best][0], best, fits[best][1],
            {kk: s for kk, (_, s) in fits.items()} if k == "silhouette" else {},
        ))
    return result


def flag_small_clusters(clusterings: list[ClassClustering], n_samples: int, size_threshold: float = 0.35) -> torch.Tensor:
    """The paper's relative-size rule: flag every cluster holding <= ``size_threshold`` of its label."""
    flags = np.zeros(n_samples, dtype=bool)
    for c in clusterings:
        for cluster, size in enumerate(c.relative_sizes):
            if size <= size_threshold:
                flags[c.index[c.assignments == cluster]] = True
    return torch.from_numpy(flags)


@dataclass
class Reclassification:
    """Exclusionary reclassification of the candidate clusters."""

    flags: torch.Tensor  # bool [N]: samples judged poisoned
    table: list  # one dict per candidate cluster


def exclusionary_reclassification(
    clusterings: list[ClassClustering], x: torch.Tensor, y: torch.Tensor, size_threshold: float = 0.35,
    agreement_threshold: float = 0.5, epochs: int = 2, seed: int = 0, device: str = "auto",
) -> Reclassification:
    """Chen et al.'s exclusionary reclassification, done once for all candidates.

    Candidates are the clusters holding <= ``size_threshold`` of their label (or the smallest one
    if none is that small). A model trained *without* all candidates classifies each candidate's
    images: a legitimate cluster is still recognised as its label; a poisoned one is called
    something else (its source class). A candidate whose agreement with its label is below
    ``agreement_threshold`` is flagged.
    """
    candidates = []
    for c in clusterings:
        sizes = c.relative_sizes
        small = [i for i, s in enumerate(sizes) if s <= size_threshold] or [int(np.argmin(sizes))]
        candidates += [(c.label, i, c.index[c.assignments == i]) for i in small]
    excluded = np.zeros(len(y), dtype=bool)
    for _, _, idx in candidates:
        excluded[idx] = True
    keep = torch.from_numpy(~excluded)
    from .experiments import CORE_SOURCES, train_on_data_cached  # the reclassifier is cached like every model

    model = train_on_data_cached(x[keep], y[keep], TrainConfig(epochs=epochs, seed=seed), device, desc="reclassifier",
                                 sources=CORE_SOURCES + ("detection.py",))
    flags = np.zeros(len(y), dtype=bool)
    table = []
    for label, cluster, idx in candidates:
        preds = predict(model, x[torch.from_numpy(idx)]).numpy()
        agreement = float((preds == label).mean())
        counts = np.bincount(preds, minlength=10)
        counts[label] = -1
        poisoned = agreement < agreement_threshold
        if poisoned:
            flags[idx] = True
        table.append({"label": label, "cluster": cluster, "size": len(idx), "agreement": agreement,
                      "top_other_class": int(counts.argmax()), "flagged": poisoned})
    return Reclassification(torch.from_numpy(flags), table)


@dataclass
class Detection:
    """Result of :func:`detect_poison`."""

    clusterings: list
    reclassification: Reclassification

    @property
    def flags(self) -> torch.Tensor:
        return self.reclassification.flags


def detect_poison(model, x: torch.Tensor, y: torch.Tensor, max_clusters: int = 5, n_components: int = 10,
                  reduction: str = "ica", seed: int = 0, reclassify_epochs: int = 2, device: str = "auto") -> Detection:
    """Activation clustering with k chosen by silhouette, decided by exclusionary reclassification.

    Uses only the model, the training images and their (possibly poisoned) labels.
    """
    from .training import activations

    clusterings = cluster_activations(activations(model, x), y, k="silhouette", max_clusters=max_clusters,
                                      n_components=n_components, reduction=reduction, seed=seed)
    return Detection(clusterings, exclusionary_reclassification(clusterings, x, y, epochs=reclassify_epochs,
                                                                seed=seed, device=device))
