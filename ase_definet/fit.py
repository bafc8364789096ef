"""One call from a host crystal to a model that pre-relaxes its defects.

:func:`fit` chains the existing pieces, each of which resumes, so rerunning the
same call continues where it stopped:

1. :func:`~ase_definet.data.recipe.run_recipe` generates and relaxes the data set
   (the recipe path of ``definet generate``) into ``OUT/data``;
2. :func:`~ase_definet.train.run_training` splits it (stratified, written to
   ``OUT/run/split.json``) and trains within the time budget into ``OUT/run``;
3. the best checkpoint is copied, without its training state, to ``OUT/model.pt``
   (its card: elements, defect types and host scope of the training split);
4. :func:`~ase_definet.evaluate.evaluate` scores it on the test split against the
   Dummy (the unrelaxed input) into ``OUT/test.json``.

``definet relax --model OUT`` then loads ``OUT/model.pt``.
"""
from __future__ import annotations

from pathlib import Path

from .trainer import TrainConfig

#: the file in a fit folder that ``--model FOLDER`` resolves to
MODEL_FILE = "model.pt"


def fit(out: str | Path, recipe: dict, config: TrainConfig | None = None,
        workers: int = 1, threads: int = 1, scheduler: str | None = None,
        recipe_file: str | Path | None = None, device: str = "cpu",
        batch_size: int = 8, progress: bool = True) -> dict:
    """Generate, split, train and evaluate: a model for the host of ``recipe``.

    Parameters
    ----------
    out : path
        Fit folder; holds ``data/``, ``run/``, ``model.pt`` and ``test.json``.
    recipe : dict
        Recipe fields (:class:`~ase_definet.data.recipe.Recipe`), as ``definet
        generate`` takes them; checked before any work starts.
    config : TrainConfig, optional
        Training hyper-parameters (``max_time`` is the training time budget).
    workers, threads, scheduler, recipe_file
        As for :func:`~ase_definet.data.recipe.run_recipe`.
    device : str
        Torch device of training and evaluation.
    batch_size : int
        Structures per forward pass in the evaluation.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        ``generate``, ``train`` (their summaries), ``model`` (path of the
        checkpoint), ``report`` (the test report) and ``test_json``.

    Raises
    ------
    ValueError
        For a bad recipe (before any folder is made) or a test split with no
        structures.
    """
    from .data.load import load_samples
    from .data.recipe import run_recipe
    from .data.splits import apply_split
    from .evaluate import evaluate, save_report
    from .inference import Predictor
    from .train import run_training
    out = Path(out)
    gen = run_recipe(out / "data", recipe, workers=workers, threads=threads,
                     progress=progress, scheduler=scheduler, recipe_file=recipe_file)
    run = out / "run"
    trained = run_training(out / "data", run, config, device=device, progress=progress)
    model = export_model(run / "best.pt", out / MODEL_FILE)
    samples = load_samples(out / "data", progress_note=lambda m: None).samples
    test = list(apply_split(samples, run / "split.json", unassigned="drop")["test"])
    if not test:
        raise ValueError(f"the test split of {out / 'data'} is empty: generate more "
                         "structures (--count)")
    report = evaluate(Predictor(str(model), device=device), test, batch_size=batch_size,
                      progress=progress)
    test_json = save_report(report, out / "test.json")
    return {"generate": gen, "train": trained, "model": str(model), "report": report,
            "test_json": str(test_json)}


def export_model(best: str | Path, path: str | Path) -> Path:
    """Copy a training checkpoint's EMA weights, config and meta (card included) to
    ``path``, without the optimizer and RNG state that only resuming needs."""
    from .weights import model_from_checkpoint, read_checkpoint, save_checkpoint
    ckpt = read_checkpoint(best)
    save_checkpoint(path, model_from_checkpoint(ckpt, str(best)), meta=ckpt.get("meta", {}))
    return Path(path)
