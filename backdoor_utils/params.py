"""Validation of notebook parameters: one call right after each chapter's ``parameters`` cell.

Every invalid value raises ``ValueError`` naming the parameter and its allowed values, before any
data is loaded or any model is trained.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from .triggers import TRIGGERS


def _int(lo=None, hi=None, none_ok=False):
    def check(name, value):
        if value is None and none_ok:
            return
        desc = f"an integer{f' >= {lo}' if lo is not None else ''}{f' and <= {hi}' if hi is not None else ''}"
        if none_ok:
            desc += " or None"
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise ValueError(f"{name}: must be {desc}, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{name}: must be {desc}, got {value!r}")
    return check


def _open_unit(name, value):
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 < value < 1) or math.isnan(value):
        raise ValueError(f"{name}: must be a number in the open interval (0, 1), got {value!r}")


def _positive(hi=None):
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, Real) or not value > 0 or (hi is not None and value > hi):
            raise ValueError(f"{name}: must be a number > 0{f' and <= {hi}' if hi else ''}, got {value!r}")
    return check


def _list_of(item_check):
    def check(name, values):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name}: must be a non-empty list, got {values!r}")
        for i, value in enumerate(values):
            item_check(f"{name}[{i}]", value)
    return check


def _seed_target_pairs(name, values):
    """A (possibly empty) list of [seed, target_label] pairs."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{name}: must be a list of [seed, target_label] pairs, got {values!r}")
    for i, pair in enumerate(values):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{name}[{i}]: must be a [seed, target_label] pair, got {pair!r}")
        _int(0, 2**31 - 1)(f"{name}[{i}][0] (seed)", pair[0])
        _int(0, 9)(f"{name}[{i}][1] (target_label)", pair[1])


def _silhouette(name, value):
    if isinstance(value, bool) or not isinstance(value, Real) or not (-1 <= value <= 1):
        raise ValueError(f"{name}: must be a number between -1 and 1, got {value!r}")


def _choice(options):
    def check(name, value):
        if value not in options:
            raise ValueError(f"{name}: must be one of {', '.join(map(repr, options))}, got {value!r}")
    return check


def _odd_kernel(name, value):
    _int(1, 27)(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name}: must be an odd integer between 1 and 27, got {value!r}")


def _device(name, value):
    if not isinstance(value, str) or not (value in {"auto", "cpu"} or value.startswith("cuda")):
        raise ValueError(f"{name}: must be 'auto', 'cpu' or 'cuda[:N]', got {value!r}")
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{name}: {value!r} asked for but CUDA is not available here; use 'auto' or 'cpu'")


#: The rule for every parameter any chapter may declare.
RULES = {
    "seed": _int(0, 2**31 - 1),
    "target_label": _int(0, 9),
    "poison_rate": _open_unit,
    "epochs": _int(1, 100),
    "n_train": _int(100, 54000, none_ok=True),
    "device": _device,
    "trigger": _choice(TRIGGERS),
    "patch_size": _int(1, 14),
    "eps": _positive(1.0),
    "blur_sigma": _positive(10.0),
    "blur_kernel": _odd_kernel,
    "soft_sigma": _positive(10.0),
    "poison_rates": _list_of(_open_unit),
    "eps_values": _list_of(_positive(1.0)),
    "seeds": _list_of(_int(0, 2**31 - 1)),
    "n_components": _int(2, 128),
    "reduction": _choice(("ica", "pca")),
    "max_clusters": _int(2, 10),
    "reclassify_epochs": _int(1, 50),
    "n_clean_finetune": _int(100, 5000),
    "finetune_epochs": _int(1, 50),
    "max_val_drop": _positive(1.0),
    "nc_steps": _int(1, 10000),
    "anomaly_threshold": _positive(100.0),
    "robustness_runs": _seed_target_pairs,
    "nc_runs": _seed_target_pairs,
    "min_silhouette": _silhouette,
    "size_threshold": _open_unit,
    "ratio_threshold": _positive(100.0),
    "nc_samples": _int(16, 5000),
    "nc_batch_size": _int(1, 1024),
    "attacks": _list_of(_choice(("patch", "noise", "blur", "learned"))),
}


def validate_parameters(**params) -> None:
    """Check every parameter against its rule.

    Raises ``ValueError`` for an unknown name (listing the known ones) or an invalid value.
    """
    for name, value in params.items():
        if name not in RULES:
            raise ValueError(f"{name}: unknown parameter; known parameters are {', '.join(sorted(RULES))}")
        RULES[name](name, value)
