"""Score the averaged displacements of several models on v9's validation split.

A probe (see experiments/runs/ensemble_probe.md), not package code: the average is formed by a
small module that wraps the trained networks and returns the mean displacement.
"""
import sys
from pathlib import Path

import torch
from torch import nn

from ase_definet.data.splits import apply_split
from ase_definet.evaluate import evaluate, save_report
from ase_definet.inference import Predictor
from ase_definet.data.load import load_samples
from ase_definet.weights import load_model

RUN = Path("experiments/runs/definet-2dmd-v9-data")


class Average(nn.Module):
    """Mean displacement of several networks with the same graph settings."""

    def __init__(self, models):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.config = models[0].config
        if any(m.config != self.config for m in models):      # one graph feeds all members
            raise ValueError("members differ in their graph settings (config)")

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return torch.stack([m(*args, **kwargs) for m in self.members]).mean(0)


if __name__ == "__main__":
    # usage: ensemble_probe.py OUT.json MODEL MODEL [MODEL ...]
    out, paths = Path(sys.argv[1]), sys.argv[2:]
    torch.set_num_threads(2)
    samples = load_samples("weights/data/chgnet-2dmd", progress_note=lambda m: None).samples
    val = list(apply_split(samples, RUN / "split.json", unassigned="drop")["val"])
    model = Average([load_model(p) for p in paths])
    save_report(evaluate(Predictor(model, device="cpu"), val, progress=False), out)
    print(out)
