"""Training: a real learning test, exact resume after SIGKILL, torchrun DDP."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ase_definet.data.splits import apply_split
from ase_definet.evaluate import evaluate
from ase_definet.inference import Predictor
from ase_definet.train import TrainConfig, load_trained, run_training

from conftest import ROOT

SMALL = {"hidden": 24, "num_rbf": 12, "cutoff": 4.5, "max_neighbors": 24}


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_small_model_learns_emt_relaxations(emt_store, tmp_path):
    """Validation MAE ends at least 30 % below the Dummy (unrelaxed) baseline."""
    cfg = TrainConfig(model=SMALL, lr=3e-3, batch_size=4, epochs=14, ema_decay=0.9,
                      early_stop=100, seed=0)
    summary = run_training(emt_store, tmp_path / "run", cfg, progress=False)
    assert summary["epochs"] == 14 and summary["n_val"] >= 3
    from ase_definet.data.load import load_samples
    samples = load_samples(emt_store).samples
    val = apply_split(samples, tmp_path / "run" / "split.json", unassigned="drop")["val"]
    report = evaluate(Predictor(load_trained(tmp_path / "run" / "best.pt")), val,
                      progress=False)
    model, dummy = report["overall"]["model"]["mae"], report["overall"]["dummy"]["mae"]
    assert model <= 0.7 * dummy, (model, dummy)
    rows = _rows(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 15))
    assert abs(float(rows[-1]["val_mae"]) - model) < 0.1 * dummy


TRAIN_CMD = [sys.executable, "-m", "ase_definet.cli", "train", "--threads", "1", "--quiet",
             "--config", json.dumps({**SMALL, "hidden": 16}), "--lr", "2e-3",
             "--batch-size", "4", "--ema-decay", "0.9", "--early-stop", "100"]


def _train(args, env=None, **kw):
    return subprocess.Popen(TRAIN_CMD + args, env=env, cwd=ROOT, **kw)


# Dies by SIGKILL at a fixed point: the 2nd optimizer step of epoch 3, after
# epochs 1-2 (and their last.pt) are on disk. A timed kill raced the run's end.
_KILL_SCRIPT = """
import os, signal, sys
from ase_definet.cli import main
from ase_definet.trainer import Trainer
plain = Trainer.train_epoch

def train_epoch(self):
    if self.epoch == 2:
        step, calls = self.opt.step, []
        def killing_step(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return step(*a, **k)
        self.opt.step = killing_step
    return plain(self)

Trainer.train_epoch = train_epoch
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_resume_matches_uninterrupted(emt_store, tmp_path):
    """Killed inside epoch 3, resumed: the log is identical to an uninterrupted run."""
    ref = tmp_path / "ref"
    args = ["--data", str(emt_store), "--epochs", "4"]
    assert _train(args + ["--out", str(ref)]).wait() == 0
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT] + TRAIN_CMD[3:] + args
                          + ["--out", str(killed)], cwd=ROOT, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert [r["epoch"] for r in _rows(killed)] == ["1", "2"]
    assert _train(args + ["--out", str(killed)]).wait() == 0
    a, b = _rows(ref), _rows(killed)
    assert [r["epoch"] for r in b] == ["1", "2", "3", "4"]
    for ra, rb in zip(a, b):       # identical losses: the run continued exactly
        assert math.isfinite(float(ra["train_loss"])) and math.isfinite(float(ra["val_mae"]))
        assert ra["train_loss"] == rb["train_loss"] and ra["val_mae"] == rb["val_mae"]


def test_rank_shares_average_to_the_single_process_gradient(emt_store, tmp_path):
    """What DDP relies on, in one process: the mean of two ranks' gradients on their
    shares of a global batch equals the one-process gradient on the whole batch."""
    import torch
    from ase_definet.data.load import load_samples
    from ase_definet.encoding import encode
    from ase_definet.trainer import Trainer
    items = encode(load_samples(emt_store).samples[:7], SMALL)
    cfg = TrainConfig(model=SMALL, batch_size=7, balance="group")
    trainer = Trainer(items, items, tmp_path / "t", cfg, progress=False)
    params = list(trainer.model.parameters())
    glob = [6, 0, 3, 5, 1, 4, 2]              # odd size: the shares differ (4 and 3)

    def grads(rank: int, world: int) -> list:
        trainer.rank, trainer.world = rank, world
        loss, _, mine = trainer.batch_loss(glob)
        assert len(mine) == len(glob[rank::world])
        return torch.autograd.grad(loss, params)

    flat = lambda gs: torch.cat([g.flatten() for g in gs])  # noqa: E731
    whole = flat(grads(0, 1))
    shared = (flat(grads(0, 2)) + flat(grads(1, 2))) / 2
    # float32 sums in another order differ by ~1e-6 relative; a wrong share
    # weighting is off by more (per-rank means: 3.5 %; no world factor: 50 %)
    rel = float(torch.linalg.vector_norm(shared - whole) / torch.linalg.vector_norm(whole))
    assert float(whole.abs().max()) > 0 and rel < 1e-4, rel


@pytest.mark.slow
def test_torchrun_two_processes_match_single(emt_store, tmp_path):
    """Real torchrun with two gloo ranks (slow, and two busy processes on a small
    machine); CI checks the gradient arithmetic in one process (above)."""
    single = tmp_path / "single"
    assert _train(["--data", str(emt_store), "--out", str(single), "--epochs", "2"]).wait() == 0
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", "-m", "ase_definet.cli"] + TRAIN_CMD[3:] + [
           "--data", str(emt_store), "--out", str(ddp), "--epochs", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = _rows(single), _rows(ddp)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_mae"):
            assert abs(float(ra[key]) - float(rb[key])) <= 1e-3 * float(ra[key]) + 1e-7
    sd_a = load_trained(single / "best.pt").state_dict()
    sd_b = load_trained(ddp / "best.pt").state_dict()
    diff = max(float((sd_a[k] - sd_b[k]).abs().max()) for k in sd_a)
    assert diff < 1e-3


def test_init_from_a_trained_model(emt_store, tmp_path):
    """--init: the parent's weights, its record in every checkpoint, kept on resume."""
    import pytest
    import torch
    from ase_definet.errors import CheckpointError
    from ase_definet.trainer import Trainer
    from ase_definet.weights import read_checkpoint, sha256
    cfg = lambda epochs: TrainConfig(model=SMALL, lr=3e-3, batch_size=4,  # noqa: E731
                                     epochs=epochs, ema_decay=0.9, early_stop=100)
    parent = tmp_path / "parent"
    run_training(emt_store, parent, cfg(3), progress=False)
    child = tmp_path / "child"
    run_training(emt_store, child, cfg(1), progress=False, split=parent / "split.json",
                 unassigned="split", init=parent / "best.pt")
    init = read_checkpoint(child / "last.pt")["meta"]["init"]
    assert init["sha256"] == sha256(parent / "best.pt")
    assert init["training"]["epochs"] >= 1
    assert json.loads((child / "split.json").read_text())["test"] == \
        json.loads((parent / "split.json").read_text())["test"]
    # starting from trained weights: the first validation is at least as good
    # as the parent's first (the parent started from random weights)
    assert float(_rows(child)[0]["val_mae"]) <= float(_rows(parent)[0]["val_mae"])
    run_training(emt_store, child, cfg(2), progress=False)       # resume: record kept
    assert read_checkpoint(child / "last.pt")["meta"]["init"] == init
    # exact weights, model and EMA
    trainer = Trainer([], [], tmp_path / "t", cfg(1))
    trainer.init_from(parent / "best.pt")
    ref = load_trained(parent / "best.pt").state_dict()
    for net in (trainer.model, trainer.ema.shadow):
        assert all(torch.equal(ref[k], v) for k, v in net.state_dict().items())
    other = Trainer([], [], tmp_path / "o", TrainConfig(model={**SMALL, "hidden": 16}))
    with pytest.raises(CheckpointError, match="differs from this run"):
        other.init_from(parent / "best.pt")


class _ZeroModel:
    """Predicts no displacement: the Dummy, as a model for ``Trainer.validate``."""

    def eval(self):
        return self

    def __call__(self, numbers, *args):
        import torch
        return torch.zeros((len(numbers), 3))


def test_group_balance_scores_every_groups_dummy_as_one(emt_store, tmp_path):
    """balance="group": each group's error counts relative to its own Dummy error."""
    import pytest
    from ase_definet.data.load import load_samples
    from ase_definet.encoding import dummy_mae, encode
    from ase_definet.trainer import Trainer
    items = encode(load_samples(emt_store).samples[:8], SMALL)
    base = items[0].group
    small, rest = (sum(dummy_mae(e) for e in part) / 4 for part in (items[:4], items[4:]))
    for e in items[4:]:                 # a second group that moves 10× more
        e.group, e.target = "Big/high", e.target * 10
    balanced = Trainer(items, items, tmp_path / "b", TrainConfig(model=SMALL, balance="group"))
    assert balanced.scales[base] == pytest.approx(small, rel=1e-5)
    assert balanced.scales["Big/high"] == pytest.approx(10 * rest, rel=1e-5)
    mae, score = balanced.validate(_ZeroModel())
    assert mae == pytest.approx(sum(dummy_mae(e) for e in items) / 8, rel=1e-5)
    assert score == pytest.approx(1.0, rel=1e-5)    # validation set == training set
    plain = Trainer(items, items, tmp_path / "p", TrainConfig(model=SMALL))
    assert plain.scales is None and plain.validate(_ZeroModel()) == (mae, mae)
    # a group the training set lacks is scaled by the mean over all structures
    unseen = [dataclasses.replace(items[0], group="New/low")]
    _, s_unseen = Trainer(items, unseen, tmp_path / "u",
                          TrainConfig(model=SMALL, balance="group")).validate(_ZeroModel())
    assert s_unseen == pytest.approx(dummy_mae(items[0]) / balanced.scales[""], rel=1e-5)
    with pytest.raises(ValueError, match="balance='atoms'"):
        Trainer(items, items, tmp_path / "x", TrainConfig(model=SMALL, balance="atoms"))


def test_balanced_run_logs_and_selects_on_the_score(emt_store, tmp_path):
    from ase_definet.training_log import training_log as _training_log
    from ase_definet.weights import read_checkpoint
    cfg = TrainConfig(model=SMALL, lr=3e-3, batch_size=4, epochs=3, ema_decay=0.9,
                      early_stop=100, balance="group")
    summary = run_training(emt_store, tmp_path / "run", cfg, progress=False)
    rows = _rows(tmp_path / "run")
    best = min(rows, key=lambda r: float(r["val_score"]))
    assert summary["balance"] == "group"
    assert abs(summary["best_val_score"] - float(best["val_score"])) < 1e-6
    log = _training_log(tmp_path / "run")
    assert log["best_epoch"] == int(best["epoch"])
    assert log["best_val_mae"] == float(best["val_mae"])
    meta = read_checkpoint(tmp_path / "run" / "best.pt")["meta"]
    assert meta["epoch"] == int(best["epoch"]) and set(meta["balance_scales"]) >= {""}
    assert abs(meta["best_val_mae"] - float(best["val_mae"])) < 1e-6


_RANK_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
import ase_definet.data.splits as splits
from ase_definet.train import TrainConfig, run_training
write = splits.write_split
def slow_write(*a, **k):        # rank 0 writes late: rank 1 must still not write
    import time
    time.sleep(3)
    return write(*a, **k)
def refuse(*a, **k):
    raise AssertionError("rank 1 wrote split.json")
splits.write_split = refuse if sys.argv[3] == "1" else slow_write
cfg = TrainConfig(model=%r, batch_size=4, epochs=1)
run_training(sys.argv[1], sys.argv[2], cfg, progress=False)
"""


def test_only_rank_zero_writes_the_split_before_the_group_exists(emt_store, tmp_path):
    """torchrun bug: ranks split before the process group was up, so both wrote
    split.json and one crashed renaming the other's temporary file."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _RANK_SCRIPT % ({**SMALL, "hidden": 16},),
             str(emt_store), str(tmp_path / "run"), str(rank)],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True))
    try:
        for p in procs[::-1]:           # rank 1 first: if it fails, rank 0 would wait
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
    finally:
        for p in procs:
            p.kill()
    assert json.loads((tmp_path / "run" / "split.json").read_text())["train"]


def test_input_noise_moves_starts_not_relaxed_structures(emt_store, tmp_path):
    """input_noise: bond vectors and targets move together, relaxed bonds stay put,
    and the data order is the one of a run without noise."""
    import torch
    from ase_definet.data.load import load_samples
    from ase_definet.encoding import collate_items, encode
    from ase_definet.trainer import Trainer
    items = encode(load_samples(emt_store).samples[:6], SMALL)
    noisy = Trainer(items, items, tmp_path / "n", TrainConfig(model=SMALL, input_noise=0.05,
                                                                batch_size=3))
    g, target, _ = collate_items(items[:3], "cpu")
    g2, target2 = noisy._perturb(g, target)
    moved = (target2 - target).abs()
    assert 0.01 < float(moved.mean()) < 0.08                   # ~0.05 * sqrt(2/pi)
    relaxed = g.edge_vec + target[g.edge_src] - target[g.edge_dst]
    relaxed2 = g2.edge_vec + target2[g2.edge_src] - target2[g2.edge_dst]
    torch.testing.assert_close(relaxed2, relaxed, atol=1e-5, rtol=0)
    assert torch.equal(g2.edge_src, g.edge_src) and not torch.equal(g2.edge_vec, g.edge_vec)
    clean = Trainer(items, items, tmp_path / "c", TrainConfig(model=SMALL, batch_size=3))
    assert math.isfinite(noisy.train_epoch()) and math.isfinite(clean.train_epoch())
    assert torch.equal(noisy.generator.get_state(), clean.generator.get_state())
    (tmp_path / "n").mkdir()
    noisy.save("last.pt")
    again = Trainer(items, items, tmp_path / "n", TrainConfig(model=SMALL, input_noise=0.05))
    again.resume(tmp_path / "n" / "last.pt")
    assert torch.equal(again.noise_generator.get_state(), noisy.noise_generator.get_state())


def test_a_non_finite_gradient_skips_its_step_not_the_run(emt_store, tmp_path):
    """Bug: an overflowing batch made clip_grad_norm_ scale every gradient by zero
    (inf * 0 = NaN) and the weights turned NaN, ending an ensemble member at epoch 8.
    Now that step is skipped with a warning; a run where it keeps happening raises."""
    import torch
    from ase_definet.data.load import load_samples
    from ase_definet.encoding import encode
    from ase_definet.trainer import Trainer
    items = encode(load_samples(emt_store).samples[:6], SMALL)
    trainer = Trainer(items, items, tmp_path / "t", TrainConfig(model=SMALL, batch_size=2),
                      progress=False)
    real, calls = trainer.batch_loss, []

    def overflow_once(glob):
        loss, per, mine = real(glob)
        calls.append(1)
        return (loss * math.inf if len(calls) == 2 else loss), per, mine

    trainer.batch_loss = overflow_once
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.warns(UserWarning, match="non-finite gradient on structures .*step skipped"):
        loss = trainer.train_epoch()
    assert math.isfinite(loss) and trainer.skipped_steps == 1 and len(calls) == 3
    # the epoch's largest structure loss is named (a finite blow-up hides in the mean)
    assert trainer.worst[1] in {e.id for e in items} and 0 < trainer.worst[0] < math.inf
    after = list(trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))   # other steps ran

    trainer.batch_loss = lambda glob: (lambda r: (r[0] * math.inf, *r[1:]))(real(glob))
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError,
                                                  match="non-finite gradients in 3 batches"):
        trainer.train_epoch()
