"""Figures the chapters share (matplotlib); each returns its Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import ConfusionMatrixDisplay


def show_images(images, titles=None, ncols: int = 8, suptitle: str | None = None, cmap="gray", vmin=0.0, vmax=1.0, size: float = 1.4):
    """A grid of [N,1,28,28] or [N,28,28] images."""
    images = [torch.as_tensor(im).squeeze().cpu().numpy() for im in images]
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, im in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(im, cmap=cmap, vmin=vmin, vmax=vmax)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def clean_vs_triggered(clean, triggered, n: int = 6, title: str = "clean (top) vs triggered (bottom)"):
    """Two rows: clean images and the same images with the trigger."""
    return show_images(list(clean[:n]) + list(triggered[:n]), ncols=n, suptitle=title)


def rate_curves(x, curves: dict, xlabel: str, title: str, logx: bool = False, ylabel: str = "rate (fraction)", markers=True, ax=None):
    """Line plot of several named curves (values in [0,1]) against ``x``."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
    else:
        fig = ax.figure
    for name, ys in curves.items():
        ax.plot(x, ys, marker="o" if markers else None, ms=4, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def confusion(y_true, y_pred, title: str):
    """Confusion matrix (rows: true label, columns: prediction)."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ConfusionMatrixDisplay.from_predictions(np.asarray(y_true), np.asarray(y_pred), labels=list(range(10)), ax=ax, colorbar=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def cluster_projections(clusterings, is_poison=None, labels=(0,), title: str = ""):
    """2-D views (first two reduced components) of the chosen labels' activations, coloured by
    cluster; true poisons circled when ``is_poison`` is given (for the reader, not the detector)."""
    chosen = [c for c in clusterings if c.label in labels]
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 3.8), squeeze=False)
    for ax, c in zip(axes.flat, chosen):
        ax.scatter(c.projected[:, 0], c.projected[:, 1], c=c.assignments, cmap="tab10", s=4, alpha=0.6)
        if is_poison is not None:
            poison = np.asarray(is_poison)[c.index]
            ax.scatter(c.projected[poison, 0], c.projected[poison, 1], facecolors="none", edgecolors="red", s=18, lw=0.6, label="true poison")
            if poison.any():
                ax.legend(loc="best", fontsize=8)
        ax.set_title(f"label {c.label}: k={c.k}, sizes {np.round(c.relative_sizes, 2).tolist()}", fontsize=9)
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
