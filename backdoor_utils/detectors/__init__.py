"""Poison detectors, one module each: activation clustering
(:mod:`.activation_clustering`, Chen et al. 2018) and spectral signatures
(:mod:`.spectral_signatures`, Tran et al. 2018), which flag training images, and the
input filters STRIP (:mod:`.strip`, Gao et al. 2019) and SCALE-UP (:mod:`.scale_up`, Guo
et al. 2023), which screen inputs at inference time; Confusion Training
(:mod:`.confusion_training`, Qi et al. 2023) flags training images with the help of a
small clean set.
``detectors.get("activation_clustering")`` builds one by name.
"""

# importing the built-in detectors' modules registers them, in the matrix's column order
from . import activation_clustering, spectral_signatures, strip  # noqa: F401, I001
from . import scale_up  # noqa: F401, E402
from . import confusion_training  # noqa: F401, E402
from .base import REGISTRY, Detector, get, names, register

__all__ = [
    "REGISTRY",
    "Detector",
    "activation_clustering",
    "confusion_training",
    "get",
    "names",
    "register",
    "scale_up",
    "spectral_signatures",
    "strip",
]
