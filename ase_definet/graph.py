"""Periodic neighbour graphs (matscipy) and batching of many structures.

A graph holds every node of a defect structure (real atoms, then vacancy
placeholders), directed edges ``j → i`` within the cutoff, and for every edge
the Cartesian lattice shift that makes ``r_j + shift - r_i`` the bond vector.
Edges are built once on the unrelaxed structure; the model recomputes bond
vectors from its updated positions in every layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matscipy.neighbours import neighbour_list

from .match import VACANCY, HostMatch

#: Neighbours whose distances differ by less than this (Å) are one shell.
SHELL_TOLERANCE = 1e-3


def radius_graph(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float,
                 max_neighbors: int | None = None) -> tuple[np.ndarray, np.ndarray,
                                                            np.ndarray]:
    """Periodic radius graph with at most ``max_neighbors`` neighbours per node.

    Neighbours are ranked by distance. When the limit falls inside a shell of
    equidistant neighbours (within :data:`SHELL_TOLERANCE`), the whole shell is
    dropped rather than cut by an arbitrary tie-break: the graph then respects
    the crystal's symmetry and does not depend on atom order or orientation.

    Returns
    -------
    src, dst : numpy.ndarray of int64
        Edge ``e`` carries a message from node ``src[e]`` to node ``dst[e]``.
    shift : numpy.ndarray
        ``(E, 3)`` Cartesian lattice shifts: bond = ``r[src] + shift - r[dst]``.
    """
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=float)
    # matscipy needs a non-degenerate cell even along non-periodic axes.
    dst, src, dist, shift_int = neighbour_list(
        "ijdS", positions=np.asarray(positions, dtype=float), cell=cell, pbc=pbc,
        cutoff=float(cutoff))
    if max_neighbors is not None and len(dst):
        order = np.lexsort((dist, dst))
        dst, src, dist, shift_int = dst[order], src[order], dist[order], shift_int[order]
        # Within each node's sorted list, count neighbours closer than d + tol.
        key = dst * (2.0 * cutoff + 1.0) + dist
        upto = np.searchsorted(key, key + SHELL_TOLERANCE, side="left")
        start = np.searchsorted(dst, dst, side="left")
        keep = (upto - start) <= max_neighbors
        dst, src, shift_int = dst[keep], src[keep], shift_int[keep]
    shift = shift_int.astype(float) @ cell
    return src.astype(np.int64), dst.astype(np.int64), shift


@dataclass
class Graph:
    """A (possibly batched) defect-explicit graph as torch tensors.

    Attributes
    ----------
    numbers, markers : torch.LongTensor
        ``(N,)`` atomic numbers and markers (0 pristine, 1 substitution, 2 vacancy).
    positions : torch.Tensor
        ``(N, 3)`` unrelaxed positions (float64 on the host side; the model
        works on displacements, so float32 there loses nothing).
    edge_src, edge_dst : torch.LongTensor
        ``(E,)`` message direction ``src → dst``.
    edge_vec : torch.Tensor
        ``(E, 3)`` unrelaxed bond vectors ``r[src] + shift - r[dst]``.
    batch : torch.LongTensor
        ``(N,)`` graph index of every node.
    n_graphs : int
    """

    numbers: torch.Tensor
    markers: torch.Tensor
    positions: torch.Tensor
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    edge_vec: torch.Tensor
    batch: torch.Tensor
    n_graphs: int = 1

    @property
    def real(self) -> torch.Tensor:
        """Mask of real atoms (not vacancy placeholders)."""
        return self.markers != VACANCY

    def to(self, device, dtype: torch.dtype | None = None) -> Graph:
        """Move to a device; ``dtype`` converts the floating tensors except positions."""
        f = (lambda t: t.to(device, dtype)) if dtype is not None else (lambda t: t.to(device))
        return Graph(self.numbers.to(device), self.markers.to(device),
                     self.positions.to(device), self.edge_src.to(device),
                     self.edge_dst.to(device), f(self.edge_vec), self.batch.to(device),
                     self.n_graphs)

    @property
    def num_nodes(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_src.shape[0])


def build_graph(match: HostMatch, cell: np.ndarray, pbc, cutoff: float,
                max_neighbors: int | None) -> Graph:
    """Graph of one matched defect structure (placeholders included)."""
    src, dst, shift = radius_graph(match.positions, cell, pbc, cutoff, max_neighbors)
    vec = match.positions[src] + shift - match.positions[dst]
    n = len(match.markers)
    return Graph(
        numbers=torch.as_tensor(match.numbers, dtype=torch.long),
        markers=torch.as_tensor(match.markers, dtype=torch.long),
        positions=torch.as_tensor(match.positions, dtype=torch.float64),
        edge_src=torch.as_tensor(src), edge_dst=torch.as_tensor(dst),
        edge_vec=torch.as_tensor(vec, dtype=torch.float32),
        batch=torch.zeros(n, dtype=torch.long), n_graphs=1)


def collate(graphs: list[Graph]) -> Graph:
    """Concatenate graphs of any sizes into one batched graph."""
    if len(graphs) == 1:
        return graphs[0]
    sizes = torch.tensor([g.num_nodes for g in graphs])
    offsets = torch.cumsum(sizes, 0) - sizes
    n_edges = torch.tensor([g.num_edges for g in graphs])
    edge_off = torch.repeat_interleave(offsets, n_edges)
    batch_sizes = torch.tensor([g.n_graphs for g in graphs])
    graph_off = torch.repeat_interleave(torch.cumsum(batch_sizes, 0) - batch_sizes, sizes)
    return Graph(
        numbers=torch.cat([g.numbers for g in graphs]),
        markers=torch.cat([g.markers for g in graphs]),
        positions=torch.cat([g.positions for g in graphs]),
        edge_src=torch.cat([g.edge_src for g in graphs]) + edge_off,
        edge_dst=torch.cat([g.edge_dst for g in graphs]) + edge_off,
        edge_vec=torch.cat([g.edge_vec for g in graphs]),
        batch=torch.cat([g.batch for g in graphs]) + graph_off,
        n_graphs=int(batch_sizes.sum()))
