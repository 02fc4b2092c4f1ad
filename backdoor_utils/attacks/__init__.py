"""Backdoor attacks, one module each, found by name:
``attacks.get("noise", eps=4 / 255)``.

A new attack is one module: a frozen dataclass subclassing :class:`~.base.Attack`,
decorated with :func:`~.base.register`, imported below (or anywhere before it is asked
for by name).
"""

# importing the built-in attacks' modules registers them
from . import (
    adaptive_blend,
    blended,
    blur,
    learned,
    noise,
    patch,
    sig,
    wanet,
)
from .base import (
    POLICIES,
    REGISTRY,
    Attack,
    PoisonedDataset,
    choose_poison_indices,
    clean_label,
    dirty_label,
    get,
    policy_function,
    names,
    parameter_rules,
    register,
)

__all__ = [
    "adaptive_blend",
    "blended",
    "blur",
    "learned",
    "noise",
    "patch",
    "sig",
    "wanet",
    "Attack",
    "POLICIES",
    "PoisonedDataset",
    "REGISTRY",
    "choose_poison_indices",
    "clean_label",
    "dirty_label",
    "policy_function",
    "get",
    "names",
    "parameter_rules",
    "register",
]
