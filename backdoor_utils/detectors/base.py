"""What every poison detector is, and the registry that finds one by name.

A detector reads the model, the training images and their (possibly poisoned) labels -
never the true poison flags - and returns a result whose ``flags`` (bool [N]) mark the
training images it judges poisoned. The orchestration scores those flags against the
truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..core.column import Column
from ..core.registry import Registry, check_rules


@dataclass(frozen=True)
class Detector:
    """Base of every detector: subclasses are frozen dataclasses whose fields are the
    detector's parameters (checked by ``rules`` when built), set ``name`` and implement
    :meth:`detect`.

    ``train(x, y, config, device)``, when given, trains any model the detector needs
    (the orchestration passes a cached trainer)."""

    name: ClassVar[str] = ""
    rules: ClassVar[dict] = {}
    #: the detector's column in the attack x defense matrix (None: not in it)
    column: ClassVar[Column | None] = None

    def __post_init__(self):
        check_rules(self)

    def detect(
        self,
        model,
        x: torch.Tensor,
        y: torch.Tensor,
        seed: int = 0,
        device: str = "auto",
        train=None,
    ):
        """A result with ``flags``: bool [N], True for the training images judged
        poisoned."""
        raise NotImplementedError


_REGISTRY = Registry("detector")
REGISTRY = _REGISTRY.classes
register, names, get = _REGISTRY.register, _REGISTRY.names, _REGISTRY.get
