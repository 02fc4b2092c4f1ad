"""The allocator setting (backdoor_utils.core.runtime): large blocks come from the heap,
numbers unchanged."""

import os
import subprocess
import sys

import pytest

# a 20 MiB block (an activation tensor of a training batch): from the heap, or mmap-ed
# afresh?
PROBE = """
import ctypes, hashlib, torch, torch.nn.functional as F
import backdoor_utils
from backdoor_utils.core.models import SimpleCNN

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.mallinfo2.restype = ctypes.c_void_p, Mallinfo2
before = libc.mallinfo2().hblkhd
block = libc.malloc(20 << 20)
mmapped = libc.mallinfo2().hblkhd - before
libc.free(ctypes.c_void_p(block))

torch.manual_seed(0)
torch.set_num_threads(1)
m = SimpleCNN().to(memory_format=torch.channels_last)
opt = torch.optim.Adam(m.parameters())
x = torch.rand(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (256,))
for _ in range(5):
    loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()
print(backdoor_utils.MALLOC_TUNED, mmapped, digest)
"""


def _probe(tune: bool):
    env = {**os.environ, "BACKDOOR_TUNE_MALLOC": "1" if tune else "0"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tuned, mmapped, digest = out.split()
    return tuned == "True", int(mmapped), digest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_malloc_serves_large_blocks_from_the_heap_and_changes_no_weight():
    # a freed mmap-ed block goes back to the system and costs page faults when mapped
    # again: the training step's 10-25 MB activations (measured, AVX2 CPU, batch 256:
    # 470 instead of 2,502 page faults per step; 20,000 images x 2 epochs 10.3 s instead
    # of 11.8 s)
    tuned, mmapped_tuned, digest_tuned = _probe(True)
    untuned, mmapped_plain, digest_plain = _probe(False)
    assert tuned and not untuned
    assert mmapped_plain >= 20 << 20 and mmapped_tuned == 0
    assert digest_tuned == digest_plain  # the same weights, bit for bit


def test_threads_per_worker_shares_the_cores():
    from backdoor_utils.core.runtime import threads_per_worker

    assert threads_per_worker(1, cores=2) == 2
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(4, cores=2) == 1  # never zero threads
    assert threads_per_worker(3, cores=8) == 2
    with pytest.raises(ValueError, match="workers"):
        threads_per_worker(0)
