"""The training record of a run folder, for its model card: epochs, wall time and
best epoch from ``metrics.csv``, with totals over the models it was trained on from."""
from __future__ import annotations

import csv
from pathlib import Path


def training_log(run: Path) -> dict:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    # the best epoch is the one the score selected (logs before ``balance`` have
    # no val_score column and selected on the MAE)
    best = min(rows, key=lambda r: float(r.get("val_score") or r["val_mae"]))
    return {"epochs": len(rows),
            "wall_time_s": round(sum(float(r["time"]) for r in rows), 1),
            "best_epoch": int(best["epoch"]), "best_val_mae": float(best["val_mae"])}


def with_history(log: dict, init: dict | None) -> dict:
    """This run's training record plus the totals over the models it continued."""
    if not init:
        return log
    parent = init.get("training") or {}

    def total(key: str) -> float | None:
        # None where the parent did not record it (a plain training checkpoint
        # has no wall time): an unknown total, not a smaller one
        before = parent.get(f"total_{key}", parent.get(key))
        return None if before is None else round(log[key] + before, 1)

    epochs = total("epochs")
    return dict(log, initialised_from=init,
                total_epochs=None if epochs is None else int(epochs),
                total_wall_time_s=total("wall_time_s"))


def ensemble_training(members: list[dict]) -> dict:
    """An ensemble's training record: each member's (from its run folder, where the
    member checkpoint lies beside its ``metrics.csv``) and the totals."""
    logs = []
    for m in members:
        run = Path(m["checkpoint"]).parent
        log = training_log(run) if (run / "metrics.csv").exists() else {}
        logs.append(dict(log, checkpoint=m["checkpoint"], sha256=m["sha256"], seed=m["seed"]))
    known = [g for g in logs if "epochs" in g]
    mean = lambda k: round(sum(g[k] for g in known) / len(known), 6) if known else None  # noqa: E731
    return {"epochs": sum(g["epochs"] for g in known),
            "wall_time_s": round(sum(g["wall_time_s"] for g in known), 1),
            "best_val_mae": mean("best_val_mae"), "members": logs}


def member_lines(t: dict) -> list[str]:
    """Model-card lines on an ensemble's members (none for a single model)."""
    return [f"- member seed {m.get('seed')}: {m.get('epochs', '?')} epochs, best "
            f"validation MAE {m.get('best_val_mae', float('nan')):.4f} Å (epoch "
            f"{m.get('best_epoch', '?')}), `{m['checkpoint']}`" for m in t.get("members", [])]
