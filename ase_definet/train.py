"""Training DefiNet from data sources: single process or ``torchrun`` data parallel.

:func:`run_training` loads and splits the data and records provenance;
:func:`train` encodes samples and runs a :class:`~.trainer.Trainer` (the loop,
its checkpoints and exact resume live in :mod:`.trainer`, the tensors and
losses in :mod:`.encoding`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from .data.load import load_samples
from .encoding import encode
from .model import DefiNet, get_config
from .trainer import TrainConfig, Trainer, dist_info
from .weights import coverage, model_from_checkpoint, read_checkpoint

__all__ = ["TrainConfig", "Trainer", "load_samples", "load_trained", "run_training", "train"]


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
    world = dist_info()[1]
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


def run_training(sources, out: str | Path, config: TrainConfig | None = None,
                 host=None, split: str | Path | None = None, split_seed: int = 0,
                 device="cpu", resume: bool = True, progress: bool = True,
                 exclude: list[str] | None = None, unassigned: str = "drop",
                 init: str | Path | None = None,
                 input_forces: str | Path | None = None) -> dict:
    """Load data, split it (or apply a split file), train, and record provenance.

    The split is written to ``out/split.json`` before training, so a resumed
    run and any later evaluation use the same test set. With a ``split`` file,
    ``unassigned`` says what happens to samples it does not list: ``"drop"``
    them, or ``"split"`` them (stratified, the listed ones counting towards the
    quotas), which is how a model trained further on a grown data set keeps
    its parent's test set. ``init``: see :func:`train`. ``input_forces``: the
    ``.npz`` of forces at the unrelaxed inputs a ``force_input`` network reads
    (:func:`~ase_definet.data.load.load_samples`).
    """
    from .data.splits import apply_split, read_split, split_samples, write_split
    # before the split: only rank 0 may write split.json (two ranks renaming the
    # same temporary file raced under torchrun)
    device = _init_distributed(device)
    rank, world = dist_info()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_samples(sources, host, exclude=exclude, input_forces=input_forces)
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
            "groups": sorted({s.group for s in samples}), "excluded": exclude or [],
            "input_forces": None if input_forces is None else str(input_forces),
            # elements, defect types and host scope of what the weights learn from,
            # so a user-trained checkpoint is checked like a shipped one
            "card": coverage(parts["train"])}
    summary = train(parts["train"], parts["val"], out, config, device=device,
                    resume=resume, meta=meta, progress=progress, init=init)
    return dict(summary, n_train=meta["n_train"], n_val=meta["n_val"],
                n_test=meta["n_test"])
