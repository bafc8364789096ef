"""A sample as training tensors (graph, target displacement, real-atom mask) and
the per-structure losses over real atoms (vacancy placeholders excluded)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .graph import Graph, build_graph, collate
from .model import get_config

#: Per-atom array of a sample's unrelaxed structure (``sample.atoms.arrays``)
#: holding the oracle's forces there, eV/Å, in atom order; read when the
#: network has ``force_input`` on. A plain array, not ``atoms.calc``, so it
#: survives extxyz round trips under its own name.
FORCES_ARRAY = "unrelaxed_forces"


@dataclass
class Encoded:
    """A sample turned into tensors: graph, target displacement, real-atom mask."""

    graph: Graph
    target: torch.Tensor
    real: torch.Tensor
    id: str
    group: str = ""


def encode(samples, config) -> list[Encoded]:
    """Match each sample to its host and build its graph (once, before training).

    With ``force_input`` on, each sample's forces come from
    ``atoms.arrays[FORCES_ARRAY]``.

    Raises
    ------
    ValueError
        ``force_input`` is on and a sample has no forces.
    """
    cfg = get_config(config)
    out = []
    for s in samples:
        m = s.match
        forces = None
        if cfg.force_input:
            forces = s.atoms.arrays.get(FORCES_ARRAY)
            if forces is None:
                raise ValueError(f"sample {s.info.get('id', len(out))!r} has no "
                                 f"atoms.arrays[{FORCES_ARRAY!r}], which force_input needs")
        g = build_graph(m, s.atoms.cell.array, s.atoms.pbc | m.host.pbc, cfg.cutoff,
                        cfg.max_neighbors, forces=forces)
        target = torch.zeros((len(m.markers), 3), dtype=torch.float32)
        target[:len(s.atoms)] = torch.as_tensor(s.displacement, dtype=torch.float32)
        out.append(Encoded(g, target, g.real, str(s.info.get("id", len(out))), s.group))
    return out


def dummy_mae(item: Encoded) -> float:
    """Coordinate MAE of the Dummy (zero displacement) on one structure, in Å."""
    w = item.real.to(item.target.dtype)
    return float((item.target.abs().mean(dim=-1) * w).sum() / w.sum().clamp_min(1.0))


def group_scales(items: list[Encoded], floor: float = 1e-3) -> dict[str, float]:
    """Mean Dummy MAE per group, and under ``""`` over all items (for unseen groups).

    ``floor`` (Å) bounds the weight of a group whose structures barely move, so a
    group of near-zero displacements cannot take over the loss.
    """
    by: dict[str, list[float]] = {"": []}
    for e in items:
        err = dummy_mae(e)
        by.setdefault(e.group, []).append(err)
        by[""].append(err)
    scales = {g: max(float(np.mean(v)), floor) for g, v in by.items() if v}
    scales.setdefault("", 1.0)   # no training items
    return scales


def collate_items(items: list[Encoded], device) -> tuple[Graph, torch.Tensor, torch.Tensor]:
    """One batch on ``device``: the collated graph, stacked targets, real-atom mask."""
    g = collate([e.graph for e in items]).to(device)
    return g, torch.cat([e.target for e in items]).to(device), g.real


def structure_losses(pred: torch.Tensor, target: torch.Tensor, real: torch.Tensor,
                     batch: torch.Tensor, n_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-structure mean Euclidean error and coordinate MAE over real atoms."""
    w = real.to(pred.dtype)
    dist_err = torch.linalg.vector_norm(pred - target, dim=-1) * w
    abs_err = (pred - target).abs().mean(dim=-1) * w
    n = torch.zeros(n_graphs, dtype=pred.dtype, device=pred.device).index_add_(0, batch, w)
    n = n.clamp_min(1.0)
    per_dist = torch.zeros_like(n).index_add_(0, batch, dist_err) / n
    per_mae = torch.zeros_like(n).index_add_(0, batch, abs_err) / n
    return per_dist, per_mae

