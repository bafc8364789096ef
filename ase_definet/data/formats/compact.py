"""The compact single-file data set.

``NAME.extxyz.gz`` (one frame per sample, per-atom array ``relaxed_positions``,
provenance in the frame info, ``host_ref`` = index of the host frame),
``NAME.hosts.extxyz.gz`` (each distinct host once) and ``NAME.manifest.json``
(counts per material/density and the sha256 of both data files).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from collections.abc import Iterable, Mapping

import numpy as np
from ase import Atoms
from ase.io.extxyz import key_val_dict_to_str, key_val_str_to_dict

from ...errors import DataFormatError
from ..sample import Sample
from ..store import read_frames, write_gz
from .result import LoadResult, PathLike

COMPACT_SUFFIX = ".extxyz.gz"
COMPACT_FORMAT = "ase_definet compact v1"


def compact_paths(path: PathLike) -> tuple[Path, Path, Path]:
    """(samples, hosts, manifest) paths of a compact data set."""
    path = Path(path)
    name = path.name
    if name.endswith(".manifest.json"):
        stem = name[: -len(".manifest.json")]
    elif name.endswith(COMPACT_SUFFIX):
        stem = name[: -len(COMPACT_SUFFIX)]
    else:
        raise DataFormatError(f"{path}: a compact data set is NAME{COMPACT_SUFFIX} "
                              "(or NAME.manifest.json)")
    d = path.parent
    return (d / f"{stem}{COMPACT_SUFFIX}", d / f"{stem}.hosts{COMPACT_SUFFIX}",
            d / f"{stem}.manifest.json")


def _roundtrips(value: str) -> bool:
    """Whether extxyz reads this string back as the same string."""
    try:
        back = key_val_str_to_dict(key_val_dict_to_str({"k": value})).get("k")
    except Exception:  # any parse failure means: encode it
        return False
    return isinstance(back, str) and back == value


def _encode_info(info: Mapping) -> dict:
    """Info values extxyz can carry losslessly.

    Strings extxyz would turn into numbers or booleans ("00012", "T"), empty
    strings, None, lists and dicts are stored as ``_JSON ...`` strings, which
    ASE's reader decodes (numeric lists come back as numpy arrays, ASE's
    convention).
    """
    out = {}
    for key, v in info.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (bool, int, float, np.ndarray)):
            out[key] = v
        elif isinstance(v, str) and _roundtrips(v):
            out[key] = v
        elif isinstance(v, (str, list, tuple, dict)) or v is None:
            out[key] = "_JSON " + json.dumps(v, default=str)
        else:
            out[key] = str(v)
    return out


def _decode_info(info: Mapping) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in info.items()}


def _content_key(atoms: Atoms) -> bytes:
    return b"".join(np.ascontiguousarray(a, dtype=float).tobytes() for a in
                    (atoms.numbers, atoms.get_positions(), atoms.cell.array, atoms.pbc))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_compact(samples: Iterable[Sample], path: PathLike) -> Path:
    """Write samples as one compact, deterministic data set.

    Parameters
    ----------
    samples : iterable of Sample
    path : path
        ``NAME.extxyz.gz``. Beside it: ``NAME.hosts.extxyz.gz`` (each distinct
        host once; a sample's info ``host_ref`` is the index of its host there)
        and ``NAME.manifest.json`` (format, counts per material/density, sha256
        of both data files).

    Returns
    -------
    pathlib.Path
        The manifest path.
    """
    samples = list(samples)
    spath, hpath, mpath = compact_paths(path)
    hosts: list[Atoms] = []
    refs: dict[bytes, int] = {}
    frames = []
    for s in samples:
        ref = refs.setdefault(_content_key(s.host), len(hosts))
        if ref == len(hosts):
            h = s.host.copy()
            h.calc = None
            h.info = _encode_info(s.host.info)
            hosts.append(h)
        atoms = s.atoms.copy()
        atoms.calc = None
        atoms.arrays["relaxed_positions"] = np.asarray(s.relaxed, float)
        atoms.info = _encode_info({**s.info, "host_ref": ref})
        frames.append(atoms)
    spath.parent.mkdir(parents=True, exist_ok=True)
    write_gz(spath, frames)
    write_gz(hpath, hosts)
    manifest = {
        "format": COMPACT_FORMAT, "samples": spath.name, "hosts": hpath.name,
        "structures": len(frames), "distinct_hosts": len(hosts),
        "groups": dict(sorted(Counter(s.group for s in samples).items())),
        "sha256": {spath.name: _sha256(spath), hpath.name: _sha256(hpath)},
    }
    tmp = mpath.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, mpath)
    return mpath


def read_compact(path: PathLike) -> LoadResult:
    """Read a data set written by :func:`write_compact`.

    Parameters
    ----------
    path : path
        ``NAME.extxyz.gz`` or ``NAME.manifest.json``.

    Raises
    ------
    DataFormatError
        If a file is missing or its sha256 differs from the manifest (modified
        or truncated data).
    """
    spath, hpath, mpath = compact_paths(path)
    for p in (spath, hpath, mpath):
        if not p.exists():
            raise DataFormatError(f"{p}: missing (part of the compact data set {spath})")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    for p in (spath, hpath):
        want = manifest.get("sha256", {}).get(p.name)
        if want is not None and want != _sha256(p):
            raise DataFormatError(f"{p}: sha256 differs from {mpath.name}; the file was "
                                  "modified or truncated")
    hosts = []
    for h in read_frames(hpath):
        h.calc = None
        h.info = _decode_info(h.info)
        hosts.append(h)
    result = LoadResult()
    for k, frame in enumerate(read_frames(spath)):
        info = _decode_info(frame.info)
        ref = info.pop("host_ref", None)
        name = str(info.get("id", f"{spath}#{k}"))
        if not isinstance(ref, int) or not 0 <= ref < len(hosts):
            result.skipped.append((name, f"{spath}: frame {k} has no valid host_ref"))
            continue
        atoms = frame.copy()
        atoms.calc = None
        atoms.info = {}
        relaxed = atoms.arrays.pop("relaxed_positions")
        info.setdefault("source", str(spath))
        result.samples.append(Sample(atoms, relaxed, hosts[ref], info))
    if len(result.samples) + len(result.skipped) != manifest.get("structures", -1):
        raise DataFormatError(f"{spath}: holds {len(result.samples) + len(result.skipped)} "
                              f"frames, {mpath.name} says {manifest.get('structures')}")
    return result
