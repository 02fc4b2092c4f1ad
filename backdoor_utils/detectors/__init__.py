"""Poison detectors, one module each: activation clustering
(:mod:`.activation_clustering`, Chen et al. 2018) and spectral signatures
(:mod:`.spectral_signatures`, Tran et al. 2018), which flag training images, and STRIP
(:mod:`.strip`, Gao et al. 2019), which screens inputs at inference time.
``detectors.get("activation_clustering")`` builds one by name.
"""

from . import (
    activation_clustering,
    spectral_signatures,
    strip,
)  # noqa: F401  (registers the built-in detectors)
from .base import REGISTRY, Detector, get, names, register

__all__ = [
    "REGISTRY",
    "Detector",
    "activation_clustering",
    "get",
    "names",
    "register",
    "spectral_signatures",
    "strip",
]
