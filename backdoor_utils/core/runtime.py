"""Process-wide settings that make training faster without changing a single number, and
the name of the processor it runs on (:func:`processor_name`, for the chapters' ends and
the bench).

glibc's malloc returns every large block (above a threshold that starts at 128 KiB) to
the system with ``munmap`` when it is freed and maps it afresh - zero-filled, page by
page - at the next allocation. A training step allocates and frees the same
activation-sized blocks (tens of MB) every batch, so a CPU run spends a good part of its
time in page faults (system time). :func:`tune_malloc` keeps freed memory in the heap
for reuse instead. Measured on a 2-core AVX2 CPU: 20,000 images x 2 epochs took 11.8 s
before and 10.3 s after, with bit-identical weights (the tensors' contents and alignment
do not depend on where the allocator finds their memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Keep large freed blocks in the heap (glibc only; a no-op elsewhere or with
    ``BACKDOOR_TUNE_MALLOC=0``). Returns True when the settings were applied."""
    if os.environ.get("BACKDOOR_TUNE_MALLOC") == "0" or not sys.platform.startswith(
        "linux"
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (
        OSError,
        AttributeError,
    ):  # not glibc (e.g. musl): leave the allocator alone
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (
                M_MMAP_THRESHOLD,
                32 << 20,
            ),  # blocks up to 32 MiB come from the heap (glibc's maximum)
            (M_TRIM_THRESHOLD, 1 << 30),  # ... and stay there when freed
            (M_TOP_PAD, 64 << 20),  # grow the heap in large steps
        )
    )


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads for each of ``workers`` local processes sharing the machine's cores
    (at least one): two 2-thread jobs on 2 cores run several times slower than one, so
    each gets its share.
    """
    if workers < 1:
        raise ValueError(f"workers: must be at least 1, got {workers}")
    return max(1, (cores or os.cpu_count() or 1) // workers)


def processor_name() -> str:
    """The CPU's model name as the system reports it (``/proc/cpuinfo`` on Linux), else
    what :func:`platform.processor` knows, else "unknown CPU"."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
