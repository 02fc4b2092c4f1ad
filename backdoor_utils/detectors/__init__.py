"""Poison detectors, one module each: activation clustering (:mod:`.activation_clustering`, Chen et
al. 2018). ``detectors.get("activation_clustering")`` builds one by name.
"""

from . import activation_clustering  # noqa: F401  (registers the built-in detectors)
from .base import REGISTRY, Detector, get, names, register

__all__ = ["REGISTRY", "Detector", "activation_clustering", "get", "names", "register"]
