"""Training DefiNet: single process or ``torchrun`` data parallel.

Recipe (NOTES.md §3): AdamW, gradient clipping, an exponential moving average
(EMA) of the weights used for validation and saving, ReduceLROnPlateau on
validation MAE, early stopping. Loss = mean per-atom Euclidean distance to the
relaxed positions over real atoms (vacancy placeholders excluded), averaged
per structure and then over structures.

Checkpoints (``last.pt`` every epoch, ``best.pt`` on a new best validation
MAE) hold the model, EMA, optimizer, scheduler, RNG states and counters, so a
killed run resumes exactly where its last epoch ended. Under ``torchrun`` each
rank takes an equal share of every global batch and gradients are averaged,
which reproduces the single-process update for the same global batch.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .graph import Graph, build_graph, collate
from .model import DefiNet, get_config
from .errors import CheckpointError
from .weights import model_from_checkpoint, read_checkpoint, save_checkpoint, sha256


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (all recorded in the checkpoint)."""

    model: dict | str = "default"
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 8
    epochs: int = 200
    clip_norm: float = 150.0
    ema_decay: float = 0.999
    plateau_factor: float = 0.8
    plateau_patience: int = 5
    min_lr: float = 1e-6
    early_stop: int = 10
    seed: int = 0
    deterministic: bool = False
    amp: bool = False
    max_time: float | None = None
    #: ``"none"``: the loss is the per-structure error in Å, so structures that move
    #: most (high density) dominate it. ``"group"``: each structure's error is
    #: divided by the Dummy MAE of its material/density group (mean over that
    #: group's training structures), so every group counts by its error relative
    #: to the Dummy: the quantity the model card's targets are stated in. The
    #: validation score that selects the best epoch is scaled the same way.
    balance: str = "none"
    #: Std (Å) of Gaussian noise added to every node's unrelaxed position in each
    #: training step, the target staying the relaxed position: the model learns
    #: that nearby starts relax to the same structure. Measured true for the CHGNet
    #: labels: FIRE from starts moved by 1e-3 Å ends within 1-11 % of the Dummy
    #: error of the label on 8 of 8 groups (benchmarks/oracle_noise.py).
    input_noise: float = 0.0
    extra: dict = field(default_factory=dict)


BALANCE = ("none", "group")


@dataclass
class Encoded:
    """A sample turned into tensors: graph, target displacement, real-atom mask."""

    graph: Graph
    target: torch.Tensor
    real: torch.Tensor
    id: str
    group: str = ""


def encode(samples, config) -> list[Encoded]:
    """Match each sample to its host and build its graph (once, before training)."""
    cfg = get_config(config)
    out = []
    for s in samples:
        m = s.match
        g = build_graph(m, s.atoms.cell.array, s.atoms.pbc | m.host.pbc, cfg.cutoff,
                        cfg.max_neighbors)
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


def _batch(items: list[Encoded], device):
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


class EMA:
    """Exponential moving average of parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.state_dict().values(), model.state_dict().values()):
            if s.dtype.is_floating_point:
                s.lerp_(p.detach(), 1.0 - self.decay)
            else:
                s.copy_(p)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Trainer:
    """Train a DefiNet on encoded samples, with exact resume.

    Parameters
    ----------
    train, val : list of Encoded
    out : path
        Run folder: ``last.pt``, ``best.pt``, ``metrics.csv``, ``config.json``.
    config : TrainConfig
    device : torch.device or str
    meta : dict
        Recorded in checkpoints (data manifest, split, ...).
    """

    def __init__(self, train: list[Encoded], val: list[Encoded], out: str | Path,
                 config: TrainConfig, device="cpu", meta: dict | None = None,
                 progress: bool = True):
        self.train_set, self.val_set = train, val
        self.out = Path(out)
        self.cfg = config
        self.device = torch.device(device)
        self.meta = dict(meta or {})
        self.progress = progress
        self.rank, self.world = _dist_info()
        if config.balance not in BALANCE:
            raise ValueError(f"balance={config.balance!r}; expected one of {BALANCE}")
        # fixed at the start from the training set, so a resumed run scales alike
        self.scales = group_scales(train) if config.balance == "group" else None
        if self.scales:
            self.meta["balance_scales"] = {g: round(v, 6) for g, v in self.scales.items()}
        self.generator = _seed_all(config.seed)
        # its own stream, so the data order does not depend on input_noise (A/B arms)
        self.noise_generator = torch.Generator().manual_seed(config.seed + 1)
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        self.model = DefiNet(config.model).to(self.device)
        self.ddp = (nn.parallel.DistributedDataParallel(self.model)
                    if self.world > 1 else self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="min", factor=config.plateau_factor,
            patience=config.plateau_patience, min_lr=config.min_lr)
        self.ema = EMA(self.model, config.ema_decay)
        self.epoch = 0
        self.best = math.inf      # best validation score (what selects best.pt)
        self.best_mae = math.inf  # validation MAE (Å) of that epoch
        self.stale = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {"train_state": {
            "model": self.model.state_dict(), "ema": self.ema.shadow.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(), "generator": self.generator.get_state(),
            "noise_generator": self.noise_generator.get_state(),
            "epoch": self.epoch, "best": self.best, "best_mae": self.best_mae,
            "stale": self.stale,
            "train_config": json.loads(json.dumps(asdict(self.cfg)))}}

    def save(self, name: str) -> None:
        if self.rank != 0:
            return
        meta = dict(self.meta, epoch=self.epoch, best_val_mae=self.best_mae,
                    best_val_score=self.best,
                    train_config=asdict(self.cfg), threads=torch.get_num_threads(),
                    world_size=self.world, device=str(self.device))
        save_checkpoint(self.out / name, self.ema.shadow, meta=meta, extra=self._state())

    def init_from(self, path: str | Path) -> dict:
        """Start from the weights of a trained model (model and EMA), not from random.

        Optimizer, scheduler and counters start fresh. The parent's file, sha256
        and training record go into every checkpoint of this run (``meta["init"]``)
        so a model card can state the whole training history.

        Raises
        ------
        CheckpointError
            Unreadable checkpoint, or one of another architecture than this run's.
        """
        ckpt = read_checkpoint(path)
        parent = model_from_checkpoint(ckpt, str(path))
        if parent.config.to_dict() != self.model.config.to_dict():
            raise CheckpointError(
                f"{path}: its model config {parent.config.to_dict()} differs from this "
                f"run's {self.model.config.to_dict()}; pass the same --config to train further")
        self.model.load_state_dict(parent.state_dict())
        self.ema.shadow.load_state_dict(parent.state_dict())
        meta = ckpt.get("meta", {})
        record = meta.get("card", {}).get("training") or {
            "epochs": meta.get("epoch"), "best_val_mae": meta.get("best_val_mae"),
            "initialised_from": meta.get("init")}
        self.meta["init"] = {"checkpoint": str(path), "sha256": sha256(path),
                             "training": {k: v for k, v in record.items() if k != "recipe"}}
        return self.meta["init"]

    def resume(self, path: str | Path) -> None:
        """Restore everything from a ``last.pt`` checkpoint."""
        ckpt = read_checkpoint(path)
        if ckpt.get("meta", {}).get("init"):
            self.meta["init"] = ckpt["meta"]["init"]
        st = ckpt["train_state"]
        self.model.load_state_dict(st["model"])
        self.ema.shadow.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["torch_rng"])
        self.generator.set_state(st["generator"])
        if "noise_generator" in st:
            self.noise_generator.set_state(st["noise_generator"])
        self.epoch, self.best, self.stale = st["epoch"], st["best"], st["stale"]
        self.best_mae = st.get("best_mae", self.best)  # older runs selected on the MAE
        log = self.out / "metrics.csv"
        if log.exists():
            with open(log) as fh:
                self.history = [r for r in csv.DictReader(fh)
                                if int(r["epoch"]) <= self.epoch]
            self._rewrite_log()

    # ------------------------------------------------------------ loops
    def _shard(self, idx: list[int]) -> list[int]:
        return idx[self.rank::self.world]

    def _weights(self, items: list[Encoded]) -> torch.Tensor:
        """Per-structure factor of the loss and of the validation score."""
        if self.scales is None:
            return torch.ones(len(items), device=self.device)
        return torch.tensor([1.0 / self.scales.get(e.group, self.scales[""]) for e in items],
                            device=self.device)

    def _perturb(self, g, target: torch.Tensor):
        """Move every node by Gaussian noise: bond vectors and targets follow."""
        noise = torch.randn(target.shape, generator=self.noise_generator) * self.cfg.input_noise
        noise = noise.to(target.device, target.dtype)
        vec = g.edge_vec + noise[g.edge_src] - noise[g.edge_dst]
        return replace(g, edge_vec=vec), target - noise

    def train_epoch(self) -> float:
        self.ddp.train()
        order = torch.randperm(len(self.train_set), generator=self.generator).tolist()
        bs = self.cfg.batch_size
        total, count = 0.0, 0
        for start in range(0, len(order), bs):
            glob = order[start:start + bs]
            mine = [self.train_set[i] for i in self._shard(glob)]
            g, target, real = _batch(mine, self.device)
            if self.cfg.input_noise > 0:
                g, target = self._perturb(g, target)
            # bf16, not autocast's default fp16: it keeps fp32's exponent range,
            # so the small gradients of sub-0.01 Å displacements cannot underflow
            # and no GradScaler is needed
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.cfg.amp and self.device.type == "cuda"):
                pred = self.ddp(g.numbers, g.markers, g.edge_src, g.edge_dst,
                                g.edge_vec, g.batch, g.n_graphs)
            per, _ = structure_losses(pred.float(), target, real, g.batch, g.n_graphs)
            per = per * self._weights(mine)
            # sum over my structures / global batch: DDP's gradient average over
            # ranks then equals the single-process mean over the global batch.
            loss = per.sum() * self.world / len(glob)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss in epoch {self.epoch + 1} (structures "
                    f"{[e.id for e in mine]}); last good checkpoint: {self.out / 'last.pt'}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
            self.opt.step()
            self.ema.update(self.model)
            total += float(per.detach().sum())
            count += len(mine)
        return self._allreduce(total, count)

    @torch.no_grad()
    def validate(self, model: nn.Module | None = None) -> tuple[float, float]:
        """Mean per-structure coordinate MAE (Å) of the EMA model on the validation
        set, and the score that selects the best epoch (the MAE scaled as
        ``balance`` says; equal to the MAE with ``balance="none"``)."""
        model = model or self.ema.shadow
        model.eval()
        total, scored, count = 0.0, 0.0, 0
        idx = self._shard(list(range(len(self.val_set))))
        for start in range(0, len(idx), self.cfg.batch_size):
            items = [self.val_set[i] for i in idx[start:start + self.cfg.batch_size]]
            g, target, real = _batch(items, self.device)
            pred = model(g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec,
                         g.batch, g.n_graphs)
            _, mae = structure_losses(pred.float(), target, real, g.batch, g.n_graphs)
            total += float(mae.sum())
            scored += float((mae * self._weights(items)).sum())
            count += len(items)
        return self._allreduce(total, count), self._allreduce(scored, count)

    def _allreduce(self, total: float, count: int) -> float:
        if self.world > 1:
            t = torch.tensor([total, count], dtype=torch.float64)
            dist.all_reduce(t)
            total, count = float(t[0]), int(t[1])
        return total / max(count, 1)

    def _rewrite_log(self) -> None:
        if self.rank != 0:
            return
        with open(self.out / "metrics.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["epoch", "train_loss", "val_mae",
                                               "val_score", "lr", "time"])
            w.writeheader()
            w.writerows(self.history)

    def fit(self) -> dict:
        """Train until ``epochs``, early stopping or ``max_time``; returns a summary."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=1))
        from tqdm.auto import tqdm
        bar = tqdm(total=self.cfg.epochs, initial=self.epoch, desc="train", unit="epoch",
                   disable=not self.progress or self.rank != 0)
        t_start = time.time()
        stopped = "epochs"
        while self.epoch < self.cfg.epochs:
            t0 = time.time()
            loss = self.train_epoch()
            mae, val = self.validate()
            self.sched.step(val)
            self.epoch += 1
            improved = val < self.best
            if improved:
                self.best, self.best_mae = val, mae
            self.stale = 0 if improved else self.stale + 1
            self.history.append({"epoch": self.epoch, "train_loss": f"{loss:.6f}",
                                 "val_mae": f"{mae:.6f}", "val_score": f"{val:.6f}",
                                 "lr": f"{self.opt.param_groups[0]['lr']:.3e}",
                                 "time": f"{time.time() - t0:.2f}"})
            self._rewrite_log()
            if improved:
                self.save("best.pt")
            self.save("last.pt")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", val=f"{mae:.4f}", best=f"{self.best_mae:.4f}")
            if self.stale >= self.cfg.early_stop:
                stopped = "early stopping"
                break
            if self.cfg.max_time and time.time() - t_start > self.cfg.max_time:
                stopped = "max_time"
                break
        bar.close()
        return {"epochs": self.epoch, "best_val_mae": self.best_mae,
                "best_val_score": self.best, "balance": self.cfg.balance, "stopped": stopped,
                "wall_time": round(time.time() - t_start, 1)}


def _init_distributed(device) -> torch.device:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) start the process group once (gloo on
    CPU, NCCL on CUDA); returns this rank's device (``cuda:LOCAL_RANK`` on GPU)."""
    device = torch.device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    return device


def train(train_samples, val_samples, out: str | Path, config: TrainConfig | None = None,
          device="cpu", resume: bool = True, meta: dict | None = None,
          progress: bool = True, init: str | Path | None = None) -> dict:
    """Train (or resume) a DefiNet on samples; see :class:`Trainer`.

    ``init`` starts a new run from a trained checkpoint's weights
    (:meth:`Trainer.init_from`); a run that resumes from ``out/last.pt`` ignores it.
    Under ``torchrun`` the process group is initialised here (gloo on CPU,
    NCCL on CUDA) and each rank uses ``cuda:LOCAL_RANK`` when on GPU.
    """
    config = config or TrainConfig()
    device = _init_distributed(device)
    world = _dist_info()[1]
    cfg = get_config(config.model)
    config.model = cfg.to_dict()
    trainer = Trainer(encode(train_samples, cfg), encode(val_samples, cfg), out, config,
                      device=device, meta=meta, progress=progress)
    last = Path(out) / "last.pt"
    if resume and last.exists():
        trainer.resume(last)
    elif init is not None:
        trainer.init_from(init)
    summary = trainer.fit()
    if world > 1:
        dist.barrier()
    return summary


def load_trained(path: str | Path) -> DefiNet:
    """The EMA model stored in a training checkpoint."""
    return model_from_checkpoint(read_checkpoint(path), str(path))


def load_samples(sources, host=None, progress_note=print, where: list[str] | None = None,
                 exclude: list[str] | None = None):
    """Load and concatenate samples from one or more data sources.

    ``where`` keeps samples whose ``info`` matches every ``KEY=VALUE``;
    ``exclude`` drops samples matching any one of them (e.g. a held-out
    ``supercell=12x12`` scalability set).
    """
    from .data.formats import LoadResult, load_dataset
    from .data.sample import info_matches
    result = LoadResult([])
    for src in ([sources] if isinstance(sources, (str, Path)) else sources):
        result.extend(load_dataset(src, host=host))
    if result.skipped or result.duplicates:
        progress_note(result.summary())
    if where:
        result.samples = [s for s in result.samples if info_matches(s.info, where)]
    if exclude:
        result.samples = [s for s in result.samples
                          if not any(info_matches(s.info, [c]) for c in exclude)]
    return result


def run_training(sources, out: str | Path, config: TrainConfig | None = None,
                 host=None, split: str | Path | None = None, split_seed: int = 0,
                 device="cpu", resume: bool = True, progress: bool = True,
                 exclude: list[str] | None = None, unassigned: str = "drop",
                 init: str | Path | None = None) -> dict:
    """Load data, split it (or apply a split file), train, and record provenance.

    The split is written to ``out/split.json`` before training, so a resumed
    run and any later evaluation use the same test set. With a ``split`` file,
    ``unassigned`` says what happens to samples it does not list: ``"drop"``
    them, or ``"split"`` them (stratified, the listed ones counting towards the
    quotas), which is how a model trained further on a grown data set keeps
    its parent's test set. ``init``: see :func:`train`.
    """
    from .data.splits import apply_split, read_split, split_samples, write_split
    # before the split: only rank 0 may write split.json (two ranks renaming the
    # same temporary file raced under torchrun)
    device = _init_distributed(device)
    rank, world = _dist_info()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_samples(sources, host, exclude=exclude)
    samples = loaded.samples
    split_file = out / "split.json"
    if split is not None:
        parts = apply_split(samples, split, unassigned=unassigned)
    elif split_file.exists():
        parts = apply_split(samples, split_file, unassigned="drop")
    else:
        parts = split_samples(samples, seed=split_seed)
    if not split_file.exists() and rank == 0:
        write_split(parts, split_file, seed=split_seed)
    if world > 1:
        dist.barrier()   # every rank records the split file rank 0 wrote
    if not parts["train"] or not parts["val"]:
        raise ValueError(f"need training and validation samples; got "
                         f"{len(parts['train'])} train and {len(parts['val'])} val")
    source_list = [str(s) for s in ([sources] if isinstance(sources, (str, Path))
                                    else sources)]
    manifests = {}
    for src in source_list:
        m = Path(src) / "manifest.json"
        if m.is_file():
            manifests[src] = json.loads(m.read_text())
    meta = {"data": source_list, "data_manifests": manifests,
            "split": read_split(split_file) if split_file.exists() else None,
            "n_train": len(parts["train"]), "n_val": len(parts["val"]),
            "n_test": len(parts["test"]),
            "groups": sorted({s.group for s in samples}), "excluded": exclude or []}
    summary = train(parts["train"], parts["val"], out, config, device=device,
                    resume=resume, meta=meta, progress=progress, init=init)
    return dict(summary, n_train=meta["n_train"], n_val=meta["n_val"],
                n_test=meta["n_test"])
