"""Periodic neighbour graphs (matscipy) and batching of many structures.

A graph holds every node of a defect structure (real atoms, then vacancy
placeholders), directed edges ``j → i`` within the cutoff, and for every edge
the Cartesian lattice shift that makes ``r_j + shift - r_i`` the bond vector.
Edges are built once on the unrelaxed structure; the model recomputes bond
vectors from its updated positions in every layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    cell : torch.Tensor, optional
        ``(n_graphs, 3, 3)`` lattice vectors (rows, Å, float64) of each graph;
        read by the long-range channel (``DefiNetConfig.long_range``).
    pbc : torch.BoolTensor, optional
        ``(n_graphs, 3)`` periodic axes of each graph.
    forces : torch.Tensor, optional
        ``(N, 3)`` oracle forces at the unrelaxed structure (eV/Å), zero on
        placeholders; read by ``DefiNetConfig.force_input``.
    """

    numbers: torch.Tensor
    markers: torch.Tensor
    positions: torch.Tensor
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    edge_vec: torch.Tensor
    batch: torch.Tensor
    n_graphs: int = 1
    cell: torch.Tensor | None = None
    pbc: torch.Tensor | None = None
    forces: torch.Tensor | None = None

    @property
    def real(self) -> torch.Tensor:
        """Mask of real atoms (not vacancy placeholders)."""
        return self.markers != VACANCY

    def to(self, device, dtype: torch.dtype | None = None) -> Graph:
        """Move to a device; ``dtype`` converts the floating tensors except the
        geometry (positions, cell), whose float64 the long-range phases need."""
        f = (lambda t: t.to(device, dtype)) if dtype is not None else (lambda t: t.to(device))

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Graph(self.numbers.to(device), self.markers.to(device),
                     self.positions.to(device), self.edge_src.to(device),
                     self.edge_dst.to(device), f(self.edge_vec), self.batch.to(device),
                     self.n_graphs, move(self.cell), move(self.pbc),
                     None if self.forces is None else f(self.forces))

    def model_kwargs(self, config: Any = None) -> dict[str, Any]:
        """Keyword arguments of :meth:`DefiNet.forward` beyond the positional ones.

        Parameters
        ----------
        config : DefiNetConfig, optional
            The network's configuration: only what its options read is returned
            (``positions``, ``cell``, ``pbc`` for ``long_range``; ``forces`` for
            ``force_input``), so a network without options, or a wrapper with
            the old seven-argument ``forward``, is called exactly as before.
            ``None``: everything the graph has.

        A needed argument the graph lacks is left out, and the network's own
        check raises a ValueError that names it.
        """
        want_geometry = config is None or bool(getattr(config, "long_range", 0))
        want_forces = config is None or bool(getattr(config, "force_input", False))
        out: dict[str, Any] = {}
        if want_geometry and self.cell is not None and self.pbc is not None:
            out.update(positions=self.positions, cell=self.cell, pbc=self.pbc)
        if want_forces and self.forces is not None:
            out["forces"] = self.forces
        return out

    @property
    def num_nodes(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_src.shape[0])


def build_graph(match: HostMatch, cell: np.ndarray, pbc, cutoff: float,
                max_neighbors: int | None, forces: np.ndarray | None = None) -> Graph:
    """Graph of one matched defect structure (placeholders included).

    Parameters
    ----------
    match : HostMatch
    cell, pbc
        The structure's lattice vectors (rows, Å) and periodic axes; kept on the
        graph for the long-range channel.
    cutoff, max_neighbors
        The network's graph radius (Å) and neighbour limit.
    forces : numpy.ndarray, optional
        Oracle forces at the unrelaxed structure (eV/Å), for
        ``DefiNetConfig.force_input``: ``(len(atoms), 3)`` for the real atoms
        in input order, or ``(N, 3)`` for all nodes. Placeholders get zero
        force either way (they are not atoms).

    Raises
    ------
    ValueError
        ``forces`` of another shape.
    """
    src, dst, shift = radius_graph(match.positions, cell, pbc, cutoff, max_neighbors)
    vec = match.positions[src] + shift - match.positions[dst]
    n = len(match.markers)
    node_forces = None
    if forces is not None:
        forces = np.asarray(forces, dtype=float)
        n_real = int((np.asarray(match.markers) != VACANCY).sum())
        if forces.shape not in ((n, 3), (n_real, 3)):
            raise ValueError(f"forces have shape {forces.shape}; expected ({n_real}, 3) "
                             f"for the real atoms or ({n}, 3) for all nodes")
        full = np.zeros((n, 3))
        full[:n_real] = forces[:n_real]     # real atoms come first, placeholders last
        node_forces = torch.as_tensor(full, dtype=torch.float32)
    return Graph(
        numbers=torch.as_tensor(match.numbers, dtype=torch.long),
        markers=torch.as_tensor(match.markers, dtype=torch.long),
        positions=torch.as_tensor(match.positions, dtype=torch.float64),
        edge_src=torch.as_tensor(src), edge_dst=torch.as_tensor(dst),
        edge_vec=torch.as_tensor(vec, dtype=torch.float32),
        batch=torch.zeros(n, dtype=torch.long), n_graphs=1,
        cell=torch.as_tensor(np.asarray(cell, dtype=float), dtype=torch.float64)[None],
        pbc=torch.as_tensor(np.asarray(pbc, dtype=bool).reshape(3))[None],
        forces=node_forces)


def _cat_optional(graphs: list[Graph], name: str) -> torch.Tensor | None:
    """``torch.cat`` of an optional field: None when no graph has it.

    Raises
    ------
    ValueError
        Some graphs have the field and others do not (a batch the network
        could not read consistently).
    """
    values = [getattr(g, name) for g in graphs]
    have = [v is not None for v in values]
    if not any(have):
        return None
    if not all(have):
        raise ValueError(f"{sum(have)} of {len(graphs)} graphs have {name!r}: "
                         "a batch needs it on all or none")
    return torch.cat(values)


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
        n_graphs=int(batch_sizes.sum()),
        cell=_cat_optional(graphs, "cell"), pbc=_cat_optional(graphs, "pbc"),
        forces=_cat_optional(graphs, "forces"))
