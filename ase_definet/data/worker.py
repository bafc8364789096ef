"""Settings an oracle worker process applies to itself, and only to itself.

Spawned workers of ``generate``, ``tighten``, ``residual`` and
``experiments/probes/oracle_noise.py`` run CHGNet for hours; two process-wide settings make
each step faster without changing its result (``benchmarks/oracle_speed.py``
measures both, ``tests/test_oracle.py`` checks trajectories stay bit-identical):

- glibc keeps freed memory in the heap (:func:`ase_definet.process.keep_freed_memory`);
- subnormal floats are flushed to zero (``torch.set_flush_denormal``): CHGNet's
  forward and backward passes produce values below 1e-38 (which ops, not traced),
  every op touching them takes the CPU's slow path, and their contribution is
  below float32 resolution.

A caller's own process is never changed: these are set only in pool workers.
"""
from __future__ import annotations

from ..process import keep_freed_memory


def tune_worker() -> dict[str, bool]:
    """Apply the worker settings to this process.

    Returns
    -------
    dict
        ``{"keep_freed_memory": bool, "flush_denormal": bool}``: whether each was
        accepted (False off glibc, or on a CPU without flush-to-zero support).
    """
    import torch
    return {"keep_freed_memory": keep_freed_memory(),
            "flush_denormal": bool(torch.set_flush_denormal(True))}
