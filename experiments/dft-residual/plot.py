"""Steps from each start, per structure, of the DFT residual study (docs/dft-residual.md).

    python experiments/dft-residual/plot.py [--report experiments/dft-residual/report.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
STARTS = (("unrelaxed", "unrelaxed input"), ("predicted", "DefiNet prediction"),
          ("pre_relaxed", "CHGNet + FIRE pre-relaxation"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report", default=str(HERE / "report.json"))
    p.add_argument("--out", default=str(HERE.parent.parent / "docs" / "figures"
                                        / "dft_residual_steps.png"))
    p.add_argument("--fmax", nargs="+", default=["0.05", "0.02"],
                   help="thresholds, one panel each")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    report = json.loads(Path(args.report).read_text())
    recs = report["per_structure"]
    labels = [r["id"].split("-", 1)[1] for r in recs]
    fig, axes = plt.subplots(len(args.fmax), 1, sharex=True, squeeze=False,
                             figsize=(max(5, 0.7 * len(recs) + 2), 0.5 + 2.8 * len(args.fmax)))
    width = 0.27
    for ax, fmax in zip(axes[:, 0], args.fmax):
        for k, (start, name) in enumerate(STARTS):
            steps = [r[start][fmax]["steps"] if start in r else float("nan") for r in recs]
            ax.bar([i + (k - 1) * width for i in range(len(recs))], steps, width, label=name)
        ax.set_ylabel(f"GPAW + BFGS steps\nto {fmax} eV/Å")
    axes[0, 0].set_title(f"Residual DFT steps by start (n = {len(recs)})", fontsize=10)
    axes[0, 0].legend(fontsize=8)
    ax.set_xticks(range(len(recs)), labels, rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
