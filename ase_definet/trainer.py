"""The DefiNet training loop (:class:`Trainer`) and its hyper-parameters.

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
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .encoding import Encoded, collate_items, group_scales, structure_losses
from .errors import CheckpointError
from .model import DefiNet
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
    #: error of the label on 8 of 8 groups (experiments/probes/oracle_noise.py).
    input_noise: float = 0.0
    extra: dict = field(default_factory=dict)


BALANCE = ("none", "group")

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


def dist_info() -> tuple[int, int]:
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
        self.rank, self.world = dist_info()
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
        self.skipped_steps = 0  # non-finite steps skipped in this process
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
        # positions move with the bonds: the long-range phases read them
        return replace(g, edge_vec=vec, positions=g.positions + noise.to(g.positions.dtype)
                       ), target - noise

    def batch_loss(self, glob: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[Encoded]]:
        """This rank's loss on a global batch of training indices.

        Returns the loss to back-propagate, the weighted per-structure losses of
        this rank's share and that share. The loss is the sum over this rank's
        structures divided by the global batch size (times the world size), so
        DDP's gradient average over ranks equals the single-process mean over
        the global batch.
        """
        mine = [self.train_set[i] for i in self._shard(glob)]
        g, target, real = collate_items(mine, self.device)
        if self.cfg.input_noise > 0:
            g, target = self._perturb(g, target)
        # bf16, not autocast's default fp16: it keeps fp32's exponent range,
        # so the small gradients of sub-0.01 Å displacements cannot underflow
        # and no GradScaler is needed
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.cfg.amp and self.device.type == "cuda"):
            pred = self.ddp(g.numbers, g.markers, g.edge_src, g.edge_dst,
                            g.edge_vec, g.batch, g.n_graphs,
                            **g.model_kwargs(self.model.config))
        per, _ = structure_losses(pred.float(), target, real, g.batch, g.n_graphs)
        per = per * self._weights(mine)
        return per.sum() * self.world / len(glob), per, mine

    def train_epoch(self) -> float:
        """One pass over the training set in a seeded order; the mean training loss.

        A step whose gradient norm is not finite (an overflow in one batch) is
        skipped: clipping an infinite norm multiplies every gradient by zero and
        turns the weights into NaN, which ended a 30-epoch ensemble member at epoch
        8. The check reads the synchronised gradients, so every DDP rank skips
        alike. More than ``max(2, 1 %)`` skipped steps in one epoch is not an
        accident but a broken run, and raises.
        """
        self.ddp.train()
        order = torch.randperm(len(self.train_set), generator=self.generator).tolist()
        bs = self.cfg.batch_size
        n_batches = math.ceil(len(order) / bs)
        total, count, skipped = 0.0, 0, []
        # the largest weighted structure loss of the epoch and whose: a finite blow-up
        # (a loss of 1e8 in one batch) is otherwise hidden in the epoch mean
        self.worst = (-math.inf, None)
        for start in range(0, len(order), bs):
            loss, per, mine = self.batch_loss(order[start:start + bs])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
            if not torch.isfinite(norm):
                skipped.append([e.id for e in mine])
                if len(skipped) > max(2, n_batches // 100):
                    raise FloatingPointError(
                        f"non-finite gradients in {len(skipped)} batches of epoch "
                        f"{self.epoch + 1} (structures {skipped}); last good checkpoint: "
                        f"{self.out / 'last.pt'}")
                warnings.warn(f"epoch {self.epoch + 1}: non-finite gradient on structures "
                              f"{skipped[-1]}; step skipped", stacklevel=2)
                continue
            self.opt.step()
            self.ema.update(self.model)
            total += float(per.detach().sum())
            count += len(mine)
            worst = per.detach()
            k = int(worst.argmax())
            if float(worst[k]) > self.worst[0]:
                self.worst = (float(worst[k]), mine[k].id)
        self.skipped_steps += len(skipped)
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
            g, target, real = collate_items(items, self.device)
            pred = model(g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec,
                         g.batch, g.n_graphs, **g.model_kwargs(self.model.config))
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
                                               "val_score", "lr", "time", "worst_loss",
                                               "worst_id"])
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
                                 "time": f"{time.time() - t0:.2f}",
                                 "worst_loss": f"{self.worst[0]:.6g}",
                                 "worst_id": self.worst[1]})
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
                "skipped_steps": self.skipped_steps,
                "wall_time": round(time.time() - t_start, 1)}

