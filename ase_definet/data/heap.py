"""Keep freed memory in the process heap during long oracle relaxations.

Every CHGNet force call builds and frees graph tensors of a few MiB. With
glibc's defaults each free above the trim/mmap thresholds goes back to the
kernel and the next call faults the same pages in again, so a worker spends a
large share of its time in the kernel. Raising the thresholds (``mallopt``)
keeps those pages in the heap. The gain is measured by
``benchmarks/oracle_speed.py``; off glibc (macOS, musl) this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# Up to 1 GiB per worker stays in the heap: a CHGNet worker's working set on a
# 432-atom cell is a few hundred MiB, so its buffers are reused between calls.
SETTINGS = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 256 << 20}


def keep_freed_memory() -> bool:
    """Raise glibc's malloc thresholds for this process.

    Returns
    -------
    bool
        True if every setting was accepted, False where glibc's ``mallopt``
        is unavailable or refused one (nothing else changes then).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
