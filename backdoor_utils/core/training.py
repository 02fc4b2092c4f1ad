"""Seeded, batched training and evaluation of the SimpleCNN.

The recipe: Adam with a one-cycle schedule (max lr 3e-3), batch 256, whole-tensor
batching (no DataLoader, no per-sample transforms), channels-last memory format, and
bf16 autocast only where the device computes bf16 natively (CUDA with bf16 support, or a
CPU with AVX512-BF16/AMX); elsewhere fp32, because emulated bf16 is several times
*slower* (measured on AVX2: 8x). Evaluation (:func:`predict`, :func:`activations`)
always runs in fp32: bf16 is a training-speed choice only.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .codekey import keyed_elsewhere
from .models import SimpleCNN


@keyed_elsewhere("the device type, in every key")
def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def precision_override() -> bool | None:
    """What ``BACKDOOR_BF16=0/1`` forces (bf16 or not), None when it is not set."""
    override = os.environ.get("BACKDOOR_BF16")
    return None if override not in {"0", "1"} else override == "1"


@keyed_elsewhere("the training precision, in every key")
@functools.lru_cache(maxsize=None)
def bf16_native(device_type: str) -> bool:
    """True when ``device_type`` computes bf16 in hardware (checked, not assumed).

    ``BACKDOOR_BF16=0/1`` overrides the check (e.g. to measure emulated bf16).
    """
    forced = precision_override()
    if forced is not None:
        return forced
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        flags = ""
        try:
            with open("/proc/cpuinfo") as handle:
                flags = handle.read()
        except OSError:
            pass
        return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))
    return False


def training_precision(device: str = "auto") -> str:
    """ "bf16" or "fp32": the precision :func:`train_model` uses on ``device`` (part of
    cache keys)."""
    return "bf16" if bf16_native(resolve_device(device).type) else "fp32"


class TrainingHook(Protocol):
    """Something an attack adds to training (a trigger learned with the model, a
    per-batch transformation): :func:`train_model` optimises its ``parameters()`` with
    the model's and passes every batch through ``transform(xb, index)`` (``index``: the
    batch's positions in the training set), knowing nothing else about it."""

    def parameters(self) -> list: ...

    def to(self, device) -> None: ...

    def transform(self, xb: torch.Tensor, index: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model besides the data."""

    epochs: int = 5
    batch_size: int = 256
    max_lr: float = 3e-3
    seed: int = 0
    weight_decay: float = 0.0


#: Images per forward pass when evaluating (predictions, probabilities, activations).
#: Larger is not faster: at 2048 the first conv layer's output (205 MB) overflows the
#: CPU's caches and the 2-core AVX2 CPU evaluated 8,400 images/s against 14,500 at 512
#: (1,024 the same), with identical outputs (`make bench` measures both).
EVAL_BATCH = 512


def _on_device_channels_last(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` moved to ``device`` in channels-last memory format."""
    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def train_model(
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    model: SimpleCNN | None = None,
    hook: TrainingHook | None = None,
    desc: str = "training",
) -> SimpleCNN:
    """Train (or continue training) a SimpleCNN on float images ``x`` [N,1,28,28] and
    labels ``y``.

    With a ``hook`` (:class:`TrainingHook`), every batch passes through
    ``hook.transform`` and the hook's parameters are optimised jointly with the model on
    the same loss.
    """
    dev = resolve_device(device)
    if model is None:
        # seeded initialisation that leaves the caller's random state as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = SimpleCNN()
    model = model.to(dev).to(memory_format=torch.channels_last)
    params = list(model.parameters())
    if hook is not None:
        hook.to(dev)
        params += list(hook.parameters())
    optimizer = torch.optim.Adam(
        params, lr=config.max_lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = (len(y) + config.batch_size - 1) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.max_lr,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
    )
    x, y = x.to(dev), y.to(dev)
    generator = torch.Generator().manual_seed(config.seed)
    use_bf16 = bf16_native(dev.type)
    model.train()
    bar = tqdm(range(config.epochs), desc=desc, unit="epoch", leave=False)
    for _ in bar:
        # one shuffled, channels-last copy per epoch; batches are slices of it (no
        # per-batch gather)
        order = torch.randperm(len(y), generator=generator).to(dev)
        xs, ys = x[order].contiguous(memory_format=torch.channels_last), y[order]
        total = torch.zeros((), device=dev)
        for start in range(0, len(y), config.batch_size):
            xb, yb = (
                xs[start : start + config.batch_size],
                ys[start : start + config.batch_size],
            )
            if hook is not None:
                xb = hook.transform(xb, order[start : start + config.batch_size])
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach() * len(yb)  # no per-step synchronisation
        if not bar.disable:
            bar.set_postfix(loss=f"{float(total) / len(y):.4f}")
    model.eval()
    return model


@torch.inference_mode()
def batch_outputs(
    fn, x: torch.Tensor, device: torch.device, batch_size: int = EVAL_BATCH
) -> torch.Tensor:
    """``fn`` (a model's forward pass, or the output of one of its layers) on ``x`` in
    batches of ``batch_size`` on ``device``, channels-last, gathered as one fp32 tensor
    on the CPU.
    """
    out = [
        fn(_on_device_channels_last(x[s : s + batch_size], device)).float().cpu()
        for s in range(0, len(x), batch_size)
    ]
    return torch.cat(out)


def predict(
    model: SimpleCNN,
    x: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    device: str = "auto",
) -> torch.Tensor:
    """Predicted labels for ``x`` (on the CPU), computed in fp32."""
    if not len(x):
        return torch.empty(0, dtype=torch.long)
    dev = (
        next(model.parameters()).device if device == "auto" else resolve_device(device)
    )
    return batch_outputs(model.eval(), x, dev, batch_size).argmax(1)


def predict_proba(
    model: SimpleCNN, x: torch.Tensor, batch_size: int = EVAL_BATCH
) -> torch.Tensor:
    """Softmax class probabilities [N, 10] for ``x`` (on the CPU), computed in fp32."""
    if not len(x):
        return torch.empty(0, 10)
    return batch_outputs(
        model.eval(), x, next(model.parameters()).device, batch_size
    ).softmax(1)


def activations(
    model: SimpleCNN,
    x: torch.Tensor,
    layer: str = "penultimate",
    batch_size: int = EVAL_BATCH,
) -> torch.Tensor:
    """Float32 activations of ``layer``: "penultimate" [N,128], "last_conv" [N,64,14,14]
    or "conv" (the pooled, unmasked conv features the head reads, [N,64,7,7])."""
    fn = {
        "penultimate": model.penultimate_activations,
        "last_conv": model.last_conv_activations,
        "conv": model.conv_features,
    }[layer]
    model.eval()
    return batch_outputs(fn, x, next(model.parameters()).device, batch_size)
