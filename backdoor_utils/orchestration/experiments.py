"""One call from a configuration to a trained, cached, evaluated (backdoored) model.

A chapter that needs a model trained by an earlier chapter calls :func:`run_attack` with
the same configuration and gets the cached one; run alone, it trains it.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import asdict, dataclass, fields

import numpy
import sklearn
import torch

from .. import attacks
from ..attacks import PoisonedDataset
from ..core.cache import cache_key, cache_path, load_cached, save_cached
from ..core.codekey import code_digest, keyed_elsewhere
from ..core.data import Splits, load_mnist, load_splits
from ..defenses import (
    CleanseReport,
    NeuralCleanse,
    neural_cleanse,
    neural_cleanse_at,
    pack_reversed,
    unpack_reversed,
)
from ..core.metrics import attack_success_rate, clean_accuracy
from ..core.models import SimpleCNN
from ..core.training import TrainConfig, resolve_device, train_model, training_precision


@dataclass(frozen=True, init=False)
class Experiment:
    """Everything that determines one (possibly backdoored) model: the attack's name and
    its own parameters (``attacks.get(attack, **params)``), the poisoning and the
    training run.

    ``Experiment("noise", eps=4 / 255, poison_rate=0.01)``; ``attack="none"`` is the
    clean model.
    """

    attack: str = "patch"
    target_label: int = 0
    poison_rate: float = 0.01
    epochs: int = 5
    n_train: int | None = None
    seed: int = 0
    params: tuple = ()  # the attack's own parameters as sorted (name, value) pairs

    def __init__(
        self,
        attack: str = "patch",
        target_label: int = 0,
        poison_rate: float = 0.01,
        epochs: int = 5,
        n_train: int | None = None,
        seed: int = 0,
        params=(),
        **attack_params,
    ):
        merged = {**dict(params), **attack_params}
        if attack == "none" and merged:
            raise ValueError(
                f"{sorted(merged)[0]}: the clean model ('none') takes no attack"
                " parameters"
            )
        if attack != "none":
            attacks.get(
                attack, **merged
            )  # checks the name and every parameter now, before training
        for name, value in (
            ("attack", attack),
            ("target_label", target_label),
            ("poison_rate", poison_rate),
            ("epochs", epochs),
            ("n_train", n_train),
            ("seed", seed),
            ("params", tuple(sorted(merged.items()))),
        ):
            object.__setattr__(self, name, value)

    @property
    def method(self) -> attacks.Attack | None:
        """The attack object (None for the clean model)."""
        return (
            None
            if self.attack == "none"
            else attacks.get(self.attack, **dict(self.params))
        )

    def trigger(self):
        """The (initial) trigger of this attack; None for the clean model."""
        return None if self.method is None else self.method.trigger(self.seed)

    def with_(self, **changes) -> "Experiment":
        """A copy with ``changes`` (run fields or attack parameters). When the attack
        changes, the old attack's parameters that the new one does not declare are
        dropped."""
        run = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"
        }
        params = dict(self.params)
        new_attack = changes.get("attack", self.attack)
        if new_attack != self.attack:
            known = (
                set()
                if new_attack == "none"
                else {
                    f.name
                    for f in fields(attacks.REGISTRY.get(new_attack, attacks.Attack))
                }
            )
            params = {k: v for k, v in params.items() if k in known}
        for name, value in changes.items():
            (run if name in run else params)[name] = value
        return Experiment(**run, **params)

    def train_config(self) -> TrainConfig:
        return train_config(self)

    def code(self) -> tuple:
        """What computes this experiment's model besides :func:`train_attack_model`, for
        the cache keys: the attack's class (its trigger and any training hook) and its
        poisoning policy's function."""
        if self.method is None:
            return ()
        return type(self.method), attacks.policy_function(self.method.policy)

    def spec(self) -> dict:
        """The run's fields with the attack's full spec (name, policy, parameters,
        trigger)."""
        if self.method is None:
            return {
                "attack": "none",
                "epochs": self.epochs,
                "n_train": self.n_train,
                "seed": self.seed,
            }
        return {
            "attack": self.attack,
            "target_label": self.target_label,
            "poison_rate": self.poison_rate,
            "epochs": self.epochs,
            "n_train": self.n_train,
            "seed": self.seed,
            "method": self.method.spec(self.seed),
        }

    def clean(self) -> "Experiment":
        """The same training run without poisoning (the baseline)."""
        return self.with_(attack="none")


def train_config(exp: Experiment) -> TrainConfig:
    """The training run of ``exp``'s model (and of every model retrained like it)."""
    return TrainConfig(epochs=exp.epochs, seed=exp.seed)


@dataclass
class AttackResult:
    """A trained model with its trigger, its poisoned training set and its headline
    metrics."""

    experiment: Experiment
    model: SimpleCNN
    trigger: object
    poisoned: PoisonedDataset | None
    splits: Splits
    clean_acc: float
    asr: float | None
    from_cache: bool
    key: str = (
        ""  # the model's cache key: every entry computed from this model is keyed on it
    )


def model_spec(spec: dict, code=(), device: str = "auto") -> dict:
    """Full cache spec: the caller's spec + everything else that determines the result -
    the data hash, the digest of the code that computes it
    (:func:`~backdoor_utils.codekey.code_digest` of ``code``: its syntax with everything
    it calls, not the files it sits in), the training precision (bf16 or fp32, after any
    ``BACKDOOR_BF16`` override), the device type, the versions of the libraries that
    compute it and, on the CPU, the number of threads (it changes the order of float
    sums, hence the trained weights)."""
    device_type = resolve_device(device).type
    return {
        **spec,
        "data": load_mnist().sha256,
        "code": code_digest(*code),
        "precision": training_precision(device),
        "device": device_type,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "threads": torch.get_num_threads() if device_type == "cpu" else None,
    }


@keyed_elsewhere(
    "a cache returns what the function it is given computes, keyed on that function"
)
def train_cached(
    spec: dict, train_fn, kind: str = "models", code=(), device: str = "auto"
):
    """Return ``(state, from_cache)``: the cached payload for ``spec`` or
    ``train_fn()``'s, saved atomically; ``code`` are the functions and classes that
    compute it (see :func:`model_spec`).
    """
    payload, from_cache, _ = _cached(spec, train_fn, kind, code, device)
    return payload, from_cache


@keyed_elsewhere(
    "a cache returns what the function it is given computes, keyed on that function"
)
def _cached(spec, train_fn, kind, code, device):
    full = model_spec(spec, code, device)
    path = cache_path(kind, full)
    payload = load_cached(path)
    if payload is not None:
        return payload, True, cache_key(full)
    started = time.monotonic()
    payload = train_fn()
    save_cached(path, payload, full, seconds=time.monotonic() - started)
    return payload, False, cache_key(full)


def tensor_digest(*values) -> str:
    """Hash of tensors - or of dicts of them, walked in key order (a model's weights and
    any hook state) - for cache keys: the data a model was trained on, the flags it was
    retrained without, the clean images a defense used, the weights training produced.
    """
    digest = hashlib.sha256()

    def add(name, value):
        if isinstance(value, dict):
            for key in sorted(value):
                add(f"{name}/{key}", value[key])
        elif isinstance(value, torch.Tensor):
            digest.update(
                name.encode()
                + b"\0"
                + value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
            )

    for position, value in enumerate(values):
        add(str(position), value)
    return digest.hexdigest()[:20]


def model_from_state(state: dict, device: str = "auto") -> SimpleCNN:
    model = SimpleCNN()
    model.load_state_dict(state)
    # channels-last like a freshly trained model: the same kernels, and twice as fast on
    # a CPU
    return model.to(resolve_device(device)).to(memory_format=torch.channels_last).eval()


def poisoned_training_set(exp: Experiment, splits: Splits) -> PoisonedDataset | None:
    """The training set ``exp``'s model is trained on (for a hook-stamped attack:
    flagged and relabelled, the trigger stamped by the hook during training)."""
    if exp.method is None:
        return None
    return exp.method.poison(
        splits.x_train, splits.y_train, exp.target_label, exp.poison_rate, exp.seed
    )


def train_attack_model(exp: Experiment, device: str = "auto") -> dict:
    """Train ``exp``'s model from scratch on its (poisoned) training set: the model's
    weights and what a training hook learned with it (the cached payload of
    :func:`run_attack`)."""
    splits = load_splits(exp.n_train)
    if exp.method is None:
        model = train_model(
            splits.x_train,
            splits.y_train,
            train_config(exp),
            device,
            desc="clean model",
        )
        return {"model": model.cpu().state_dict()}
    poisoned = poisoned_training_set(exp, splits)
    hook = exp.method.training_hook(poisoned, exp.seed)
    model = train_model(
        poisoned.x,
        poisoned.y,
        train_config(exp),
        device,
        hook=hook,
        desc=f"{exp.attack} attack",
    )
    state = (
        None if hook is None else hook.state()
    )  # what the hook learned (None: nothing)
    return {
        "model": model.cpu().state_dict(),
        **({"hook": state} if state is not None else {}),
    }


def evaluate_attack(model: SimpleCNN, trigger, exp: Experiment, splits: Splits) -> dict:
    """Clean accuracy and ASR of ``model`` on the test set (ASR None for the clean
    model)."""
    asr = (
        None
        if trigger is None
        else attack_success_rate(
            model, splits.x_test, splits.y_test, trigger, exp.target_label
        )
    )
    return {
        "clean_acc": clean_accuracy(model, splits.x_test, splits.y_test),
        "asr": asr,
    }


def training_spec(exp: Experiment) -> dict:
    """The spec of the model ``exp`` trains: its spec without the attack's test-time
    parameters (an attack's ``test_only``, e.g. SIG's test signal), so that one model
    serves every trigger it is tested with."""
    test_only = getattr(exp.method, "test_only", ())
    return exp.with_(**{name: None for name in test_only}).spec()


def run_attack(exp: Experiment, device: str = "auto") -> AttackResult:
    """Poison, train (or load from the cache) and evaluate one experiment (its clean
    accuracy and ASR on the test set are cached too)."""
    splits = load_splits(exp.n_train)
    method = exp.method
    poisoned = poisoned_training_set(exp, splits)
    payload, from_cache, key = _cached(
        {"kind": "attack", **training_spec(exp)},
        lambda: train_attack_model(exp, device),
        "models",
        (train_attack_model, *exp.code()),
        device,
    )
    model = model_from_state(payload["model"], device)
    trigger = exp.trigger()
    if "hook" in payload:
        trigger = method.trained_trigger(payload["hook"], exp.seed)
        # the poisoned set as it stands at the end of training: the final trigger on the
        # same samples
        poisoned = method.poison(
            splits.x_train,
            splits.y_train,
            exp.target_label,
            exp.poison_rate,
            exp.seed,
            trigger=trigger,
        )

    # cached beside the model, under its key and the evaluation's code: a chapter that
    # reloads the model does not evaluate it again; an edit to the metrics re-evaluates
    # without retraining
    scores, _ = train_cached(
        {"kind": "attack_metrics", **exp.spec(), "model": key},
        lambda: evaluate_attack(model, trigger, exp, splits),
        kind="attack_metrics",
        code=(evaluate_attack, load_splits, *exp.code()),
        device=device,
    )
    return AttackResult(
        exp,
        model,
        trigger,
        poisoned,
        splits,
        scores["clean_acc"],
        scores["asr"],
        from_cache,
        key,
    )


def retrain_without(
    result: AttackResult, remove: torch.Tensor, device: str = "auto"
) -> SimpleCNN:
    """Retrain from scratch on ``result``'s poisoned training set minus the samples
    flagged in ``remove``."""
    exp, poisoned = result.experiment, result.poisoned
    keep = ~remove

    def train():
        model = train_model(
            poisoned.x[keep],
            poisoned.y[keep],
            train_config(exp),
            device,
            desc="retrain",
        )
        return {"model": model.cpu().state_dict()}

    payload, _ = train_cached(
        {
            "kind": "retrain",
            **exp.spec(),
            "model": result.key,
            "removed": tensor_digest(remove),
        },
        train,
        code=(retrain_without,),
        device=device,
    )
    return model_from_state(payload["model"], device)


def summary(result: AttackResult) -> dict:
    """One table row: the experiment's knobs that vary plus clean accuracy and ASR."""
    exp = result.experiment
    n_poison = 0 if result.poisoned is None else result.poisoned.n_poison
    return {
        "attack": exp.attack,
        "poison_rate": exp.poison_rate if exp.attack != "none" else 0.0,
        "n_poison": n_poison,
        "seed": exp.seed,
        "clean_acc": result.clean_acc,
        "asr": result.asr,
    }


def sweep(exp: Experiment, field: str, values, device: str = "auto"):
    """Run ``exp`` once per value of ``field`` (cached); return (results, pandas
    DataFrame)."""
    import pandas as pd

    results = [run_attack(exp.with_(**{field: value}), device) for value in values]
    table = pd.DataFrame([{field: v, **summary(r)} for v, r in zip(values, results)])
    return results, table.loc[:, ~table.columns.duplicated()]


def reversed_triggers(
    result: AttackResult, x_clean: torch.Tensor, with_seconds: bool = False, **options
):
    """Neural Cleanse's reversed trigger for every class of ``result``'s model (cached).

    ``options`` are passed to :func:`backdoor_utils.defenses.neural_cleanse_at` and are
    part of the cache key, as are the model's key, the clean images and the reversal's
    code. ``with_seconds``: ``(triggers, seconds)``, the seconds the reversal took when
    it was computed (kept with it in the cache).
    """
    options = {"seed": result.experiment.seed, **options}
    spec = {
        "kind": "neural_cleanse",
        **result.experiment.spec(),
        "model": result.key,
        "options": options,
        "clean_data": tensor_digest(x_clean),
    }

    def compute():
        start = time.perf_counter()
        packed = pack_reversed(neural_cleanse_at(result.model, x_clean, **options))
        return {**packed, "seconds": torch.tensor(time.perf_counter() - start)}

    # an fp32 reversal (no precision option) runs neural_cleanse as it is and stays
    # keyed on it alone
    reversal = neural_cleanse_at if "precision" in options else neural_cleanse
    payload, _ = train_cached(
        spec, compute, kind="neural_cleanse", code=(reversal, pack_reversed)
    )
    triggers = unpack_reversed(payload)
    if not with_seconds:
        return triggers
    return triggers, float(payload.get("seconds", torch.tensor(float("nan"))))


def cleanse(
    result: AttackResult, defense: NeuralCleanse, x_clean: torch.Tensor
) -> CleanseReport:
    """``defense``'s report on ``result``'s model, its reversed triggers cached
    (:func:`reversed_triggers`) and seeded with the experiment's seed."""
    return defense.report(
        result.model,
        x_clean,
        seed=result.experiment.seed,
        reverse=lambda model, x, **options: reversed_triggers(result, x, **options),
    )


def train_on_data_cached(
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    device: str = "auto",
    desc: str = "training",
    model: SimpleCNN | None = None,
) -> SimpleCNN:
    """:func:`train_model` on arbitrary data, cached under a hash of the data, the
    config and the training code.

    With ``model``, training goes on from a copy of its weights and buffers (``model``
    itself is not changed), and their hash is in the key too: a fine-tune is cached like
    a model from scratch.
    """
    spec = {"kind": "data", "data_hash": tensor_digest(x, y), **asdict(config)}
    if model is not None:
        spec["start"] = tensor_digest(model.state_dict())

    def train():
        start = None if model is None else copy.deepcopy(model)
        return {
            "model": (
                train_model(x, y, config, device, model=start, desc=desc)
                .cpu()
                .state_dict()
            )
        }

    payload, _ = train_cached(spec, train, code=(train_on_data_cached,), device=device)
    return model_from_state(payload["model"], device)
