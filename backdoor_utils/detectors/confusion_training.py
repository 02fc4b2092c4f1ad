"""Confusion Training (Qi et al., USENIX Security 2023; the authors' code
Unispac/Fight-Poison-With-Poison at f2f02c2, ``confusion_training.py`` and
``ct_cleanser.py``): find the poisons by training a model that *cannot* learn the
genuine images but still learns the backdoor.

The defender has the poisoned training set, the backdoored model trained on it, and a
small clean set (the authors: 2,000 images). Training goes on the poisoned images while,
in between, clean images are taught with *wrong* labels - each the backdoored model's
prediction shifted by an offset that changes from batch to batch, never the prediction
itself. That confusion stops the model from fitting the semantic features of the
genuine images; a backdoor is a shortcut that needs none of them, so the poisons still
fit their (target) label and keep a low loss. Rounds distil the training set to its
lowest-loss share, which the poisons dominate more and more:

1. *Pretrain* on the current set (the whole poisoned set in round 0, starting from
   scratch; then the previous round's distilled set, starting from the previous round's
   pretrained model) with SGD (lr 0.01, momentum 0.9, weight decay 1e-4, batch 32).
2. *Confusion training* for ``iterations`` steps: a batch of 32 clean images with
   confused labels every step, and every ``batch_factor``-th step also a batch of 32
   from the current set, the two losses weighted ((lambda - 1) confusion + set) /
   lambda; the set's loss weights each image by 1 / sqrt(its class's share + 0.001).
3. *Distil*: every training image's loss under the confused model, against its given
   label; the lowest ``ratio`` share is kept, and each class is topped up with its next
   lowest-loss images to at least 1/50 of it (1/100 in the fifth round).

The last (sixth) round pretrains on the distilled set together with the clean set under
labels shifted by one (y + 1 mod 10), confusion-trains, and its model decides: in every
label, the training images' penultimate features are projected on their first two
principal directions and split into those the confused model still predicts as their
label (isolated) and the others; a Gaussian is fitted to each group (covariances +
0.001) and the likelihood ratio exp(mean over the label of [log-likelihood under the
image's own group - log-likelihood under the others' Gaussian]) measures how much
better two groups explain the label than one. A label is cleansed when its ratio is the
largest and above 1.5, or above 2; its isolated images are flagged.

The authors' settings (CIFAR-10): distillation ratios 1/2, 1/5, 1/25, 1/50, 1/100;
confusion learning rates 0.001 (rounds 1-3) and 0.01 (4-6), momentum 0.7, lambda 20,
20, 20, 30, 30, 15, batch factor 2, 6,000 confusion steps in rounds 1-4 and 2,000 in
5-6, pretraining 100 epochs in rounds 1-2 and 40 in 3-6. Deviation: pretraining on
the whole training set (54,000 MNIST images, rounds 1-2) runs 2 epochs, not 100 (the
first two ``pretrain_epochs``) - the book's models learn MNIST in 5 epochs, and 100
epochs would cost 20 models' training; the later, small rounds keep 40.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA

from ..core.checks import integer, list_of, open_unit, positive
from ..core.column import Column
from ..core.models import SimpleCNN
from ..core.training import activations, bf16_native, predict, resolve_device
from .base import Detector, register

N_CLASSES = 10


@dataclass
class ConfusionResult:
    """``flags``: the isolated images of the cleansed labels; ``ratios``: every label's
    likelihood ratio; ``cleansed``: the labels cleansed; ``distilled``: the indices of
    the last distilled set; ``isolated``: every image the confused model still
    predicts as its label (flagged or not)."""

    flags: torch.Tensor
    ratios: dict
    cleansed: list
    distilled: torch.Tensor
    isolated: torch.Tensor


def confusion_labels(predicted: torch.Tensor, step: int) -> torch.Tensor:
    """Confused labels for a batch: the backdoored model's ``predicted`` labels shifted
    by an offset that moves on with every ``step`` and skips multiples of the number of
    classes, so that a confused label never equals the prediction."""
    shift = step % (N_CLASSES - 1) + 1  # 1 .. 9, cycling
    return (predicted + shift) % N_CLASSES


def class_weights(y: torch.Tensor, uniform: bool = False) -> torch.Tensor:
    """Per-image weight 1 / sqrt(share of its class + 0.001) (all 1 when
    ``uniform``)."""
    if uniform:
        return torch.ones(len(y))
    share = torch.bincount(y, minlength=N_CLASSES).float() / len(y)
    return (1.0 / torch.sqrt(share + 0.001))[y]


def _fast(x: torch.Tensor) -> torch.Tensor:
    """A batch in channels-last memory format (the layout bf16 kernels want)."""
    return x.contiguous(memory_format=torch.channels_last)


def _sgd_steps(model, batches, lr, momentum, device, loss_of):
    """One SGD step (weight decay 1e-4) per item of ``batches`` on ``loss_of(item)``, at
    the book's training precision."""
    model = model.to(memory_format=torch.channels_last)  # the fast layout for bf16
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=1e-4
    )
    model.train()
    use_bf16 = bf16_native(device.type)
    for item in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_of(item)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def pretrain(model, x, y, epochs, generator, device, batch_size=32):
    """The authors' pretraining: SGD lr 0.01, momentum 0.9, batch 32, plain
    cross-entropy, ``epochs`` passes in shuffled order."""
    x, y = x.to(device), y.to(device)

    def batches():
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=generator).to(device)
            for start in range(0, len(y), batch_size):
                yield order[start : start + batch_size]

    return _sgd_steps(
        model,
        batches(),
        0.01,
        0.9,
        device,
        lambda index: F.cross_entropy(model(_fast(x[index])), y[index]),
    )


def confusion_train(
    model,
    x_set,
    y_set,
    weights,
    x_clean,
    predicted_clean,
    iterations,
    lr,
    momentum,
    lam,
    batch_factor,
    generator,
    device,
    batch_size=32,
):
    """``iterations`` steps of confusion: clean images with :func:`confusion_labels`
    every step, and every ``batch_factor``-th step a batch of the set too, weighted
    ((lam - 1) confusion + weighted set loss) / lam."""
    x_set, y_set, weights = x_set.to(device), y_set.to(device), weights.to(device)
    x_clean, predicted_clean = x_clean.to(device), predicted_clean.to(device)

    def draw(n):
        return torch.randint(n, (batch_size,), generator=generator).to(device)

    def steps():
        for step in range(iterations):
            clean = draw(len(x_clean))
            mixed = draw(len(y_set)) if step % batch_factor == 0 else None
            yield step, clean, mixed

    def loss_of(item):
        step, clean, mixed = item
        confused = confusion_labels(predicted_clean[clean], step)
        loss = F.cross_entropy(model(_fast(x_clean[clean])), confused)
        if mixed is None:
            return loss
        per_image = F.cross_entropy(
            model(_fast(x_set[mixed])), y_set[mixed], reduction="none"
        )
        w = weights[mixed]
        return ((lam - 1) * loss + (w * per_image).sum() / w.sum()) / lam

    return _sgd_steps(model, steps(), lr, momentum, device, loss_of)


def per_image_loss(model, x, y, batch_size=1024) -> torch.Tensor:
    """Cross-entropy of every image against its given label, float32, on the CPU."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size].to(device)).float()
            out.append(
                F.cross_entropy(
                    logits, y[start : start + batch_size].to(device), reduction="none"
                ).cpu()
            )
    return torch.cat(out)


def distil(
    losses: torch.Tensor, y: torch.Tensor, ratio: float, floor: int
) -> torch.Tensor:
    """Indices of the ``ratio`` share of images with the lowest ``losses``, each class
    topped up with its next lowest-loss images to at least 1 / ``floor`` of it."""
    order = torch.argsort(losses)
    keep = torch.zeros(len(y), dtype=torch.bool)
    keep[order[: int(len(y) * ratio)]] = True
    for c in range(N_CLASSES):
        members = order[y[order] == c]
        need = len(members) // floor
        if int(keep[members].sum()) < need:
            keep[members[:need]] = True  # the lowest-loss ones, those kept included
    return torch.nonzero(keep).flatten()


def likelihood_ratio(points: np.ndarray, isolated: np.ndarray) -> float:
    """How much better two Gaussians (the isolated points, the others) explain
    ``points`` than the others' Gaussian alone: exp of the mean log-likelihood gain
    (1 when either group has fewer than 2 points)."""
    if isolated.sum() < 2 or (~isolated).sum() < 2:
        return 1.0
    fits = {}
    for group in (True, False):
        members = points[isolated == group]
        fits[group] = multivariate_normal(
            members.mean(0), np.cov(members.T) + 0.001, allow_singular=True
        )
    own = np.where(isolated, fits[True].logpdf(points), fits[False].logpdf(points))
    gain = float(np.mean(own - fits[False].logpdf(points)))
    return float(np.exp(min(gain, 700.0)))  # a clean split may be infinitely likelier


@register
@dataclass(frozen=True)
class ConfusionTraining(Detector):
    """Confusion Training with the authors' schedule (see the module docstring); the
    clean set is the first ``n_clean`` of the defender's clean images."""

    name = "confusion_training"
    column = Column("F1", True, 0.9, "Confusion\nTraining", "detection", "f1")
    needs_clean = True
    rules = {
        "n_clean": integer(10, 5000),
        "distillation_ratios": list_of(open_unit),
        "pretrain_epochs": list_of(integer(1, 1000)),
        "iterations": list_of(integer(1, 100000)),
        "lrs": list_of(positive(1.0)),
        "lambdas": list_of(positive(1000.0)),
        "momentum": open_unit,
        "batch_factor": integer(1, 100),
        "max_ratio_threshold": positive(100.0),
        "ratio_threshold": positive(100.0),
    }
    n_clean: int = 2000
    distillation_ratios: tuple = (1 / 2, 1 / 5, 1 / 25, 1 / 50, 1 / 100)
    pretrain_epochs: tuple = (2, 2, 40, 40, 40, 40)
    iterations: tuple = (6000, 6000, 6000, 6000, 2000, 2000)
    lrs: tuple = (0.001, 0.001, 0.001, 0.01, 0.01, 0.01)
    lambdas: tuple = (20, 20, 20, 30, 30, 15)
    momentum: float = 0.7
    batch_factor: int = 2
    max_ratio_threshold: float = 1.5
    ratio_threshold: float = 2.0

    def __post_init__(self):
        super().__post_init__()
        rounds = len(self.distillation_ratios) + 1
        for name in ("pretrain_epochs", "iterations", "lrs", "lambdas"):
            if len(getattr(self, name)) != rounds:
                raise ValueError(
                    f"{name}: must give one value per round ({rounds}: one more than"
                    f" distillation_ratios), got {len(getattr(self, name))}"
                )

    def detect(
        self, model, x, y, seed=0, device="auto", train=None, clean=None
    ) -> ConfusionResult:
        if clean is None:
            raise ValueError("clean: Confusion Training needs the defender's clean set")
        dev = resolve_device(device)
        x_clean, y_clean = clean[0][: self.n_clean], clean[1][: self.n_clean]
        predicted_clean = predict(model, x_clean)  # the backdoored model's labels
        generator = torch.Generator().manual_seed(seed)
        last = len(self.distillation_ratios)
        current = torch.arange(len(y))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            base = SimpleCNN().to(dev)  # pretrained further in every round
        for n in range(last + 1):
            x_set, y_set = x[current], y[current]
            if n == last:  # the clean set joins, its labels shifted by one
                x_set = torch.cat([x_set, x_clean])
                y_set = torch.cat([y_set, (y_clean + 1) % N_CLASSES])
            base = pretrain(base, x_set, y_set, self.pretrain_epochs[n], generator, dev)
            confused = SimpleCNN().to(dev)
            confused.load_state_dict(base.state_dict())
            confused = confusion_train(
                confused,
                x[current],
                y[current],
                class_weights(y[current], uniform=n == last),
                x_clean,
                predicted_clean,
                self.iterations[n],
                self.lrs[n],
                self.momentum,
                self.lambdas[n],
                self.batch_factor,
                generator,
                dev,
            )
            if n < last:
                losses = per_image_loss(confused, x, y)
                floor = 50 if n < last - 1 else 100
                current = distil(losses, y, self.distillation_ratios[n], floor)
        return self._identify(confused, x, y, current)

    def _identify(self, confused, x, y, distilled) -> ConfusionResult:
        """The final test on every label (see the module docstring)."""
        features = activations(confused, x).numpy()
        agrees = (predict(confused, x) == y).numpy()
        ratios = {}
        for c in range(N_CLASSES):
            members = (y == c).numpy()
            if members.sum() < 3:
                ratios[c] = 1.0
                continue
            points = PCA(2).fit_transform(features[members])
            ratios[c] = likelihood_ratio(points, agrees[members])
        top = max(ratios.values())
        cleansed = [
            c
            for c, r in ratios.items()
            if (r == top and r > self.max_ratio_threshold) or r > self.ratio_threshold
        ]
        flags = torch.zeros(len(y), dtype=torch.bool)
        for c in cleansed:
            flags |= torch.from_numpy((y == c).numpy() & agrees)
        return ConfusionResult(
            flags, ratios, cleansed, distilled, torch.from_numpy(agrees)
        )
