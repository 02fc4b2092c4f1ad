"""Defenses that use clean data only and no knowledge of the trigger.

* Fine-pruning (Liu et al. 2018): prune the last conv layer's channels that are least active on
  clean data, as far as clean validation accuracy allows, then fine-tune on clean data.
* Neural Cleanse (Wang et al. 2019): reverse-engineer the smallest trigger for every class, flag
  the class whose mask L1 norm is an outlier (MAD anomaly index > 2), and unlearn it.
* The original study's fc-layer pruning (magnitude pruning of the penultimate layer's weights).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import prune
from tqdm.auto import tqdm

from .data import Splits
from .models import SimpleCNN
from .training import TrainConfig, activations, predict, train_model


@dataclass(frozen=True)
class DefenderData:
    """The defender's clean data: images to tune on and a disjoint set to choose hyper-parameters."""

    x_tune: torch.Tensor
    y_tune: torch.Tensor
    x_select: torch.Tensor
    y_select: torch.Tensor


def defender_data(splits: Splits, n_tune: int = 5000, n_select: int = 1000) -> DefenderData:
    """Split the clean validation set (never trained on) into tuning and selection parts."""
    if n_tune + n_select > len(splits.y_val):
        raise ValueError(f"n_clean_finetune: at most {len(splits.y_val) - n_select} clean images are available, got {n_tune}")
    return DefenderData(
        splits.x_val[:n_tune], splits.y_val[:n_tune],
        splits.x_val[-n_select:], splits.y_val[-n_select:],
    )


def accuracy(model, x, y) -> float:
    return float((predict(model, x) == y).float().mean())


# --- fine-pruning ------------------------------------------------------------------------------

def channel_ranking(model: SimpleCNN, x_clean: torch.Tensor) -> torch.Tensor:
    """Last-conv channels ordered from least to most mean activation on clean images."""
    return mean_channel_activation(model, x_clean).argsort()


def mean_channel_activation(model: SimpleCNN, x: torch.Tensor) -> torch.Tensor:
    """Mean ReLU activation of each of the 64 last-conv channels over ``x``: [64]."""
    return activations(model, x, layer="last_conv").mean(dim=(0, 2, 3))


def pruned(model: SimpleCNN, channels: torch.Tensor) -> SimpleCNN:
    """A copy of ``model`` with ``channels`` of the last conv layer masked to zero."""
    out = copy.deepcopy(model)
    out.channel_mask[channels] = 0.0
    return out


def pruning_curve(model: SimpleCNN, ranking: torch.Tensor, evaluate, counts=None) -> list[dict]:
    """``evaluate(pruned_model) -> dict`` after pruning the first n channels of ``ranking``, for each
    n in ``counts`` (default 0..63)."""
    counts = range(len(ranking)) if counts is None else counts
    return [{"channels_pruned": n, **evaluate(pruned(model, ranking[:n]))}
            for n in tqdm(counts, desc="pruning", leave=False)]


def choose_prune_count(val_accuracies: list[float], max_val_drop: float) -> int:
    """Largest number of pruned channels whose clean validation accuracy is within
    ``max_val_drop`` of the unpruned model's (Liu et al. stop at a 4% drop)."""
    base = val_accuracies[0]
    ok = [n for n, acc in enumerate(val_accuracies) if base - acc <= max_val_drop]
    return max(ok)


def fine_tune(model: SimpleCNN, data: DefenderData, epochs: int = 5, max_lr: float = 1e-3, seed: int = 0, device: str = "auto") -> SimpleCNN:
    """Fine-tune a copy of ``model`` on the defender's clean tuning images (pruned channels stay pruned)."""
    return train_model(data.x_tune, data.y_tune, TrainConfig(epochs=epochs, max_lr=max_lr, seed=seed),
                       device, model=copy.deepcopy(model), desc="fine-tuning")


def fc_pruned(model: SimpleCNN, amount: float) -> SimpleCNN:
    """The original study's defense: L1 magnitude pruning of ``amount`` of the penultimate fc weights."""
    out = copy.deepcopy(model)
    if amount > 0:
        prune.l1_unstructured(out.penultimate, name="weight", amount=amount)
        prune.remove(out.penultimate, "weight")
    return out


# --- Neural Cleanse ----------------------------------------------------------------------------

@dataclass
class ReversedTrigger:
    """The smallest trigger found for one class: mask and pattern in [0,1], [28,28] each."""

    label: int
    mask: torch.Tensor
    pattern: torch.Tensor
    l1: float
    attack_rate: float  # share of clean images the reversed trigger sends to ``label``

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(x.device, x.dtype)
        return (1 - m) * x + m * self.pattern.to(x.device, x.dtype)


def reverse_engineer_trigger(
    model: SimpleCNN, x_clean: torch.Tensor, label: int, steps: int = 300, batch_size: int = 128,
    init_cost: float = 1e-3, target_rate: float = 0.99, patience: int = 10, seed: int = 0,
) -> ReversedTrigger:
    """Neural Cleanse's optimisation for one class: min CE(f((1-m)x + m p), label) + lambda |m|_1,
    with the paper's adaptive lambda (raised while the attack succeeds, lowered when it fails).
    Returns the smallest mask that reached ``target_rate`` on the batches it was tried on."""
    dev = next(model.parameters()).device
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed + label)
    mask_logit = torch.randn(28, 28, generator=g).mul_(0.1).sub_(2.0).to(dev).requires_grad_(True)
    pattern_logit = torch.randn(28, 28, generator=g).mul_(0.1).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=0.1, betas=(0.5, 0.9))
    cost, hits, best = init_cost, [], None
    target = torch.full((batch_size,), label, device=dev)
    for step in range(steps):
        idx = torch.randint(0, len(x_clean), (batch_size,), generator=g)
        xb = x_clean[idx].to(dev)
        m, p = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        logits = model(((1 - m) * xb + m * p).contiguous(memory_format=torch.channels_last))
        ce = F.cross_entropy(logits, target)
        l1 = m.sum()
        l1_value = float(l1.detach())
        loss = ce + cost * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rate = float((logits.argmax(1) == target).float().mean())
        hits.append(rate >= target_rate)
        if rate >= target_rate and (best is None or l1_value < best[2]):
            best = (m.detach().cpu().clone(), p.detach().cpu().clone(), l1_value)
        if (step + 1) % patience == 0:
            cost = cost * 1.5 if all(hits[-patience:]) else cost / 1.5 ** 1.5
    for p in model.parameters():
        p.requires_grad_(True)
    if best is None:  # never reached the target rate: report the final mask honestly
        best = (torch.sigmoid(mask_logit).detach().cpu(), torch.sigmoid(pattern_logit).detach().cpu(), float(torch.sigmoid(mask_logit).sum()))
    rev = ReversedTrigger(label, best[0], best[1], best[2], 0.0)
    rev.attack_rate = float((predict(model, rev.apply(x_clean[:1000])) == label).float().mean())
    return rev


def anomaly_indices(l1_norms: np.ndarray) -> np.ndarray:
    """Neural Cleanse's anomaly index: |L1 - median| / (1.4826 * MAD), signed so that classes with
    *smaller* masks than the median are positive (only those can be backdoor targets)."""
    l1_norms = np.asarray(l1_norms, dtype=float)
    median = np.median(l1_norms)
    mad = 1.4826 * np.median(np.abs(l1_norms - median))
    return (median - l1_norms) / max(mad, 1e-12)


def unlearn(model: SimpleCNN, data: DefenderData, reversed_trigger: ReversedTrigger, fraction: float = 0.2,
            epochs: int = 5, max_lr: float = 1e-3, seed: int = 0, device: str = "auto") -> SimpleCNN:
    """Neural Cleanse's unlearning: fine-tune on clean tuning images, ``fraction`` of them stamped
    with the reversed trigger but keeping their true labels."""
    g = torch.Generator().manual_seed(seed)
    stamp = torch.rand(len(data.y_tune), generator=g) < fraction
    x = data.x_tune.clone()
    x[stamp] = reversed_trigger.apply(x[stamp])
    return train_model(x, data.y_tune, TrainConfig(epochs=epochs, max_lr=max_lr, seed=seed), device,
                       model=copy.deepcopy(model), desc="unlearning")


def neural_cleanse(model: SimpleCNN, x_clean: torch.Tensor, steps: int = 300, seed: int = 0, batch_size: int = 128) -> list[ReversedTrigger]:
    """Reverse-engineer the smallest trigger of every class (Wang et al. 2019)."""
    return [reverse_engineer_trigger(model, x_clean, label, steps=steps, batch_size=batch_size, seed=seed)
            for label in tqdm(range(10), desc="neural cleanse", leave=False)]


def pack_reversed(triggers: list[ReversedTrigger]) -> dict:
    """Tensors only, so the result can be cached and loaded with ``weights_only=True``."""
    return {"masks": torch.stack([t.mask for t in triggers]), "patterns": torch.stack([t.pattern for t in triggers]),
            "l1": torch.tensor([t.l1 for t in triggers]), "attack_rate": torch.tensor([t.attack_rate for t in triggers])}


def unpack_reversed(payload: dict) -> list[ReversedTrigger]:
    return [ReversedTrigger(i, payload["masks"][i], payload["patterns"][i], float(payload["l1"][i]),
                            float(payload["attack_rate"][i])) for i in range(len(payload["l1"]))]
