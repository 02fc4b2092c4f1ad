"""Figures the chapters share (matplotlib); each returns its Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay


def show_images(
    images,
    titles=None,
    ncols: int = 8,
    suptitle: str | None = None,
    cmap="gray",
    vmin=0.0,
    vmax=1.0,
    size: float = 1.4,
):
    """A grid of [N,1,28,28] or [N,28,28] images."""
    images = [torch.as_tensor(im).squeeze().cpu().numpy() for im in images]
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
        squeeze=False,
    )
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


def clean_vs_triggered(
    clean, triggered, n: int = 6, title: str = "clean (top) vs triggered (bottom)"
):
    """Two rows: clean images and the same images with the trigger."""
    return show_images(list(clean[:n]) + list(triggered[:n]), ncols=n, suptitle=title)


def rate_curves(
    x,
    curves: dict,
    xlabel: str,
    title: str,
    logx: bool = False,
    ylabel: str = "rate (fraction)",
    markers=True,
    ax=None,
    styles: dict | None = None,
):
    """Line plot of several named curves (values in [0,1]) against ``x``; ``styles``
    maps a curve's name to extra matplotlib line settings (e.g. a dashed reference drawn
    under the others).
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
    else:
        fig = ax.figure
    for name, ys in curves.items():
        ax.plot(
            x,
            ys,
            marker="o" if markers else None,
            ms=4,
            label=name,
            **(styles or {}).get(name, {}),
        )
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
    ConfusionMatrixDisplay.from_predictions(
        np.asarray(y_true),
        np.asarray(y_pred),
        labels=list(range(10)),
        ax=ax,
        colorbar=False,
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def cluster_projections(clusterings, is_poison=None, labels=(0,), title: str = ""):
    """2-D views (first two reduced components) of the chosen labels' activations,
    coloured by cluster; true poisons circled when ``is_poison`` is given (for the
    reader, not the detector).
    """
    chosen = [c for c in clusterings if c.label in labels]
    fig, axes = plt.subplots(
        1, len(chosen), figsize=(4.2 * len(chosen), 3.8), squeeze=False
    )
    for ax, c in zip(axes.flat, chosen):
        ax.scatter(
            c.projected[:, 0],
            c.projected[:, 1],
            c=c.assignments,
            cmap="tab10",
            s=4,
            alpha=0.6,
        )
        if is_poison is not None:
            poison = np.asarray(is_poison)[c.index]
            ax.scatter(
                c.projected[poison, 0],
                c.projected[poison, 1],
                facecolors="none",
                edgecolors="red",
                s=18,
                lw=0.6,
                label="true poison",
            )
            if poison.any():
                ax.legend(loc="best", fontsize=8)
        ax.set_title(
            f"label {c.label}: k={c.k}, sizes {np.round(c.relative_sizes, 2).tolist()}",
            fontsize=9,
        )
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_rows(rows: dict, n: int = 6, title: str | None = None, size: float = 1.3):
    """One row of ``n`` images per named entry of ``rows`` ({name: [N,1,28,28]}), the
    name on the left; a row whose name starts with "difference" is drawn on a diverging
    scale [-1, 1].
    """
    fig, axes = plt.subplots(
        len(rows),
        n,
        figsize=(size * n + 1.2, size * len(rows) + (0.4 if title else 0)),
        squeeze=False,
    )
    for r, (name, images) in enumerate(rows.items()):
        signed = name.startswith("difference")
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(
                torch.as_tensor(images[c]).squeeze().cpu().numpy(),
                cmap="RdBu_r" if signed else "gray",
                vmin=-1.0 if signed else 0.0,
                vmax=1.0,
            )
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def heatmap(
    values,
    row_labels,
    col_labels,
    xlabel: str,
    ylabel: str,
    title: str,
    fmt: str = "{:.2f}",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
    colorbar: str = "",
    texts=None,
):
    """A matrix of values with each cell's number written in it (NaN cells left blank);
    ``texts``, a matrix of strings of the same shape, replaces the numbers (e.g.
    "0.98 ± 0.01") and may say why a NaN cell is blank."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(
        figsize=(1.1 * len(col_labels) + 2.6, 0.6 * len(row_labels) + 1.8)
    )
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto"
    )
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    for (i, j), v in np.ndenumerate(values):
        if v == v:
            shade = (v - vmin) / (vmax - vmin) if vmax > vmin else 0.0
            ax.text(
                j,
                i,
                fmt.format(v) if texts is None else texts[i][j],
                ha="center",
                va="center",
                fontsize=8,
                color="black" if shade > 0.6 else "white",
            )
        elif (
            texts is not None and texts[i][j]
        ):  # a blank cell that says why it is blank
            ax.text(
                j, i, texts[i][j], ha="center", va="center", fontsize=8, color="dimgray"
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=colorbar)
    fig.tight_layout()
    return fig


def histogram(values, xlabel: str, title: str, bins: int = 30):
    """A histogram of ``values`` with its mean marked."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(values.mean(), color="black", linestyle="--", label="mean")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def rates_with_psnr(x, curves: dict, psnr, xlabel: str, title: str):
    """:func:`rate_curves` with the triggered images' median PSNR (dB) on a second axis.

    ``x`` spanning a decade or more is drawn on a log axis with its own values as ticks
    (a sweep 0.01 ... 0.2 would otherwise crowd its small settings together); one legend
    for all curves sits below the plot, where it cannot cover them."""
    x = np.asarray(x, dtype=float)
    logx = bool(x.min() > 0 and x.max() / x.min() >= 10)
    fig = rate_curves(x, curves, xlabel=xlabel, title=title, logx=logx)
    ax = fig.axes[0]
    twin = ax.twinx()
    twin.plot(
        x, psnr, color="gray", ls="--", marker="s", ms=4, label="median PSNR (dB)"
    )
    twin.set_ylabel("median PSNR (dB)")
    if logx:
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
    ax.get_legend().remove()
    lines = ax.get_lines() + twin.get_lines()
    fig.legend(
        lines,
        [line.get_label() for line in lines],
        loc="lower center",
        ncol=len(lines),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def entropy_histograms(clean, triggered, threshold: float, title: str):
    """STRIP's mean entropies of clean and triggered inputs, with the detection
    threshold."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    top = (
        float(max(np.max(np.asarray(clean)), np.max(np.asarray(triggered)), threshold))
        + 1e-6
    )
    bins = np.linspace(0, top, 50)
    ax.hist(np.asarray(clean), bins=bins, alpha=0.6, label="clean inputs")
    ax.hist(np.asarray(triggered), bins=bins, alpha=0.6, label="triggered inputs")
    ax.axvline(
        threshold,
        color="black",
        ls=":",
        lw=1,
        label="threshold (FRR on clean held-out)",
    )
    ax.set_xlabel("mean entropy of the blends' predictions (bits)")
    ax.set_ylabel("inputs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def score_histograms(scores, is_poison, title: str, cut: float | None = None):
    """Outlier scores of one label's images, genuine vs poisoned (the truth colours the
    plot, for the reader; the detector never sees it), with the removal cut."""
    scores, is_poison = np.asarray(scores), np.asarray(is_poison, dtype=bool)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    bins = np.linspace(0, float(scores.max()) + 1e-9, 60)
    ax.hist(scores[~is_poison], bins=bins, alpha=0.6, label="genuine images")
    ax.hist(scores[is_poison], bins=bins, alpha=0.6, label="poisoned images")
    if cut is not None:
        ax.axvline(cut, color="black", ls=":", lw=1, label="removal cut")
    ax.set_yscale("log")
    ax.set_xlabel("outlier score (squared projection on the top singular vector)")
    ax.set_ylabel("images (log scale)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def roc_curves(curves: dict, title: str):
    """ROC curves ({name: (truth, score)}, a higher score meaning "triggered"), AUROC in
    the legend."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for name, (truth, score) in curves.items():
        RocCurveDisplay.from_predictions(
            np.asarray(truth), np.asarray(score), name=name, ax=ax
        )
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def latent_scatter(panels: dict, title: str = ""):
    """Side-by-side 2-D projections ({name: (points [n, 2], is_poison [n])}), genuine vs
    poisoned."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.4 * len(panels), 3.9), squeeze=False
    )
    for ax, (name, (points, is_poison)) in zip(axes.flat, panels.items()):
        points, is_poison = np.asarray(points), np.asarray(is_poison, dtype=bool)
        ax.scatter(
            points[~is_poison, 0],
            points[~is_poison, 1],
            s=3,
            alpha=0.4,
            label="genuine",
        )
        ax.scatter(
            points[is_poison, 0],
            points[is_poison, 1],
            s=5,
            alpha=0.7,
            color="tab:red",
            label="poisoned",
        )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def ratio_bars(panels: dict, target: int, threshold: float, title: str, clip=10.0):
    """Confusion Training's final test, one panel per run ({name: (labels, ratios,
    cleansed)}): each label's likelihood ratio as log10 (clipped at ``clip``, the true
    value written above a clipped bar and the target's), the cleansed labels in red,
    the target's tick marked and the threshold dashed."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False, sharey=True
    )
    for ax, (name, (labels, ratios, cleansed)) in zip(axes.flat, panels.items()):
        heights = np.log10(np.asarray(ratios, dtype=float))
        colours = ["tab:red" if c else "tab:gray" for c in cleansed]
        ax.bar(labels, np.minimum(heights, clip), color=colours)
        for x, h, r in zip(labels, heights, ratios):
            if h > clip:
                ax.text(x, clip, f"1e{h:.0f}", ha="center", va="bottom", fontsize=7)
            elif x == target:  # the target's own ratio, however small its bar
                ax.text(x, h, f"{r:.4g}", ha="center", va="bottom", fontsize=7)
        ax.axhline(np.log10(threshold), color="black", ls="--", lw=1)
        ax.set_xticks(list(labels))
        ax.set_xticklabels([f"{c}\ntarget" if c == target else str(c) for c in labels])
        ax.set_ylim(0, clip * 1.12)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("label")
    axes.flat[0].set_ylabel("log10 likelihood ratio")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="tab:red"),
        plt.Rectangle((0, 0), 1, 1, color="tab:gray"),
        plt.Line2D([], [], color="black", ls="--", lw=1),
    ]
    fig.legend(
        handles,
        ["cleansed (its fitted images flagged)", "kept", f"threshold {threshold:g}"],
        loc="lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
