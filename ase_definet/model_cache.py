"""Process-wide cache of prediction models.

Reading a checkpoint and building the network costs more than a prediction
(``benchmarks/inference.py``, fresh-relaxer loop), so a loop of
``DefiNetRelaxer(atoms, host=...)`` calls must not pay it every time. Each
checkpoint is loaded once per device and shared by every
:class:`~ase_definet.inference.Predictor` that names it.

Key: resolved file path, its sha256 from the registry (shipped models, verified
on the first load) or ``None`` (user files), the file's modification time, size
and inode (a rewritten or replaced file is read again), and the device.

The cached network is in eval mode with ``requires_grad=False`` on every
parameter. It is shared: do not train or modify ``Predictor.model``; use
:func:`ase_definet.weights.load_model` for a private copy. :func:`clear_model_cache`
drops every entry (frees the memory; the next prediction loads again).
"""
from __future__ import annotations

import threading

import torch
from torch import nn

_CACHE: dict[tuple, nn.Module] = {}
_LOCK = threading.Lock()


def cached_model(model: str | None, device: torch.device) -> nn.Module:
    """The network of a shipped name, checkpoint path or ``None`` (default) on ``device``.

    Loaded on first use (sha256 verified, ``weights_only=True``), then served
    from the cache. Raises what :func:`ase_definet.weights.load_model` raises.
    """
    from .weights import checkpoint_source, load_model
    path, digest, _ = checkpoint_source(model)
    try:
        stat = path.stat()
    except OSError:          # vanished since it was resolved: let the loader say so
        stat = None
    # inode: save_checkpoint replaces files atomically, so a rewrite is a new inode
    key = (str(path.resolve()), digest, stat and stat.st_mtime_ns, stat and stat.st_size,
           stat and stat.st_ino, str(device))
    with _LOCK:
        net = _CACHE.get(key)
        if net is None:
            net = load_model(model).to(device).eval().requires_grad_(False)
            for old in [k for k in _CACHE if (k[0], k[-1]) == (key[0], key[-1])]:
                del _CACHE[old]          # the same file before it was rewritten
            _CACHE[key] = net
    return net


def clear_model_cache() -> int:
    """Forget every cached network; returns how many were dropped."""
    with _LOCK:
        n = len(_CACHE)
        _CACHE.clear()
    return n
