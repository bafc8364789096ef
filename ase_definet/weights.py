"""Registry of shipped models, safe checkpoint I/O and model cards.

Checkpoints are plain dictionaries of tensors and JSON-like values saved with
``torch.save`` and read with ``torch.load(weights_only=True)``: loading never
executes code from the file. Shipped files are listed in ``registry.json``
with their sha256, which is checked before loading; nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, NoWeightsError
from .model import DefiNet, DefiNetConfig
from .model.ensemble import DefiNetEnsemble

FORMAT = "ase_definet-checkpoint"
FORMAT_VERSION = 1
REGISTRY = "registry.json"


def weights_dirs() -> list[Path]:
    """Folders searched for shipped weights, in order.

    ``$ASE_DEFINET_WEIGHTS``, the repository's ``weights/`` (source checkouts and
    editable installs), then the package data ``ase_definet/_weights/`` (wheels and
    ``pip install .``: setup.py installs ``weights/`` there).
    """
    dirs = []
    if os.environ.get("ASE_DEFINET_WEIGHTS"):
        dirs.append(Path(os.environ["ASE_DEFINET_WEIGHTS"]))
    dirs.append(Path(__file__).resolve().parent.parent / "weights")
    dirs.append(Path(__file__).resolve().parent / "_weights")
    return dirs


def registry() -> dict[str, dict]:
    """Name → entry (``file``, ``sha256``, ``card``, ``default``) of shipped models.

    Each registry file is parsed once per version on disk (a loop of fresh
    relaxers asks for it every time); treat the returned cards as read-only.
    """
    out: dict[str, dict] = {}
    for d in weights_dirs():
        reg = d / REGISTRY
        try:
            st = reg.stat()
        except OSError:
            continue
        for name, entry in _parsed_registry(str(reg), st.st_mtime_ns, st.st_size).items():
            out.setdefault(name, dict(entry, path=str(d / entry["file"])))
    return out


@lru_cache(maxsize=8)
def _parsed_registry(path: str, mtime_ns: int, size: int) -> dict:
    return json.loads(Path(path).read_text())["models"]


def default_model_name() -> str:
    """Name of the shipped default model.

    Raises
    ------
    NoWeightsError
        If no shipped weights are installed.
    """
    reg = registry()
    for name, entry in reg.items():
        if entry.get("default"):
            return name
    if reg:
        return next(iter(reg))
    raise NoWeightsError(
        "no shipped DefiNet weights are installed (searched "
        f"{', '.join(str(d) for d in weights_dirs())}); pass model='path/to/checkpoint.pt' "
        "or a DefiNet module, or train one with `definet train`")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: DefiNet | DefiNetEnsemble,
                    meta: dict | None = None, extra: dict | None = None) -> None:
    """Save a model or an ensemble (config + weights + metadata) atomically.

    ``extra`` holds tensors/values for resuming training (optimizer, EMA, RNG).
    An ensemble is one file: its members' weights under ``members.<k>.`` and
    ``"members": K``.
    """
    from . import __version__
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "code_version": __version__, "config": model.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "meta": meta or {}}
    if isinstance(model, DefiNetEnsemble):
        ckpt["members"] = model.size
    if extra:
        ckpt.update(extra)
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, expected_sha256: str | None = None) -> dict:
    """Read a checkpoint without executing code, checking its hash if given.

    Raises
    ------
    CheckpointError
        Missing, corrupt, truncated or tampered file, or not a DefiNet checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if expected_sha256 is not None:
        got = sha256(path)
        if got != expected_sha256:
            raise CheckpointError(
                f"checkpoint {path} has sha256 {got}, expected {expected_sha256}: "
                "the file is corrupt, truncated or was modified")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        # torch's own text may suggest weights_only=False, which would execute
        # code from the file: report the failure without that advice.
        raise CheckpointError(
            f"cannot read checkpoint {path}: corrupt, truncated, or not a tensor-only "
            f"ase_definet checkpoint ({type(err).__name__}); it was not loaded") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ase_definet checkpoint "
                              "(no 'format' marker; was it saved by save_checkpoint?)")
    if int(ckpt.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt.get('format_version')}, newer than this "
            f"ase_definet understands ({FORMAT_VERSION}); upgrade ase_definet")
    if "config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} lacks its model config or weights")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str = "<checkpoint>") -> DefiNet | DefiNetEnsemble:
    """Build a :class:`DefiNet` (or a :class:`DefiNetEnsemble`) from a checkpoint dictionary."""
    try:
        config = DefiNetConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: incompatible model config: {err}") from err
    members = ckpt.get("members")
    if members is not None and (not isinstance(members, int) or members < 2):
        raise CheckpointError(f"{path}: an ensemble checkpoint needs an integer member "
                              f"count of at least 2, got {members!r}")
    model = DefiNetEnsemble(config, members) if members else DefiNet(config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        # torch's first line is only "Error(s) in loading state_dict"; the
        # next one says which keys are missing or which shapes differ.
        first = " ".join(line.strip() for line in str(err).splitlines()[:2])[:400]
        raise CheckpointError(
            f"{path}: weights do not fit the DefiNet architecture of ase_definet "
            f"(made by version {ckpt.get('code_version', '?')}): {first}") from err
    model.card = ckpt.get("meta", {}).get("card", {})
    return model.eval()


def checkpoint_source(model: str | Path | None = None) -> tuple[Path, str | None, str]:
    """Where a model name or path points: ``(file, expected sha256 or None, name)``.

    ``None`` is the shipped default; registry names carry their sha256; any other
    value must be an existing checkpoint file.

    Raises
    ------
    NoWeightsError
        If ``model`` is neither a shipped model nor an existing file.
    """
    if model is None:
        model = default_model_name()
    reg = registry()
    name = str(model)
    if name in reg:
        return Path(reg[name]["path"]), reg[name]["sha256"], name
    path = Path(name)
    if path.is_dir():        # a `definet fit` folder: its exported model
        if not (path / "model.pt").is_file():
            raise NoWeightsError(f"model folder {name!r} holds no model.pt (a folder made "
                                 "by `definet fit` does, once its training has finished)")
        path = path / "model.pt"
    if not path.exists():
        raise NoWeightsError(
            f"model {name!r} is neither a shipped model ({', '.join(reg) or 'none installed'}) "
            "nor an existing checkpoint file")
    return path, None, path.name


def load_model(model: str | Path | nn.Module | None = None) -> nn.Module:
    """Resolve ``model`` (None, registry name, checkpoint path or module) to a network.

    ``None`` loads the shipped default; names are looked up in the registry
    and their sha256 verified; paths are read with ``weights_only=True``. Every
    call builds a fresh network (for training or editing); prediction uses the
    process-wide cache of :mod:`ase_definet.model_cache` instead.
    """
    if isinstance(model, nn.Module):
        return model
    path, digest, name = checkpoint_source(model)
    net = model_from_checkpoint(read_checkpoint(path, digest), str(path))
    if digest is not None:
        # the registry's card wins: a shipped card is kept up to date there (rescored
        # on a new test split, given a host scope) without re-packaging the .pt
        net.card = dict(getattr(net, "card", {}), **registry()[name].get("card", {}))
    net.model_name = name
    return net


def ensemble_of(checkpoints: list[str | Path]) -> DefiNetEnsemble:
    """An ensemble of trained single-model checkpoints (e.g. members' ``best.pt``).

    Raises
    ------
    CheckpointError
        Fewer than two files, a file that is itself an ensemble, or members whose
        configurations differ.
    """
    if len(checkpoints) < 2:
        raise CheckpointError(f"an ensemble needs at least 2 member checkpoints, "
                              f"got {len(checkpoints)}")
    members = []
    for path in checkpoints:
        net = model_from_checkpoint(read_checkpoint(path), str(path))
        if isinstance(net, DefiNetEnsemble):
            raise CheckpointError(f"{path} is already an ensemble; give single members")
        members.append(net)
    try:
        return DefiNetEnsemble(members[0].config, members).eval()
    except ValueError as err:
        raise CheckpointError(f"cannot join {', '.join(map(str, checkpoints))}: {err}") from err


def coverage(samples) -> dict:
    """The card's scope: elements, defect types (``V_X``, ``Y_X``), hosts (reduced
    formulas, e.g. ``MoS2``) and the host ``scope`` records
    (:func:`ase_definet.scope.scope_of_samples`) of the samples."""
    from .labels import defect_labels
    from .scope import scope_of_samples
    samples = list(samples)
    elements: set[str] = set()
    defects: set[str] = set()
    hosts: set[str] = set()
    for s in samples:
        elements |= set(s.atoms.get_chemical_symbols()) | set(s.host.get_chemical_symbols())
        defects |= defect_labels(s.match)
        hosts.add(str(s.host.symbols.formula.reduce()[0]))
    return {"elements": sorted(elements), "defects": sorted(defects), "hosts": sorted(hosts),
            "scope": scope_of_samples(samples)}


def package_model(checkpoint: str | Path, name: str, card: dict,
                  out_dir: str | Path | None = None, default: bool = False) -> dict:
    """Ship a trained checkpoint: slim copy (weights + config + card), sha256, registry.

    The training state (optimizer, RNG, ...) is dropped; the EMA weights stored
    as the checkpoint's model are what ships.
    """
    out_dir = Path(out_dir) if out_dir else weights_dirs()[1]
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, str(checkpoint))
    meta = {k: v for k, v in ckpt.get("meta", {}).items() if k != "split"}
    meta["card"] = card
    file = f"{name}.pt"
    save_checkpoint(out_dir / file, model, meta=meta)
    digest = sha256(out_dir / file)
    reg_path = out_dir / REGISTRY
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {"models": {}}
    if default:
        for entry in reg["models"].values():
            entry["default"] = False
    reg["models"][name] = {"file": file, "sha256": digest, "default": default, "card": card}
    reg_path.write_text(json.dumps(reg, indent=1) + "\n")
    return reg["models"][name]
