"""Neural Cleanse (Wang et al. 2019): reverse-engineer the smallest trigger for every
class, flag the class whose mask L1 norm is an outlier (MAD anomaly index > 2), and
unlearn it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.checks import above_one, choice, integer, positive
from ..core.models import SimpleCNN
from ..core.training import EVAL_BATCH, TrainConfig, bf16_native, predict, train_model
from ..core.column import Column
from .base import DefenderData, Defense, Repair, register


@dataclass
class ReversedTrigger:
    """The smallest trigger found for one class: mask and pattern in [0,1], [28,28]
    each."""

    label: int
    mask: torch.Tensor
    pattern: torch.Tensor
    l1: float
    attack_rate: (
        float  # share of the evaluation images the reversed trigger sends to ``label``
    )
    # False: the optimisation never reached the target rate (l1 is the last mask's)
    reached: bool = True
    steps_run: int = 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(x.device, x.dtype)
        return (1 - m) * x + m * self.pattern.to(x.device, x.dtype)


def _from_tanh(raw: torch.Tensor) -> torch.Tensor:
    """The released code's box constraint: tanh(raw) / 2 + 0.5 lies in (0, 1)."""
    return torch.tanh(raw) / 2 + 0.5


def _hits(
    model, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor, label: int
) -> torch.Tensor:
    """Per image of ``x`` (on the CPU): does ``(1 - mask) x + mask pattern`` go to
    ``label``?"""
    with torch.no_grad():
        return predict(model, (1 - mask) * x + mask * pattern) == label


def _attack_rate(
    model, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor, label: int
) -> float:
    """Share of ``x`` that ``(1 - mask) x + mask pattern`` sends to ``label``."""
    return int(_hits(model, x, mask, pattern, label).sum()) / max(len(x), 1)


def _first_reaching(
    model, x: torch.Tensor, candidates, label: int, rate: float
) -> tuple[int, float] | None:
    """The first of ``candidates`` (``(mask, pattern)`` pairs) that sends at least
    ``rate`` of ``x`` to ``label``, as ``(position, its rate)``; None when none does.

    The answer of a full pass per candidate, found with fewer images: a check stops as
    soon as the images left could no longer lift the candidate to ``rate``, and every
    image a rejected candidate missed is tried first on the next - the candidates of one
    class fail on much the same hard images, so most are rejected after a few dozen of
    them."""
    n = max(len(x), 1)

    def out_of_reach(misses: int) -> bool:
        return (n - misses) / n < rate

    hard = torch.zeros(0, dtype=torch.long)  # images a rejected candidate missed
    others = torch.ones(len(x), dtype=torch.bool)
    for position, (mask, pattern) in enumerate(candidates):
        misses = int((~_hits(model, x[hard], mask, pattern, label)).sum())
        missed = []
        if not out_of_reach(
            misses
        ):  # the hard images leave it a chance: the others, in batches
            for chunk in torch.nonzero(others).flatten().split(EVAL_BATCH):
                missed.append(chunk[~_hits(model, x[chunk], mask, pattern, label)])
                misses += len(missed[-1])
                if out_of_reach(misses):
                    break
        if not out_of_reach(misses):
            return position, (n - misses) / n
        hard = torch.cat([hard] + missed)
        others[hard] = False
    return None


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
    best_l1: float = float(
        "inf"
    )  # the smallest L1 of a successful step so far (the released code's reg_best)
    candidates: list = field(
        default_factory=list
    )  # (l1, mask, pattern) of every successful step
    steps_run: int = 0

    def update(self, success: bool) -> bool:
        """Advance after one step; True when the optimisation should stop."""
        if self.candidates:
            self.stop_count = (
                self.stop_count + 1 if self.best_l1 >= self.stop_best else 0
            )
        self.stop_best = min(self.stop_best, self.best_l1)
        if (
            self.went_up
            and self.went_down
            and self.stop_count >= self.early_stop_patience
        ):
            return True
        if self.cost == 0 and success:
            self.set_count += 1
            if self.set_count >= self.patience:
                self.cost, self.up_count, self.down_count = self.init_cost, 0, 0
                self.went_up = self.went_down = False
        else:
            self.set_count = 0
        self.up_count, self.down_count = (
            (self.up_count + 1, 0) if success else (0, self.down_count + 1)
        )
        if self.up_count >= self.patience:
            self.up_count, self.cost, self.went_up = (
                0,
                self.cost * self.multiplier,
                True,
            )
        elif self.down_count >= self.patience:
            self.down_count, self.cost, self.went_down = (
                0,
                self.cost / self.multiplier**1.5,
                True,
            )
        return False


def reverse_engineer_triggers(
    model: SimpleCNN,
    x_clean: torch.Tensor,
    labels,
    steps: int = 1000,
    n_samples: int = 1000,
    batch_size: int = 32,
    lr: float = 0.1,
    init_cost: float = 1e-3,
    target_rate: float = 0.99,
    patience: int = 5,
    cost_multiplier: float = 1.5,
    early_stop_patience: int | None = None,
    n_eval: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> list[ReversedTrigger]:
    """Neural Cleanse's optimisation (Wang et al. 2019 and their released code) for each
    of ``labels``: min CE(f((1-m) x + m p), label) + cost * |m|_1, mask and pattern
    through tanh / 2 + 0.5, Adam (lr 0.1, betas 0.5/0.9).

    One step is a pass over a fixed set of ``n_samples`` clean images in mini-batches;
    its attack success is the mean over that pass. The cost starts at 0 and is set to
    ``init_cost`` after ``patience`` consecutive successful steps (success = rate >=
    ``target_rate``); then it is multiplied by ``cost_multiplier`` after ``patience``
    successes in a row and divided by ``cost_multiplier ** 1.5`` after ``patience``
    failures in a row. A class stops early once its cost has gone both up and down and
    its best L1 has not improved for ``early_stop_patience`` steps (default 5 x
    patience). Deviation: the released code keeps the smallest mask of a successful
    step, trusting the running mean of a pass during which the mask was still moving;
    here every successful step's mask is a candidate, and the result is the smallest
    candidate that also sends ``target_rate`` of a fixed evaluation set (``n_eval``
    other clean images) to the label - checked from the smallest up, after the
    optimisation (see :func:`_first_reaching`).

    The classes are optimised side by side, each with its own mask, pattern, image
    order, cost and stop: one forward/backward pass carries a mini-batch for every class
    still running. Their losses are summed, so each class's gradient (and Adam's
    element-wise update) is its own.
    """
    labels = [int(c) for c in labels]
    dev = next(model.parameters()).device
    early_stop_patience = (
        5 * patience if early_stop_patience is None else early_stop_patience
    )
    fast = torch.channels_last  # the layout the (channels-last) model's kernels want
    x_fit = x_clean[:n_samples].to(dev).contiguous(memory_format=fast)
    x_eval = (
        x_clean[n_samples : n_samples + n_eval].to(dev).contiguous(memory_format=fast)
        if len(x_clean) > n_samples
        else x_fit
    )
    gens = [torch.Generator().manual_seed(seed + c) for c in labels]
    start = [
        [torch.rand(28, 28, generator=g) for _ in range(2)] for g in gens
    ]  # mask, pattern per class
    mask_raw = (
        torch.atanh((torch.stack([s[0] for s in start]) - 0.5) * (2 - 1e-6))
        .to(dev)
        .requires_grad_(True)
    )
    pattern_raw = (
        torch.atanh((torch.stack([s[1] for s in start]) - 0.5) * (2 - 1e-6))
        .to(dev)
        .requires_grad_(True)
    )
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    schedules = [
        _Schedule(patience, init_cost, cost_multiplier, early_stop_patience)
        for _ in labels
    ]
    running = list(range(len(labels)))  # positions of the classes still optimising
    grad_state = [p.requires_grad for p in model.parameters()]
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for step in tqdm(
            range(1, steps + 1),
            desc="neural cleanse",
            leave=False,
            disable=not progress,
        ):
            if not running:
                break
            active = torch.tensor(running, device=dev)
            target = torch.tensor([labels[i] for i in running], device=dev)
            cost = torch.tensor([schedules[i].cost for i in running], device=dev)
            orders = torch.stack(
                [torch.randperm(len(x_fit), generator=gens[i]) for i in running]
            ).to(dev)
            hits = torch.zeros(len(running), dtype=torch.long, device=dev)
            for s in range(0, len(x_fit), batch_size):
                xb = x_fit[orders[:, s : s + batch_size]]  # [classes, b, 1, 28, 28]
                m = _from_tanh(mask_raw[active])[:, None, None]
                pat = _from_tanh(pattern_raw[active])[:, None, None]
                stamped = (
                    ((1 - m) * xb + m * pat)
                    .flatten(0, 1)
                    .contiguous(memory_format=fast)
                )
                logits = model(stamped).view(len(running), -1, 10)
                ce = F.cross_entropy(
                    logits.transpose(1, 2),
                    target[:, None].expand(-1, logits.shape[1]),
                    reduction="none",
                ).mean(1)
                loss = (ce + cost * m.sum((1, 2, 3, 4))).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                hits += (logits.detach().argmax(2) == target[:, None]).sum(1)
            with torch.no_grad():
                masks, patterns = _from_tanh(mask_raw[active]), _from_tanh(
                    pattern_raw[active]
                )
            still = []
            for j, i in enumerate(running):
                sched = schedules[i]
                sched.steps_run = step
                success = int(hits[j]) / len(x_fit) >= target_rate
                if success:
                    l1 = float(masks[j].sum())
                    sched.candidates.append(
                        (l1, masks[j].cpu().clone(), patterns[j].cpu().clone())
                    )
                    sched.best_l1 = min(sched.best_l1, l1)
                if not sched.update(success):
                    still.append(i)
            running = still
    finally:
        for p, flag in zip(model.parameters(), grad_state):
            p.requires_grad_(flag)
    out = []
    for i, (label, sched) in enumerate(zip(labels, schedules)):
        candidates = sorted(sched.candidates, key=lambda c: c[0])
        found = _first_reaching(
            model,
            x_eval,
            ((m.to(dev), p.to(dev)) for _, m, p in candidates),
            label,
            target_rate,
        )
        if found is not None:
            l1, mask, pattern = candidates[found[0]]
            out.append(
                ReversedTrigger(
                    label,
                    mask,
                    pattern,
                    l1,
                    found[1],
                    reached=True,
                    steps_run=sched.steps_run,
                )
            )
        else:  # never reached the target rate: report the last mask, marked as such
            with torch.no_grad():
                m, pat = _from_tanh(mask_raw[i]), _from_tanh(pattern_raw[i])
            out.append(
                ReversedTrigger(
                    label,
                    m.cpu(),
                    pat.cpu(),
                    float(m.sum()),
                    _attack_rate(model, x_eval, m, pat, label),
                    reached=False,
                    steps_run=sched.steps_run,
                )
            )
    return out


def reverse_engineer_trigger(
    model: SimpleCNN, x_clean: torch.Tensor, label: int, **options
) -> ReversedTrigger:
    """:func:`reverse_engineer_triggers` for one class."""
    return reverse_engineer_triggers(
        model, x_clean, [label], progress=False, **options
    )[0]


def anomaly_indices(l1_norms, valid=None) -> np.ndarray:
    """Neural Cleanse's anomaly index: |L1 - median| / (1.4826 * MAD), signed so that
    classes with *smaller* masks than the median are positive (only those can be
    backdoor targets).

    ``valid`` (bool per class) leaves out classes whose optimisation never reached the
    target rate: their L1 is not a trigger size. Their index is NaN.
    """
    l1_norms = np.asarray(l1_norms, dtype=float)
    valid = (
        np.ones(len(l1_norms), dtype=bool)
        if valid is None
        else np.asarray(valid, dtype=bool)
    )
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
    anomaly_index: (
        np.ndarray
    )  # NaN for classes whose optimisation never reached the target rate
    flagged: list  # classes with anomaly index > threshold

    @property
    def l1(self) -> np.ndarray:
        return np.array([t.l1 for t in self.triggers])

    @property
    def top(self) -> int:
        """The most suspicious class: the largest anomaly index, or the smallest mask L1
        when no class reached the target rate (every index NaN)."""
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

        return pd.DataFrame(
            {
                "mask L1": self.l1,
                "anomaly index": self.anomaly_index,
                "attack rate": [t.attack_rate for t in self.triggers],
                "reached": [t.reached for t in self.triggers],
            }
        )


def cleanse_report(triggers: list, threshold: float = 2.0) -> CleanseReport:
    """Anomaly indices of the reversed triggers' L1 norms (classes that reached the
    target rate only) and the classes flagged above ``threshold`` (the paper uses 2)."""
    index = anomaly_indices([t.l1 for t in triggers], [t.reached for t in triggers])
    flagged = [
        c
        for c in range(len(triggers))
        if np.isfinite(index[c]) and index[c] > threshold
    ]
    return CleanseReport(triggers, index, flagged)


def unlearn(
    model: SimpleCNN,
    data: DefenderData,
    reversed_trigger: ReversedTrigger,
    fraction: float = 0.2,
    epochs: int = 5,
    max_lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    train=train_model,
) -> SimpleCNN:
    """Neural Cleanse's unlearning: fine-tune on clean tuning images, ``fraction`` of
    them stamped with the reversed trigger but keeping their true labels. ``train``
    trains the copy of ``model`` (as in :func:`~backdoor_utils.defenses.fine_tune`)."""
    g = torch.Generator().manual_seed(seed)
    stamp = torch.rand(len(data.y_tune), generator=g) < fraction
    x = data.x_tune.clone()
    x[stamp] = reversed_trigger.apply(x[stamp])
    return train(
        x,
        data.y_tune,
        TrainConfig(epochs=epochs, max_lr=max_lr, seed=seed),
        device,
        model=copy.deepcopy(model),
        desc="unlearning",
    )


def neural_cleanse(
    model: SimpleCNN, x_clean: torch.Tensor, seed: int = 0, **options
) -> list[ReversedTrigger]:
    """Reverse-engineer the smallest trigger of every class (Wang et al. 2019);
    ``options`` go to :func:`reverse_engineer_triggers`."""
    return reverse_engineer_triggers(model, x_clean, range(10), seed=seed, **options)


#: The precisions a reversal runs at: "training" - the book's training precision, bf16
#: autocast where the device computes bf16 natively (fp32 elsewhere), as training and
#: I-BAU run; "fp32" - as the authors' (Keras, fp32) code runs.
PRECISIONS = ("training", "fp32")


def neural_cleanse_at(
    model: SimpleCNN,
    x_clean: torch.Tensor,
    precision: str = "fp32",
    seed: int = 0,
    **options,
) -> list[ReversedTrigger]:
    """:func:`neural_cleanse` at ``precision`` (:data:`PRECISIONS`): the whole
    reversal - the optimisation and the final check of its candidates - under bf16
    autocast when ``precision`` is "training" and the model's device computes bf16
    natively."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = next(model.parameters()).device
    enabled = precision == "training" and bf16_native(dev.type)
    with torch.autocast(dev.type, torch.bfloat16, enabled=enabled):
        return neural_cleanse(model, x_clean, seed=seed, **options)


def pack_reversed(triggers: list[ReversedTrigger]) -> dict:
    """Tensors only, so the result can be cached and loaded with
    ``weights_only=True``."""
    return {
        "masks": torch.stack([t.mask for t in triggers]),
        "patterns": torch.stack([t.pattern for t in triggers]),
        "l1": torch.tensor([t.l1 for t in triggers]),
        "attack_rate": torch.tensor([t.attack_rate for t in triggers]),
        "reached": torch.tensor([t.reached for t in triggers]),
        "steps_run": torch.tensor([t.steps_run for t in triggers]),
    }


def unpack_reversed(payload: dict) -> list[ReversedTrigger]:
    return [
        ReversedTrigger(
            i,
            payload["masks"][i],
            payload["patterns"][i],
            float(payload["l1"][i]),
            float(payload["attack_rate"][i]),
            bool(payload["reached"][i]),
            int(payload["steps_run"][i]),
        )
        for i in range(len(payload["l1"]))
    ]


@register
@dataclass(frozen=True)
class NeuralCleanse(Defense):
    """Neural Cleanse end to end: reversed triggers for every class on the defender's
    tuning images, classes above ``anomaly_threshold`` flagged, each flagged class
    unlearned in turn.

    ``reverse(model, x_clean, **options)`` computes the reversed triggers (default
    :func:`neural_cleanse`; the orchestration passes a cached one)."""

    name = "neural_cleanse"
    column = Column(
        "ASR after", False, 0.05, "Neural Cleanse\n+ unlearning", "reversal_repair"
    )
    rules = {
        "steps": integer(1, 10000),
        "n_samples": integer(16, 5000),
        "batch_size": integer(1, 1024),
        "anomaly_threshold": positive(100.0),
        "unlearn_epochs": integer(1, 50),
        "cost_multiplier": above_one(10.0),
        "precision": choice(PRECISIONS),
    }
    steps: int = 300
    n_samples: int = 320
    batch_size: int = 32
    anomaly_threshold: float = 2.0
    unlearn_epochs: int = 5
    cost_multiplier: float = 1.5  # the authors' example: 2
    precision: str = "training"  # the authors': "fp32"

    def report(
        self, model: SimpleCNN, x_clean: torch.Tensor, seed: int = 0, reverse=None
    ) -> CleanseReport:
        reverse = reverse or neural_cleanse_at
        return cleanse_report(
            reverse(model, x_clean, **self.options(), seed=seed),
            self.anomaly_threshold,
        )

    def options(self) -> dict:
        """The reversal's budget (:func:`reverse_engineer_triggers`' options) and its
        precision (:func:`neural_cleanse_at`); "fp32", what every reversal ran at before
        the precision became an option, is left out, so those stay keyed as they were.
        """
        budget = {
            "steps": self.steps,
            "n_samples": self.n_samples,
            "batch_size": self.batch_size,
            "cost_multiplier": self.cost_multiplier,
        }
        if self.precision == "fp32":
            return budget
        return {**budget, "precision": self.precision}

    def unlearn_flagged(
        self,
        model: SimpleCNN,
        report: CleanseReport,
        defender: DefenderData,
        seed: int = 0,
        device: str = "auto",
        train=train_model,
    ) -> SimpleCNN:
        """``model`` after unlearning every class ``report`` flagged, in turn (unchanged
        when none); ``train`` as in :func:`unlearn`."""
        for label in report.flagged:
            model = unlearn(
                model,
                defender,
                report.triggers[label],
                epochs=self.unlearn_epochs,
                seed=seed,
                device=device,
                train=train,
            )
        return model

    def repair(
        self,
        model: SimpleCNN,
        defender: DefenderData,
        seed: int = 0,
        device: str = "auto",
        reverse=None,
    ) -> Repair:
        report = self.report(model, defender.x_tune, seed, reverse)
        return Repair(
            self.unlearn_flagged(model, report, defender, seed, device),
            {"report": report},
        )
