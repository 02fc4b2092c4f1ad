"""Defenses that use clean data only and no knowledge of the trigger.

* Fine-pruning (Liu et al. 2018): prune the last conv layer's channels that are least active on
  clean data, as far as clean validation accuracy allows, then fine-tune on clean data.
* Neural Cleanse (Wang et al. 2019): reverse-engineer the smallest trigger for every class, flag
  the class whose mask L1 norm is an outlier (MAD anomaly index > 2), and unlearn it.
* The original study's fc-layer pruning (magnitude pruning of the penultimate layer's weights).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import prune
from tqdm.auto import tqdm

from .data import Splits
from .metrics import attack_success_rate, clean_accuracy, non_target_mask
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


def defense_metrics(model, defender: DefenderData, splits: Splits, trigger, target_label: int) -> dict:
    """What the defender sees (accuracy on its clean selection images) and what the reader sees
    (test clean accuracy and ASR). No defense choice may read the last two."""
    return {"val_acc": accuracy(model, defender.x_select, defender.y_select),
            "clean_acc": clean_accuracy(model, splits.x_test, splits.y_test),
            "asr": attack_success_rate(model, splits.x_test, splits.y_test, trigger, target_label)}


def _same_convs(a: SimpleCNN, b: SimpleCNN) -> bool:
    return all(torch.equal(p.detach().cpu(), q.detach().cpu())
               for layer in ("conv1", "conv2") for p, q in zip(getattr(a, layer).parameters(), getattr(b, layer).parameters()))


class SharedConvMetrics:
    """Accuracies of many variants of one model that differ only after its conv layers (a pruned
    channel mask, pruned fc weights): every image set passes through the conv layers once, and each
    variant runs only its head on those features.

    ``sets`` maps a metric name to ``(images, labels)``, where ``labels`` may be one class for all
    (the ASR's target). Exact, not an approximation: the variants' own forward passes compute the
    same conv features. A variant whose conv weights differ from the base model's is refused.
    """

    def __init__(self, model: SimpleCNN, sets: dict):
        self.model = model
        self.sets = {name: (activations(model, x, layer="conv"), labels) for name, (x, labels) in sets.items()}

    @classmethod
    def of_defense(cls, model: SimpleCNN, defender: DefenderData, splits: Splits, trigger, target_label: int):
        """The three numbers of :func:`defense_metrics`."""
        keep = non_target_mask(splits.y_test, target_label)
        return cls(model, {"val_acc": (defender.x_select, defender.y_select),
                           "clean_acc": (splits.x_test, splits.y_test),
                           "asr": (trigger.apply(splits.x_test[keep]), target_label)})

    @torch.inference_mode()
    def __call__(self, variant: SimpleCNN) -> dict:
        if not _same_convs(self.model, variant):
            raise ValueError("variant: its conv layers differ from the base model's; use defense_metrics")
        variant.eval()
        dev = next(variant.parameters()).device
        out = {}
        for name, (features, labels) in self.sets.items():
            preds = torch.cat([variant.head(features[s : s + 4096].to(dev)).argmax(1).cpu()
                               for s in range(0, len(features), 4096)])
            out[name] = float((preds == labels).float().mean())
        return out


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
    """Liu et al.'s stopping rule: prune channels in order and stop at the *first* count whose clean
    validation accuracy falls more than ``max_val_drop`` below the unpruned model's (they use 4%);
    returns the count just before it (all counts on the curve when none falls that far)."""
    base = val_accuracies[0]
    for n, acc in enumerate(val_accuracies):
        if base - acc > max_val_drop:
            return n - 1
    return len(val_accuracies) - 1


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


def validation_curve(model: SimpleCNN, ranking: torch.Tensor, defender: DefenderData) -> list[float]:
    """Clean selection accuracy after pruning the first n channels of ``ranking``, n = 0..63."""
    return _selection_accuracies(model, defender, [pruned(model, ranking[:n]) for n in range(len(ranking))])


def _selection_accuracies(model: SimpleCNN, defender: DefenderData, variants) -> list[float]:
    """Clean selection accuracy of head-only ``variants`` of ``model`` (conv features computed once)."""
    measure = SharedConvMetrics(model, {"val_acc": (defender.x_select, defender.y_select)})
    return [measure(variant)["val_acc"] for variant in variants]


def choose_fc_amount(model: SimpleCNN, defender: DefenderData, amounts, max_val_drop: float) -> float:
    """The study's fc-layer pruning with Liu et al.'s rule: the largest of the increasing
    ``amounts`` before the first whose clean selection accuracy drops more than ``max_val_drop``."""
    curve = _selection_accuracies(model, defender, [fc_pruned(model, a) for a in amounts])
    return amounts[choose_prune_count(curve, max_val_drop)]


# --- Neural Cleanse ----------------------------------------------------------------------------

@dataclass
class ReversedTrigger:
    """The smallest trigger found for one class: mask and pattern in [0,1], [28,28] each."""

    label: int
    mask: torch.Tensor
    pattern: torch.Tensor
    l1: float
    attack_rate: float  # share of the evaluation images the reversed trigger sends to ``label``
    reached: bool = True  # False: the optimisation never reached the target rate (l1 is the last mask's)
    steps_run: int = 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(x.device, x.dtype)
        return (1 - m) * x + m * self.pattern.to(x.device, x.dtype)


def _from_tanh(raw: torch.Tensor) -> torch.Tensor:
    """The released code's box constraint: tanh(raw) / 2 + 0.5 lies in (0, 1)."""
    return torch.tanh(raw) / 2 + 0.5


@torch.no_grad()
def _attack_rate(model, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor, label: int, batch_size: int = 1000) -> float:
    hits = 0
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size]
        hits += int((model((1 - mask) * xb + mask * pattern).argmax(1) == label).sum())
    return hits / max(len(x), 1)


@dataclass
class _Schedule:
    """One class's cost schedule and early stop, as in the released code (see
    :func:`reverse_engineer_triggers`)."""

    patience: int
    init_cost: float
    multiplier: float
    early_stop_patience: int
    cost: float = 0.0
    set_count: int = 0
    up_count: int = 0
    down_count: int = 0
    stop_count: int = 0
    went_up: bool = False
    went_down: bool = False
    stop_best: float = float("inf")
    best_l1: float = float("inf")  # the smallest L1 of a successful step so far (the released code's reg_best)
    candidates: list = field(default_factory=list)  # (l1, mask, pattern) of every successful step
    steps_run: int = 0

    def update(self, success: bool) -> bool:
        """Advance after one step; True when the optimisation should stop."""
        if self.candidates:
            self.stop_count = self.stop_count + 1 if self.best_l1 >= self.stop_best else 0
        self.stop_best = min(self.stop_best, self.best_l1)
        if self.went_up and self.went_down and self.stop_count >= self.early_stop_patience:
            return True
        if self.cost == 0 and success:
            self.set_count += 1
            if self.set_count >= self.patience:
                self.cost, self.up_count, self.down_count = self.init_cost, 0, 0
                self.went_up = self.went_down = False
        else:
            self.set_count = 0
        self.up_count, self.down_count = (self.up_count + 1, 0) if success else (0, self.down_count + 1)
        if self.up_count >= self.patience:
            self.up_count, self.cost, self.went_up = 0, self.cost * self.multiplier, True
        elif self.down_count >= self.patience:
            self.down_count, self.cost, self.went_down = 0, self.cost / self.multiplier ** 1.5, True
        return False


def reverse_engineer_triggers(
    model: SimpleCNN, x_clean: torch.Tensor, labels, steps: int = 1000, n_samples: int = 1000,
    batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3, target_rate: float = 0.99,
    patience: int = 5, cost_multiplier: float = 1.5, early_stop_patience: int | None = None,
    n_eval: int = 1000, seed: int = 0, progress: bool = True,
) -> list[ReversedTrigger]:
    """Neural Cleanse's optimisation (Wang et al. 2019 and their released code) for each of
    ``labels``: min CE(f((1-m) x + m p), label) + cost * |m|_1, mask and pattern through
    tanh / 2 + 0.5, Adam (lr 0.1, betas 0.5/0.9).

    One step is a pass over a fixed set of ``n_samples`` clean images in mini-batches; its attack
    success is the mean over that pass. The cost starts at 0 and is set to ``init_cost`` after
    ``patience`` consecutive successful steps (success = rate >= ``target_rate``); then it is
    multiplied by ``cost_multiplier`` after ``patience`` successes in a row and divided by
    ``cost_multiplier ** 1.5`` after ``patience`` failures in a row. A class stops early once its
    cost has gone both up and down and its best L1 has not improved for ``early_stop_patience``
    steps (default 5 x patience). Deviation: the released code keeps the smallest mask of a
    successful step, trusting the running mean of a pass during which the mask was still moving;
    here every successful step's mask is a candidate, and the result is the smallest candidate
    that also sends ``target_rate`` of a fixed evaluation set (``n_eval`` other clean images) to
    the label - checked from the smallest up, after the optimisation.

    The classes are optimised side by side, each with its own mask, pattern, image order, cost and
    stop: one forward/backward pass carries a mini-batch for every class still running. Their
    losses are summed, so each class's gradient (and Adam's element-wise update) is its own.
    """
    labels = [int(c) for c in labels]
    dev = next(model.parameters()).device
    early_stop_patience = 5 * patience if early_stop_patience is None else early_stop_patience
    fast = torch.channels_last  # the layout the (channels-last) model's kernels want
    x_fit = x_clean[:n_samples].to(dev).contiguous(memory_format=fast)
    x_eval = x_clean[n_samples : n_samples + n_eval].to(dev).contiguous(memory_format=fast) if len(x_clean) > n_samples else x_fit
    gens = [torch.Generator().manual_seed(seed + c) for c in labels]
    start = [[torch.rand(28, 28, generator=g) for _ in range(2)] for g in gens]  # mask, pattern per class
    mask_raw = torch.atanh((torch.stack([s[0] for s in start]) - 0.5) * (2 - 1e-6)).to(dev).requires_grad_(True)
    pattern_raw = torch.atanh((torch.stack([s[1] for s in start]) - 0.5) * (2 - 1e-6)).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    schedules = [_Schedule(patience, init_cost, cost_multiplier, early_stop_patience) for _ in labels]
    running = list(range(len(labels)))  # positions of the classes still optimising
    grad_state = [p.requires_grad for p in model.parameters()]
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for step in tqdm(range(1, steps + 1), desc="neural cleanse", leave=False, disable=not progress):
            if not running:
                break
            active = torch.tensor(running, device=dev)
            target = torch.tensor([labels[i] for i in running], device=dev)
            cost = torch.tensor([schedules[i].cost for i in running], device=dev)
            orders = torch.stack([torch.randperm(len(x_fit), generator=gens[i]) for i in running]).to(dev)
            hits = torch.zeros(len(running), dtype=torch.long, device=dev)
            for s in range(0, len(x_fit), batch_size):
                xb = x_fit[orders[:, s : s + batch_size]]  # [classes, b, 1, 28, 28]
                m = _from_tanh(mask_raw[active])[:, None, None]
                pat = _from_tanh(pattern_raw[active])[:, None, None]
                stamped = ((1 - m) * xb + m * pat).flatten(0, 1).contiguous(memory_format=fast)
                logits = model(stamped).view(len(running), -1, 10)
                ce = F.cross_entropy(logits.transpose(1, 2), target[:, None].expand(-1, logits.shape[1]),
                                     reduction="none").mean(1)
                loss = (ce + cost * m.sum((1, 2, 3, 4))).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                hits += (logits.detach().argmax(2) == target[:, None]).sum(1)
            with torch.no_grad():
                masks, patterns = _from_tanh(mask_raw[active]), _from_tanh(pattern_raw[active])
            still = []
            for j, i in enumerate(running):
                sched = schedules[i]
                sched.steps_run = step
                success = int(hits[j]) / len(x_fit) >= target_rate
                if success:
                    l1 = float(masks[j].sum())
                    sched.candidates.append((l1, masks[j].cpu().clone(), patterns[j].cpu().clone()))
                    sched.best_l1 = min(sched.best_l1, l1)
                if not sched.update(success):
                    still.append(i)
            running = still
    finally:
        for p, flag in zip(model.parameters(), grad_state):
            p.requires_grad_(flag)
    out = []
    for i, (label, sched) in enumerate(zip(labels, schedules)):
        for l1, mask, pattern in sorted(sched.candidates, key=lambda c: c[0]):
            rate = _attack_rate(model, x_eval, mask.to(dev), pattern.to(dev), label)
            if rate >= target_rate:
                out.append(ReversedTrigger(label, mask, pattern, l1, rate, reached=True, steps_run=sched.steps_run))
                break
        else:  # never reached the target rate: report the last mask, marked as such
            with torch.no_grad():
                m, pat = _from_tanh(mask_raw[i]), _from_tanh(pattern_raw[i])
            out.append(ReversedTrigger(label, m.cpu(), pat.cpu(), float(m.sum()), _attack_rate(model, x_eval, m, pat, label),
                                       reached=False, steps_run=sched.steps_run))
    return out


def reverse_engineer_trigger(model: SimpleCNN, x_clean: torch.Tensor, label: int, **options) -> ReversedTrigger:
    """:func:`reverse_engineer_triggers` for one class."""
    return reverse_engineer_triggers(model, x_clean, [label], progress=False, **options)[0]


def anomaly_indices(l1_norms, valid=None) -> np.ndarray:
    """Neural Cleanse's anomaly index: |L1 - median| / (1.4826 * MAD), signed so that classes with
    *smaller* masks than the median are positive (only those can be backdoor targets).

    ``valid`` (bool per class) leaves out classes whose optimisation never reached the target rate:
    their L1 is not a trigger size. Their index is NaN.
    """
    l1_norms = np.asarray(l1_norms, dtype=float)
    valid = np.ones(len(l1_norms), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out = np.full(len(l1_norms), np.nan)
    if valid.sum() < 3:
        return out
    median = np.median(l1_norms[valid])
    mad = 1.4826 * np.median(np.abs(l1_norms[valid] - median))
    out[valid] = (median - l1_norms[valid]) / max(mad, 1e-12)
    return out


@dataclass
class CleanseReport:
    """Neural Cleanse's verdict over all classes."""

    triggers: list
    anomaly_index: np.ndarray  # NaN for classes whose optimisation never reached the target rate
    flagged: list  # classes with anomaly index > threshold

    @property
    def l1(self) -> np.ndarray:
        return np.array([t.l1 for t in self.triggers])

    @property
    def top(self) -> int:
        """The most suspicious class: the largest anomaly index, or the smallest mask L1 when no
        class reached the target rate (every index NaN)."""
        if np.isfinite(self.anomaly_index).any():
            return int(np.nanargmax(self.anomaly_index))
        return int(np.argmin(self.l1))

    def index_text(self, label: int, fmt: str = ".2f") -> str:
        """``label``'s anomaly index for prose, or why there is none."""
        value = self.anomaly_index[label]
        if np.isfinite(value):
            return format(value, fmt)
        if not self.triggers[label].reached:
            return "n/a (the class never reached the target rate)"
        return "n/a (too few classes reached the target rate)"

    @property
    def unreached(self) -> list:
        return [t.label for t in self.triggers if not t.reached]

    def table(self):
        import pandas as pd

        return pd.DataFrame({"mask L1": self.l1, "anomaly index": self.anomaly_index,
                             "attack rate": [t.attack_rate for t in self.triggers],
                             "reached": [t.reached for t in self.triggers]})


def cleanse_report(triggers: list, threshold: float = 2.0) -> CleanseReport:
    """Anomaly indices of the reversed triggers' L1 norms (classes that reached the target rate
    only) and the classes flagged above ``threshold`` (the paper uses 2)."""
    index = anomaly_indices([t.l1 for t in triggers], [t.reached for t in triggers])
    flagged = [c for c in range(len(triggers)) if np.isfinite(index[c]) and index[c] > threshold]
    return CleanseReport(triggers, index, flagged)


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


def neural_cleanse(model: SimpleCNN, x_clean: torch.Tensor, seed: int = 0, **options) -> list[ReversedTrigger]:
    """Reverse-engineer the smallest trigger of every class (Wang et al. 2019);
    ``options`` go to :func:`reverse_engineer_triggers`."""
    return reverse_engineer_triggers(model, x_clean, range(10), seed=seed, **options)


def pack_reversed(triggers: list[ReversedTrigger]) -> dict:
    """Tensors only, so the result can be cached and loaded with ``weights_only=True``."""
    return {"masks": torch.stack([t.mask for t in triggers]), "patterns": torch.stack([t.pattern for t in triggers]),
            "l1": torch.tensor([t.l1 for t in triggers]), "attack_rate": torch.tensor([t.attack_rate for t in triggers]),
            "reached": torch.tensor([t.reached for t in triggers]), "steps_run": torch.tensor([t.steps_run for t in triggers])}


def unpack_reversed(payload: dict) -> list[ReversedTrigger]:
    return [ReversedTrigger(i, payload["masks"][i], payload["patterns"][i], float(payload["l1"][i]),
                            float(payload["attack_rate"][i]), bool(payload["reached"][i]), int(payload["steps_run"][i]))
            for i in range(len(payload["l1"]))]
