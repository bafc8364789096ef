"""Process-wide settings, applied only where the caller opts in.

A library must not change the process of the program that imports it, so
nothing here runs on import or from :class:`~ase_definet.inference.Predictor`:

- :func:`keep_freed_memory` is called by the ``definet`` command line and by our
  own spawned worker processes (:func:`~ase_definet.data.worker.tune_worker`);
  a Python user may call it for their own process;
- :func:`torch_threads` is what ``threads=N`` of ``Predictor`` and
  ``DefiNetRelaxer`` does: torch's thread count for the duration of a
  prediction (and of the residual steps), restored afterwards.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from contextlib import contextmanager

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# Up to 1 GiB stays in the heap: a CHGNet worker's working set on a 432-atom cell is
# a few hundred MiB, a DefiNet forward's edge tensors tens of MiB each, so their
# buffers are reused between calls instead of being faulted in again.
SETTINGS = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 256 << 20}


def keep_freed_memory() -> bool:
    """Raise glibc's malloc thresholds so that freed memory stays in this process.

    Every CHGNet force call and every DefiNet forward pass allocates and frees
    many tensors of a few MiB or more. With glibc's defaults each large free goes
    back to the kernel and the next allocation faults the same pages in again
    (measured by ``benchmarks/oracle_speed.py`` and ``benchmarks/inference.py``).
    Opt-in: call it for a process you own. ``ASE_DEFINET_TUNE_MALLOC=0`` turns it
    off (for the ``definet`` command too); off glibc (macOS, musl) it is a no-op.

    Returns
    -------
    bool
        True if every setting was accepted, False where it is disabled, glibc's
        ``mallopt`` is unavailable, or it refused one (nothing else changes then).
    """
    if os.environ.get("ASE_DEFINET_TUNE_MALLOC", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())


def check_threads(threads: int | None) -> int | None:
    """``None`` (leave torch's setting alone) or a positive int, else ValueError."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``torch.set_num_threads(threads)``, then restore the old count.

    ``None`` leaves the setting alone. Beside another busy process, one thread
    avoids oversubscribing the cores (a CHGNet residual relaxation went from 8 s
    with one thread to 116 s with torch's default beside a busy process).
    """
    import torch
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
