"""One-step prediction for one or many defect structures.

:class:`Predictor` owns a network on a device and turns (structure, host)
pairs into relaxed positions: match → graph → batched forward → positions.
It is shared by :class:`~ase_definet.relax.DefiNetRelaxer`, the CLI and the
evaluation code, so there is one prediction path.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms
from torch import nn

from .encoding import FORCES_ARRAY
from .errors import DeviceError, StructureTooLargeError, UnsupportedStructureError
from .graph import Graph, build_graph, collate
from .labels import defect_labels
from .match import DEFAULT_TOLERANCE, HostMatch, match_host
from .process import check_threads, torch_threads
from .model.ensemble import DefiNetEnsemble
from .scope import check_scope
from .uncertainty import member_sigma, parse_policy

#: Activation bytes per (edge × feature) of one forward pass: the peak-RSS growth
#: of a 768-atom MoS2 forward was 42 (paper config) to 62 (default) bytes.
_BYTES_PER_EDGE_FEATURE = 64

#: Edges × hidden features per forward pass on CPU (64 MB per float32 tensor;
#: measured: paper config batch 32 at 3.7 struct/s with it, 2.5 without).
CPU_CHUNK_EDGE_FEATURES = 1 << 24


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CUDA if available, else CPU; a missing CUDA is a clear error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"unknown device {device!r}: {err}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {str(device)!r} was requested but this torch "
                          f"({torch.__version__}) sees no CUDA device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device {str(device)!r} was requested but only "
                          f"{torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type not in ("cpu", "cuda"):
        # mps, xpu, ...: a backend torch was not built with fails here, not mid-run.
        try:
            torch.empty(1, device=dev)
        except (RuntimeError, AssertionError) as err:
            raise DeviceError(f"device {str(device)!r} is not available: {err}") from err
    return dev


@contextmanager
def deterministic_mode(enabled: bool, device: torch.device | None = None):
    """Force deterministic kernels (GPU scatter sums) inside the block.

    A no-op on CPU, whose kernels are already deterministic (and switching the
    global flag costs seconds of imports on first use).
    """
    if not enabled or (device is not None and device.type == "cpu"):
        yield
        return
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


def check_supported(match: HostMatch, symbols: list[str], card: dict,
                    strict: bool = True) -> None:
    """Compare elements and defect types with a model card.

    Raises
    ------
    UnsupportedStructureError
        If ``strict`` and something lies outside the card; otherwise warns.
    """
    if not card:
        return
    problems = []
    elements = set(card.get("elements", []))
    if elements and not set(symbols) <= elements:
        problems.append(f"elements {sorted(set(symbols) - elements)} are not in the "
                        f"model card ({', '.join(sorted(elements))})")
    defects = set(card.get("defects", []))
    if defects and not defect_labels(match) <= defects:
        problems.append(f"defect types {sorted(defect_labels(match) - defects)} are not "
                        f"in the model card ({', '.join(sorted(defects))})")
    if problems:
        msg = "; ".join(problems)
        if strict:
            raise UnsupportedStructureError(
                msg + ". Pass strict=False (CLI: --no-strict) to predict anyway.")
        warnings.warn(msg + "; predicting anyway (strict=False)", stacklevel=3)


@dataclass
class Prediction:
    """Predicted relaxed positions of one structure.

    For an ensemble model ``sigma`` holds each atom's calibrated uncertainty in Å
    (:mod:`ase_definet.uncertainty`), ``raw_positions`` the ensemble mean before the
    uncertainty policy, ``policy`` its name and ``withheld`` whether the policy kept
    the input positions; a single model leaves them ``None`` / ``"none"`` / False.
    """

    positions: np.ndarray
    match: HostMatch
    timings: dict = field(default_factory=dict)
    sigma: np.ndarray | None = None
    raw_positions: np.ndarray | None = None
    policy: str = "none"
    withheld: bool = False

    def uncertainty(self) -> dict:
        """Keyword arguments of :func:`~ase_definet.checks.apply_prediction` that
        record the uncertainty (empty for a single model)."""
        if self.sigma is None:
            return {}
        return {"sigma": self.sigma, "policy": self.policy, "withheld": self.withheld}


class Predictor:
    """A DefiNet network on a device, ready to predict.

    Parameters
    ----------
    model : None, str, path or torch.nn.Module
        ``None``: the shipped default; a registry name; a checkpoint path; or a
        :class:`~ase_definet.model.DefiNet` instance. Names and paths are loaded
        once per process and device and shared (:mod:`ase_definet.model_cache`):
        do not train or modify ``self.model``;
        ``ase_definet.model_cache.clear_model_cache()`` frees it.
    device : None, "cpu", "cuda", ...
        ``None`` uses CUDA when available.
    strict : bool
        Refuse structures whose elements or defect types are outside the
        model card (``False``: warn and predict).
    deterministic : bool
        Deterministic kernels on GPU (CPU results are always reproducible).
    max_memory_gb : float
        Estimated activation memory allowed per forward pass; batches are cut
        to fit, and a single structure that alone exceeds it is refused with
        :class:`~ase_definet.errors.StructureTooLargeError`.
    threads : int, optional
        torch threads for each :meth:`predict` call, restored afterwards
        (``None``: torch's current setting). Beside another busy process use 1.
    tolerance : float
        Host-matching tolerance in Å used when a call gives none (``definet
        --tolerance``): an atom farther from every host site is an interstitial.
    uncertainty_policy : str, optional
        What an ensemble model does where its members disagree
        (:mod:`ase_definet.uncertainty`): ``"none"`` (the raw mean),
        ``"shrink:L"``, ``"withhold:T"`` or both joined by ``+``. ``None``: the
        policy the model's card names (``"none"`` if it names none). A policy
        other than ``"none"`` needs an ensemble.

    Notes
    -----
    The process's malloc is left alone; the ``definet`` command opts in to
    :func:`ase_definet.process.keep_freed_memory`, and so may a caller.
    """

    def __init__(self, model=None, device=None, strict: bool = True,
                 deterministic: bool = False, max_memory_gb: float = 8.0,
                 threads: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 uncertainty_policy: str | None = None):
        self.device = resolve_device(device)
        self.tolerance = float(tolerance)
        self.threads = check_threads(threads)
        if isinstance(model, nn.Module):
            self.model: nn.Module = model.to(self.device).eval()
        else:
            from .model_cache import cached_model
            self.model = cached_model(model, self.device)
        self.config = self.model.config
        self.card = getattr(self.model, "card", {}) or {}
        self.members = isinstance(self.model, DefiNetEnsemble)
        uncertainty = self.card.get("uncertainty", {}) if self.members else {}
        self.sigma_scale = float(uncertainty.get("scale", 1.0))
        self.policy = parse_policy(uncertainty.get("policy") if uncertainty_policy is None
                                   else uncertainty_policy)
        if self.policy.name != "none" and not self.members:
            raise ValueError(f"uncertainty_policy {self.policy.name!r} needs an ensemble "
                             "model (a single model has no sigma); use 'none'")
        self.strict = strict
        self.deterministic = deterministic
        self.max_memory_gb = float(max_memory_gb)
        # On CPU a batch is cut where one edge-sized feature tensor would
        # outgrow the cache: larger batches only add memory traffic
        # (benchmarks/inference.py, batched throughput).
        self.chunk_edge_features = CPU_CHUNK_EDGE_FEATURES if self.device.type == "cpu" \
            else float("inf")

    # ------------------------------------------------------------ preparation
    def prepare(self, atoms: Atoms, host, tolerance: float | None = None,
                forces: np.ndarray | None = None) -> tuple[HostMatch, Graph, dict]:
        """Match and build the graph of one structure; returns timings in s.

        ``tolerance`` ``None`` uses the predictor's :attr:`tolerance`. A model
        with ``force_input`` reads ``forces`` (eV/Å, ``(len(atoms), 3)``, at the
        unrelaxed input), else ``atoms.arrays["unrelaxed_forces"]``, else asks the
        calculator attached to ``atoms`` for them (one extra call; timed as ``"forces"``).
        """
        t0 = time.perf_counter()
        t_forces = 0.0
        if not self.config.force_input:
            forces = None
        elif forces is None:
            # forces that came with the structure (extxyz array, a labelled store)
            forces = atoms.arrays.get(FORCES_ARRAY)
            if forces is None:
                if atoms.calc is None:
                    raise ValueError(
                        "this model reads the forces at the unrelaxed input "
                        "(force_input): attach a calculator to the structure or pass "
                        f"forces= or atoms.arrays[{FORCES_ARRAY!r}] (definet: "
                        "--input-forces NPZ)")
                forces = atoms.get_forces()
                t_forces = time.perf_counter() - t0
                t0 = time.perf_counter()
        match = match_host(atoms, host,
                           tolerance=self.tolerance if tolerance is None else tolerance)
        t1 = time.perf_counter()
        check_supported(match, atoms.get_chemical_symbols(), self.card, self.strict)
        # the host as given (match.host is rebuilt per structure); its scope is cached
        check_scope(host, atoms, self.card, self.strict)
        graph = build_graph(match, atoms.cell.array, atoms.pbc | match.host.pbc,
                            self.config.cutoff, self.config.max_neighbors, forces=forces)
        t2 = time.perf_counter()
        self._check_memory([graph])
        timings = {"match": t1 - t0, "graph": t2 - t1}
        return match, graph, dict(timings, forces=t_forces) if t_forces else timings

    def _memory_gb(self, n_edges: int) -> float:
        return n_edges * self.config.hidden * _BYTES_PER_EDGE_FEATURE / 1e9

    def _check_memory(self, graphs: list[Graph]) -> None:
        g = max(graphs, key=lambda g: g.num_edges)
        need = self._memory_gb(g.num_edges)
        if need > self.max_memory_gb:
            raise StructureTooLargeError(
                f"a structure with {g.num_nodes} nodes and {g.num_edges} edges needs "
                f"about {need:.1f} GB of activations, above max_memory_gb="
                f"{self.max_memory_gb:g}; raise the limit if the machine has the memory")

    # ------------------------------------------------------------ forward
    def forward_graphs(self, graphs: list[Graph], members: bool = False) -> list[np.ndarray]:
        """Displacements (float64 numpy, all nodes) of each graph, batched to fit memory.

        ``members=True`` returns each member's, ``(K, N, 3)`` per graph (``K = 1`` for
        a single model); otherwise ``(N, 3)``, the ensemble mean for an ensemble.
        """
        out: list[np.ndarray] = []
        chunk: list[Graph] = []
        edges = 0
        for g in graphs:
            if chunk and (self._memory_gb(edges + g.num_edges) > self.max_memory_gb
                          or (edges + g.num_edges) * self.config.hidden > self.chunk_edge_features):
                out += self._forward_chunk(chunk)
                chunk, edges = [], 0
            chunk.append(g)
            edges += g.num_edges
        if chunk:
            out += self._forward_chunk(chunk)
        return out if members else [d.mean(axis=0) for d in out]

    def _forward_chunk(self, graphs: list[Graph]) -> list[np.ndarray]:
        """``(K, N, 3)`` member displacements of each graph of one batch."""
        b = collate(graphs).to(self.device)
        net = self.model.forward_members if self.members else self.model
        with torch.inference_mode(), deterministic_mode(self.deterministic, self.device):
            disp = net(b.numbers, b.markers, b.edge_src, b.edge_dst, b.edge_vec,
                       b.batch, b.n_graphs, **b.model_kwargs(self.config))
        disp = disp.to("cpu", torch.float64).numpy().reshape(-1, b.num_nodes, 3)
        sizes = [g.num_nodes for g in graphs]
        return np.split(disp, np.cumsum(sizes)[:-1], axis=1)

    def predict(self, atoms_list: list[Atoms], hosts, tolerance: float | None = None,
                batch_size: int = 8, forces: list | None = None) -> list[Prediction]:
        """Relaxed positions of many structures.

        Parameters
        ----------
        atoms_list : list of ase.Atoms
        hosts : host or list of hosts
            One host for all structures, or one per structure.
        tolerance : float, optional
            Host-matching tolerance in Å (``None``: :attr:`tolerance`).
        batch_size : int
            Structures per forward pass (also cut by ``max_memory_gb``).
        forces : list of arrays, optional
            For a ``force_input`` model: each structure's forces at its input
            (eV/Å; an entry ``None`` asks the structure's calculator).
        """
        if not isinstance(hosts, (list, tuple)):
            hosts = [hosts] * len(atoms_list)
        if forces is None:
            forces = [None] * len(atoms_list)
        if len(forces) != len(atoms_list):
            raise ValueError(f"{len(forces)} force arrays for {len(atoms_list)} structures")
        with torch_threads(self.threads):
            return self._predict(atoms_list, hosts, tolerance, batch_size, forces)

    def _predict(self, atoms_list, hosts, tolerance, batch_size, forces) -> list[Prediction]:
        preds: list[Prediction] = []
        for start in range(0, len(atoms_list), max(1, batch_size)):
            part = atoms_list[start:start + batch_size]
            stop = start + batch_size
            prepared = [self.prepare(a, h, tolerance, f)
                        for a, h, f in zip(part, hosts[start:stop], forces[start:stop])]
            t0 = time.perf_counter()
            disps = self.forward_graphs([g for _, g, _ in prepared], members=True)
            t_net = (time.perf_counter() - t0) / len(part)
            for a, (m, _, t), d in zip(part, prepared, disps):
                preds.append(self._prediction(a, m, d[:, :len(a)], dict(t, network=t_net)))
        return preds

    def _prediction(self, atoms: Atoms, match: HostMatch, member_disp: np.ndarray,
                    timings: dict) -> Prediction:
        """One structure's prediction from its members' displacements ``(K, n, 3)``."""
        mean = member_disp.mean(axis=0)
        unrelaxed = atoms.get_positions()
        if not self.members:
            return Prediction(unrelaxed + mean, match, timings)
        sigma = self.sigma_scale * member_sigma(member_disp)
        disp, withheld = self.policy.apply(mean, sigma)
        return Prediction(unrelaxed + disp, match, timings, sigma=sigma,
                          raw_positions=unrelaxed + mean, policy=self.policy.name,
                          withheld=withheld)
