"""One call from a configuration to a trained, cached, evaluated (backdoored) model.

A chapter that needs a model trained by an earlier chapter calls :func:`run_attack` with the same
configuration and gets the cached one; run alone, it trains it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import __version__
from .cache import cache_path, load_cached, save_cached
from .data import Splits, load_mnist, load_splits
from .metrics import attack_success_rate, clean_accuracy
from .models import SimpleCNN
from .poisoning import PoisonedDataset, poison_dataset
from .training import TrainConfig, resolve_device, train_model, training_precision
from .triggers import (
    BlurTrigger,
    LearnedPatchTrigger,
    NoiseTrigger,
    PatchTrigger,
    corner_patch,
    study_patch,
)

#: Attack names accepted by :class:`Experiment`.
ATTACKS = ("none", "patch", "study_patch", "noise", "blur", "study_blur", "learned", "initial_patch")


#: Modules whose source shapes every trained model (the core, plus this orchestration module).
CORE_SOURCES = ("data.py", "models.py", "training.py", "triggers.py", "poisoning.py", "experiments.py")


def source_digest(names=CORE_SOURCES) -> str:
    """Hash of the package modules ``names``: an edit to any of them invalidates the cache entry."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Experiment:
    """Everything that determines one (possibly backdoored) model."""

    attack: str = "patch"
    target_label: int = 0
    poison_rate: float = 0.01
    epochs: int = 5
    n_train: int | None = None
    seed: int = 0
    patch_size: int = 3
    eps: float = 8 / 255
    blur_sigma: float = 1.0
    blur_kernel: int = 5

    def trigger(self):
        """The (initial) trigger of this attack; None for the clean model."""
        return {
            "none": lambda: None,
            "patch": lambda: corner_patch(self.patch_size),
            "study_patch": study_patch,
            "noise": lambda: NoiseTrigger(eps=self.eps),
            "blur": lambda: BlurTrigger(self.blur_kernel, self.blur_sigma),
            "study_blur": lambda: BlurTrigger(self.blur_kernel, self.blur_sigma, region=7),
            "learned": lambda: LearnedPatchTrigger(size=self.patch_size, row=27 - self.patch_size, col=27 - self.patch_size, init_seed=self.seed),
            # the control for the learned patch: its own initial values, frozen (never trained)
            "initial_patch": lambda: LearnedPatchTrigger(size=self.patch_size, row=27 - self.patch_size, col=27 - self.patch_size, init_seed=self.seed).frozen(),
        }[self.attack]()

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, seed=self.seed)

    def spec(self) -> dict:
        """The knobs that matter for this attack, with the trigger's own full spec."""
        spec = asdict(self)
        if self.attack == "none":
            for key in ("target_label", "poison_rate", "patch_size", "eps", "blur_sigma", "blur_kernel"):
                spec.pop(key)
        else:
            spec["trigger"] = self.trigger().spec()
        return spec

    def clean(self) -> "Experiment":
        """The same training run without poisoning (the baseline)."""
        return replace(self, attack="none")


@dataclass
class AttackResult:
    """A trained model with its trigger, its poisoned training set and its headline metrics."""

    experiment: Experiment
    model: SimpleCNN
    trigger: object
    poisoned: PoisonedDataset | None
    splits: Splits
    clean_acc: float
    asr: float | None
    from_cache: bool


def model_spec(spec: dict, sources=CORE_SOURCES, device: str = "auto") -> dict:
    """Full cache spec: the caller's spec + everything else that determines the result - the data
    hash, the package version, the source of ``sources``, the training precision (bf16 or fp32,
    after any ``BACKDOOR_BF16`` override), the device type, the torch version and, on the CPU, the
    number of threads (it changes the order of float sums, hence the trained weights)."""
    device_type = resolve_device(device).type
    return {**spec, "data": load_mnist().sha256, "version": __version__, "source": source_digest(sources),
            "precision": training_precision(device), "device": device_type, "torch": torch.__version__,
            "threads": torch.get_num_threads() if device_type == "cpu" else None}


def train_cached(spec: dict, train_fn, kind: str = "models", sources=CORE_SOURCES, device: str = "auto"):
    """Return ``(state, from_cache)``: the cached payload for ``spec`` or ``train_fn()``'s, saved atomically."""
    full = model_spec(spec, sources, device)
    path = cache_path(kind, full)
    payload = load_cached(path)
    if payload is not None:
        return payload, True
    payload = train_fn()
    save_cached(path, payload, full)
    return payload, False


def model_from_state(state: dict, device: str = "auto") -> SimpleCNN:
    model = SimpleCNN()
    model.load_state_dict(state)
    # channels-last like a freshly trained model: the same kernels, and twice as fast on a CPU
    return model.to(resolve_device(device)).to(memory_format=torch.channels_last).eval()


def poisoned_training_set(exp: Experiment, splits: Splits) -> PoisonedDataset | None:
    if exp.attack == "none":
        return None
    stamp = None if exp.attack == "learned" else exp.trigger()
    return poison_dataset(splits.x_train, splits.y_train, stamp, exp.target_label, exp.poison_rate, seed=exp.seed)


def run_attack(exp: Experiment, device: str = "auto") -> AttackResult:
    """Poison, train (or load from the cache) and evaluate one experiment."""
    splits = load_splits(exp.n_train)
    poisoned = poisoned_training_set(exp, splits)
    trigger = exp.trigger()

    def train():
        if exp.attack == "none":
            model = train_model(splits.x_train, splits.y_train, exp.train_config(), device, desc="clean model")
            return {"model": model.cpu().state_dict()}
        learned = trigger if exp.attack == "learned" else None
        model = train_model(
            poisoned.x, poisoned.y, exp.train_config(), device,
            learned_trigger=learned, poison_mask=poisoned.is_poison if learned else None, desc=f"{exp.attack} attack",
        )
        payload = {"model": model.cpu().state_dict()}
        if learned is not None:
            payload["trigger_logits"] = learned.logits.detach().cpu()
        return payload

    payload, from_cache = train_cached({"kind": "attack", **exp.spec()}, train, device=device)
    model = model_from_state(payload["model"], device)
    if exp.attack == "learned":
        trigger = LearnedPatchTrigger(trigger.size, trigger.row, trigger.col, logits=payload["trigger_logits"]).frozen()
        # the poisoned set as it stands at the end of training: the final patch on the same samples
        poisoned = poison_dataset(splits.x_train, splits.y_train, trigger, exp.target_label, exp.poison_rate, seed=exp.seed)
    ca = clean_accuracy(model, splits.x_test, splits.y_test)
    asr = None if trigger is None else attack_success_rate(model, splits.x_test, splits.y_test, trigger, exp.target_label)
    return AttackResult(exp, model, trigger, poisoned, splits, ca, asr, from_cache)


def retrain_without(result: AttackResult, remove: torch.Tensor, device: str = "auto") -> SimpleCNN:
    """Retrain from scratch on ``result``'s poisoned training set minus the samples flagged in ``remove``."""
    exp, poisoned = result.experiment, result.poisoned
    keep = ~remove
    removed_hash = hashlib.sha256(remove.numpy().tobytes()).hexdigest()[:16]

    def train():
        model = train_model(poisoned.x[keep], poisoned.y[keep], exp.train_config(), device, desc="retrain")
        return {"model": model.cpu().state_dict()}

    payload, _ = train_cached({"kind": "retrain", **exp.spec(), "removed": removed_hash}, train, device=device)
    return model_from_state(payload["model"], device)


def summary(result: AttackResult) -> dict:
    """One table row: the experiment's knobs that vary plus clean accuracy and ASR."""
    exp = result.experiment
    n_poison = 0 if result.poisoned is None else result.poisoned.n_poison
    return {"attack": exp.attack, "poison_rate": exp.poison_rate if exp.attack != "none" else 0.0,
            "n_poison": n_poison, "seed": exp.seed, "clean_acc": result.clean_acc, "asr": result.asr}


def sweep(exp: Experiment, field: str, values, device: str = "auto"):
    """Run ``exp`` once per value of ``field`` (cached); return (results, pandas DataFrame)."""
    import pandas as pd

    results = [run_attack(replace(exp, **{field: value}), device) for value in values]
    table = pd.DataFrame([{field: v, **summary(r)} for v, r in zip(values, results)])
    return results, table.loc[:, ~table.columns.duplicated()]


def reversed_triggers(result: AttackResult, x_clean: torch.Tensor, **options):
    """Neural Cleanse's reversed trigger for every class of ``result``'s model (cached).

    ``options`` are passed to :func:`backdoor_utils.defenses.neural_cleanse` and are part of the
    cache key, as are the clean images and the source of ``defenses.py``.
    """
    from .defenses import neural_cleanse, pack_reversed, unpack_reversed

    x_hash = hashlib.sha256(x_clean.numpy().tobytes()).hexdigest()[:16]
    options = {"seed": result.experiment.seed, **options}
    spec = {"kind": "neural_cleanse", **result.experiment.spec(), "options": options, "clean_data": x_hash}
    payload, _ = train_cached(spec, lambda: pack_reversed(neural_cleanse(result.model, x_clean, **options)),
                              kind="neural_cleanse", sources=CORE_SOURCES + ("defenses.py",))
    return unpack_reversed(payload)


def train_on_data_cached(x: torch.Tensor, y: torch.Tensor, config: TrainConfig, device: str = "auto", desc: str = "training",
                         sources=CORE_SOURCES) -> SimpleCNN:
    """:func:`train_model` on arbitrary data, cached under a hash of the data, the config and ``sources``."""
    digest = hashlib.sha256(x.numpy().tobytes())
    digest.update(y.numpy().tobytes())
    spec = {"kind": "data", "data_hash": digest.hexdigest()[:20], **asdict(config)}
    payload, _ = train_cached(spec, lambda: {"model": train_model(x, y, config, device, desc=desc).cpu().state_dict()},
                              sources=sources, device=device)
    return model_from_state(payload["model"], device)
