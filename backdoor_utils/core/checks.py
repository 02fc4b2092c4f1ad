"""Checks for parameter values: each ``check(name, value)`` raises ``ValueError`` naming
the parameter and its allowed values. Used by :mod:`backdoor_utils.params` (the
notebooks' one-call validation) and by every attack for its own parameters.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def integer(lo=None, hi=None, none_ok=False):
    def check(name, value):
        if value is None and none_ok:
            return
        desc = f"an integer{f' >= {lo}' if lo is not None else ''}{f' and <= {hi}' if hi is not None else ''}"  # noqa: E501
        if none_ok:
            desc += " or None"
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise ValueError(f"{name}: must be {desc}, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{name}: must be {desc}, got {value!r}")

    return check


def open_unit(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not (0 < value < 1)
        or math.isnan(value)
    ):
        raise ValueError(
            f"{name}: must be a number in the open interval (0, 1), got {value!r}"
        )


def positive(hi=None):
    def check(name, value):
        if (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not value > 0
            or (hi is not None and value > hi)
        ):
            raise ValueError(
                f"{name}: must be a number > 0{f' and <= {hi}' if hi else ''}, got"
                f" {value!r}"
            )

    return check


def above_one(hi):
    """A number > 1 and <= ``hi`` (a growth factor)."""

    def check(name, value):
        if (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not 1 < value <= hi
        ):
            raise ValueError(f"{name}: must be a number > 1 and <= {hi}, got {value!r}")

    return check


def list_of(item_check):
    def check(name, values):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name}: must be a non-empty list, got {values!r}")
        for i, value in enumerate(values):
            item_check(f"{name}[{i}]", value)

    return check


def seed_target_pairs(name, values):
    """A (possibly empty) list of [seed, target_label] pairs."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(
            f"{name}: must be a list of [seed, target_label] pairs, got {values!r}"
        )
    for i, pair in enumerate(values):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(
                f"{name}[{i}]: must be a [seed, target_label] pair, got {pair!r}"
            )
        integer(0, 2**31 - 1)(f"{name}[{i}][0] (seed)", pair[0])
        integer(0, 9)(f"{name}[{i}][1] (target_label)", pair[1])


def silhouette(name, value):
    if isinstance(value, bool) or not isinstance(value, Real) or not (-1 <= value <= 1):
        raise ValueError(f"{name}: must be a number between -1 and 1, got {value!r}")


def choice(options):
    def check(name, value):
        if value not in options:
            raise ValueError(
                f"{name}: must be one of {', '.join(map(repr, options))}, got {value!r}"
            )

    return check


def odd_kernel(name, value):
    integer(1, 27)(name, value)
    if value % 2 == 0:
        raise ValueError(
            f"{name}: must be an odd integer between 1 and 27, got {value!r}"
        )


def device(name, value):
    if not isinstance(value, str) or not (
        value in {"auto", "cpu"} or value.startswith("cuda")
    ):
        raise ValueError(f"{name}: must be 'auto', 'cpu' or 'cuda[:N]', got {value!r}")
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"{name}: {value!r} asked for but CUDA is not available here; use 'auto' or"
            " 'cpu'"
        )
