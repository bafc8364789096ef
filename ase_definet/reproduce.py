"""The ``weights/build.sh`` command line that trains a card's run again."""
from __future__ import annotations

# build.sh's data store and variables, with its defaults (tests/test_card.py checks
# them against the script): the reproduce line names only what differs
_BUILD_DATA = "weights/data/chgnet-2dmd"
_BUILD_VARS = {"lr": ("LR", 1.5e-3), "batch_size": ("BATCH", 2), "seed": ("SEED", 0),
               "max_time": ("MAX_TIME", 2400.0), "balance": ("BALANCE", "group"),
               "weight_decay": ("WD", 0.0), "input_noise": ("NOISE", 0.0)}


def reproduce_line(card: dict) -> str:
    """The ``weights/build.sh`` command that trains this card's run again."""
    d, t = card["data"], card["training"]
    if t.get("members"):       # an ensemble: its members' runs, then definet calibrate
        seeds = " ".join(str(m.get("seed")) for m in t["members"])
        return (f"`SEEDS=\"{seeds}\" bash experiments/ensemble/train.sh`, then "
                "`bash experiments/ensemble/ship.sh` (members trained one after another, "
                "each with the recipe below and its own seed; `definet calibrate` joins "
                "them)")
    recipe = t.get("recipe") or {}
    env = [f"DATA={d['source']}"] if d.get("source") != _BUILD_DATA else []
    for key, (var, default) in _BUILD_VARS.items():
        value = recipe.get(key)
        if value is not None and value != default:
            env.append(f"{var}={value:g}" if isinstance(value, float) else f"{var}={value}")
    extra = [e for e in d.get("excluded", []) if e != "supercell=12x12"]  # build.sh's own
    if extra:
        env.append(f"EXCLUDE={','.join(extra)}")
    init = t.get("initialised_from")
    if not init:
        return f"`{' '.join(env + ['bash weights/build.sh'])}`"
    # the parent file is usually the earlier default, since replaced by this model
    env += ["INIT=parent.pt", f"SPLIT={d.get('split', 'split.json')}"]
    return (f"`{' '.join(env + ['bash weights/build.sh'])}`, parent.pt being the "
            f"checkpoint with sha256 `{init['sha256'][:12]}…` (`{init['checkpoint']}` "
            "when this run started; in the git history)")
