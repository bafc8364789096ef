"""CUDA paths: inference, training with and without AMP, NCCL DDP.

Skipped on machines without a GPU (CI); on a GPU machine `python -m pytest
tests/test_cuda.py` checks the parts of issues #4 and #6 that CPU runs cannot.
"""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ase_definet import DefiNet
from ase_definet.inference import Predictor
from ase_definet.train import TrainConfig, load_trained, run_training

from conftest import ROOT, mos2_defect

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = {"hidden": 24, "num_rbf": 12, "cutoff": 4.5, "max_neighbors": 24}


@pytest.mark.parametrize("config", ["default", "paper"])
def test_cuda_prediction_equals_cpu(config):
    torch.manual_seed(0)
    net = DefiNet(config)
    atoms, host = mos2_defect(4)
    cpu = Predictor(net, device="cpu", strict=False).predict([atoms], host)[0].positions
    gpu = Predictor(net, device="cuda", strict=False).predict([atoms], host)[0].positions
    assert np.abs(cpu - gpu).max() < 1e-4


def test_cuda_deterministic_switch_is_bitwise_reproducible():
    torch.manual_seed(0)
    pred = Predictor(DefiNet("default"), device="cuda", strict=False, deterministic=True)
    atoms, host = mos2_defect(4)
    a = pred.predict([atoms], host)[0].positions
    b = pred.predict([atoms], host)[0].positions
    assert np.array_equal(a, b)


@pytest.mark.parametrize("amp", [False, True])
def test_cuda_training_learns(emt_store, tmp_path, amp):
    cfg = TrainConfig(model=SMALL, lr=3e-3, batch_size=4, epochs=6, ema_decay=0.9,
                      early_stop=100, seed=0, amp=amp)
    summary = run_training(emt_store, tmp_path / "run", cfg, device="cuda", progress=False)
    assert summary["epochs"] == 6
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train_loss"]) for r in rows]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    load_trained(tmp_path / "run" / "best.pt")          # loads back on any device


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs two GPUs")
def test_nccl_two_gpus_match_single(emt_store, tmp_path):
    base = [sys.executable, "-m", "ase_definet.cli", "train", "--quiet", "--device", "cuda",
            "--config", '{"hidden": 16, "num_rbf": 12, "cutoff": 4.5, "max_neighbors": 24}',
            "--lr", "2e-3", "--batch-size", "4", "--ema-decay", "0.9", "--epochs", "2",
            "--data", str(emt_store)]
    assert subprocess.run(base + ["--out", str(tmp_path / "one")], cwd=ROOT).returncode == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", "-m", "ase_definet.cli"] + base[3:] + [
           "--out", str(tmp_path / "two")]
    out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    sd_a = load_trained(tmp_path / "one" / "best.pt").state_dict()
    sd_b = load_trained(tmp_path / "two" / "best.pt").state_dict()
    assert max(float((sd_a[k] - sd_b[k]).abs().max()) for k in sd_a) < 1e-3
