"""backdoor_utils: the helper package of backdoor-book (backdoor attacks, detection and
defenses on MNIST)."""

from .core.runtime import tune_malloc

__version__ = "0.1.0"

#: True when glibc's allocator was told to keep freed memory for reuse (see
#: :mod:`.runtime`).
MALLOC_TUNED = tune_malloc()
