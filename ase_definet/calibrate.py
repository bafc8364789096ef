"""Calibrate an ensemble and choose its do-no-harm policy (training pipeline, after
``evaluate``, before ``weights``).

1. :func:`raw_run` predicts once with the raw ensemble (policy ``none``, sigma
   unscaled): per structure the ensemble-mean displacement and the members' sigma.
   Every policy is then applied to these arrays, so scoring 16 candidates costs one
   forward pass.
2. :func:`~ase_definet.uncertainty.fit_scale` on the validation run: sigma's factor
   for 95 % of atoms within 2 sigma.
3. :func:`score_policy` scores a policy with the evaluation report
   (:mod:`ase_definet.evaluate`): the concentration-balanced MAE (and A3)
   improvement over the Dummy averaged over material/density groups, and the share
   of structures whose output MAE exceeds the unrelaxed input's.
4. :func:`rank_policies` orders the candidates by the rule written before the runs
   (``experiments/ensemble/README.md``): among those whose balanced MAE improvement
   is at most ``max_drop`` points below ``none``'s, the lowest worse-than-input share,
   then the smaller drop, then the simpler policy. The first one is the choice unless
   a residual check (a calculator study, outside this module) sends it down the list.
5. :func:`uncertainty_section` is the card's ``uncertainty`` record, which
   :class:`~ase_definet.inference.Predictor` reads (``scale``, ``policy``).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .breakdown import balanced_improvements
from .data.sample import Sample
from .evaluate import evaluate_predictions, predict_samples
from .inference import Prediction
from .uncertainty import Policy, calibration, fit_scale, parse_policy

#: Candidate policies of the rule (experiments/ensemble/README.md), simplest first.
SHRINK = (0.5, 1.0, 2.0)
WITHHOLD = (0.5, 1.0, 2.0)
CANDIDATES = (Policy(),
              *(Policy(shrink=s) for s in SHRINK),
              *(Policy(withhold=t) for t in WITHHOLD),
              *(Policy(shrink=s, withhold=t) for s, t in itertools.product(SHRINK, WITHHOLD)))
#: Largest drop (points of balanced MAE improvement) a policy may cost against none.
MAX_DROP = 2.0


@dataclass
class RawRun:
    """One raw ensemble pass over samples: what every policy is applied to.

    Attributes
    ----------
    samples : list of Sample
    disp : list of (n, 3) arrays
        Ensemble-mean displacement of each structure's real atoms (Å).
    sigma : list of (n,) arrays
        Uncalibrated per-atom sigma (scale 1).
    matches : list of HostMatch
        The predictor's host matches (reused by the reports).
    """

    samples: list[Sample]
    disp: list[np.ndarray]
    sigma: list[np.ndarray]
    matches: list

    def predictions(self, policy: Policy | str = "none", scale: float = 1.0
                    ) -> list[Prediction]:
        """The predictions a :class:`Predictor` with this policy and scale makes."""
        policy = parse_policy(policy)
        out = []
        for s, d, sig, m in zip(self.samples, self.disp, self.sigma, self.matches):
            x0 = s.atoms.get_positions()
            moved, withheld = policy.apply(d, scale * sig)
            out.append(Prediction(x0 + moved, m, sigma=scale * sig, raw_positions=x0 + d,
                                  policy=policy.name, withheld=withheld))
        return out

    def errors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per real atom: raw-mean error vector (Å), sigma, structure index, group."""
        err = [s.atoms.get_positions() + d - s.relaxed for s, d in zip(self.samples, self.disp)]
        idx = [np.full(len(d), k) for k, d in enumerate(self.disp)]
        grp = [np.full(len(d), s.group, dtype=object) for s, d in zip(self.samples, self.disp)]
        return (np.concatenate(err), np.concatenate(self.sigma), np.concatenate(idx),
                np.concatenate(grp))


def raw_run(predictor, samples: Sequence[Sample], batch_size: int = 8,
            progress: bool = True) -> RawRun:
    """Predict ``samples`` with an ensemble :class:`Predictor`, before any policy.

    Raises
    ------
    ValueError
        When the predictor's model is not an ensemble (no sigma to calibrate).
    """
    if not getattr(predictor, "members", False):
        raise ValueError("calibration needs an ensemble model (a checkpoint with members, "
                         "or several member checkpoints)")
    predictor.policy = Policy()            # the raw mean; the scale is divided out below
    kept, preds = predict_samples(predictor, samples, batch_size, progress)
    disp = [p.raw_positions - s.atoms.get_positions() for s, p in zip(kept, preds)]
    sigma = [p.sigma / predictor.sigma_scale for p in preds]
    return RawRun(kept, disp, sigma, [p.match for p in preds])


def _balanced(report: dict, metric: str) -> float:
    """Mean over groups of the concentration-balanced improvement (%)."""
    values = [v for v in balanced_improvements(report, metric).values() if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def score_policy(run: RawRun, policy: Policy | str, scale: float) -> dict:
    """A policy's scores on a run: balanced improvements, worse-than-input share,
    withheld structures, overall and per group (``report``: the full evaluation)."""
    policy = parse_policy(policy)
    preds = run.predictions(policy, scale)
    report = evaluate_predictions(run.samples, preds)
    withheld = [p.withheld for p in preds]
    groups = {}
    for g, block in report["groups"].items():
        sel = [w for s, w in zip(run.samples, withheld) if s.group == g]
        groups[g] = {"n": block["n"], "worse_n": block["worse_than_dummy"]["n"],
                     "worse_share": block["worse_than_dummy"]["share"],
                     "withheld": int(sum(sel)),
                     "balanced_mae": report["strata"][g]["balanced"]["improvement"]["mae"],
                     "balanced_a3": report["strata"][g]["balanced"]["improvement"]["a3"]}
    return {"policy": policy.name, "n": report["overall"]["n"],
            "balanced_mae": _balanced(report, "mae"), "balanced_a3": _balanced(report, "a3"),
            "worse_n": report["overall"]["worse_than_dummy"]["n"],
            "worse_share": report["overall"]["worse_than_dummy"]["share"],
            "withheld": int(sum(withheld)), "groups": groups, "report": report}


def _terms(name: str) -> int:
    return 0 if name == "none" else name.count("+") + 1


def rank_policies(scores: Sequence[dict], max_drop: float = MAX_DROP) -> list[dict]:
    """Eligible policies in the rule's order (the first is the choice).

    Eligible: balanced MAE improvement at least ``none``'s minus ``max_drop``.
    Order: lowest worse-than-input share, then the smaller drop, then fewer terms.

    Raises
    ------
    ValueError
        When the scores hold no ``none`` entry (the reference of the drop).
    """
    ref = next((s for s in scores if s["policy"] == "none"), None)
    if ref is None:
        raise ValueError("the scores need the raw ensemble ('none') as the reference")
    eligible = [s for s in scores if s["balanced_mae"] >= ref["balanced_mae"] - max_drop]
    return sorted(eligible, key=lambda s: (s["worse_share"], ref["balanced_mae"] -
                                           s["balanced_mae"], _terms(s["policy"])))


def calibration_blocks(run: RawRun, scale: float) -> dict:
    """Calibration of a run: raw and scaled overall, and scaled per group."""
    err, sig, idx, grp = run.errors()
    return {"raw": calibration(err, sig, idx),
            "calibrated": calibration(err, sig, idx, scale=scale),
            "groups": {g: calibration(err[grp == g], sig[grp == g], idx[grp == g],
                                      scale=scale)
                       for g in sorted(set(grp))}}


def fit_run_scale(run: RawRun) -> float:
    """The scale for 95 % of the run's atoms within 2 sigma."""
    err, sig, _, _ = run.errors()
    return fit_scale(err, sig)


def _slim_score(score: dict) -> dict:
    return {k: v for k, v in score.items() if k != "report"}


def policy_on(run: RawRun, policy: Policy | str, scale: float) -> dict:
    """The card's comparison of a policy with the raw mean on one (held-out) run."""
    none, chosen = score_policy(run, "none", scale), score_policy(run, policy, scale)
    return {"none": _slim_score(none), "policy": _slim_score(chosen),
            "drop": none["balanced_mae"] - chosen["balanced_mae"],
            "calibration": calibration_blocks(run, scale)}


def uncertainty_section(members: int, scale: float, policy: str, val_scores: Sequence[dict],
                        val_calibration: dict, held_out: dict | None = None,
                        residual_check: dict | None = None) -> dict:
    """The card's ``uncertainty`` record (what :class:`Predictor` reads: ``scale``,
    ``policy``; the rest documents how they were chosen and how they hold out).

    ``held_out``: ``{"test": policy_on(...), "holdout": policy_on(...)}``.
    """
    return {"members": members, "scale": scale, "policy": policy,
            "sigma": "sample std of the members' displacement vectors (Å) times scale",
            "rule": (f"on validation: among policies within {MAX_DROP:g} points of the raw "
                     "mean's balanced MAE improvement, the lowest share of structures worse "
                     "than the input; ties: smaller drop, then simpler"),
            "validation": dict(val_calibration,
                               policies=[_slim_score(s) for s in val_scores]),
            **(held_out or {}),
            **({"residual_check": residual_check} if residual_check else {})}


# ------------------------------------------------------------------ the whole step
def member_records(paths: Sequence[str]) -> list[dict]:
    """Each member checkpoint's file, sha256, seed and training summary."""
    from .weights import read_checkpoint, sha256
    out = []
    for p in paths:
        meta = read_checkpoint(p).get("meta", {})
        out.append({"checkpoint": str(p), "sha256": sha256(p), "epoch": meta.get("epoch"),
                    "best_val_mae": meta.get("best_val_mae"),
                    "seed": (meta.get("train_config") or {}).get("seed")})
    return out


def calibrate_ensemble(members: Sequence[str], val: Sequence[Sample], out,
                       held_out: dict[str, Sequence[Sample]] | None = None,
                       threads: int | None = None, batch_size: int = 8,
                       progress: bool = True, device: str | None = None) -> dict:
    """Join member checkpoints, calibrate on ``val``, choose the policy, score held-out sets.

    Writes into folder ``out``: ``best.pt`` (the ensemble, its card holding the
    ``uncertainty`` section, so a :class:`Predictor` of it applies the scale and
    policy), ``calibration.json`` (that section) and, per held-out set NAME,
    ``NAME.json``: the evaluation report of the chosen policy, what the card's
    test numbers come from, and ``NAME_none.json`` for the raw mean.

    Returns
    -------
    dict
        The ``uncertainty`` section.
    """
    import json
    from pathlib import Path

    from .evaluate import save_report
    from .inference import Predictor
    from .weights import ensemble_of, read_checkpoint, save_checkpoint
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = ensemble_of(list(members))
    predictor = Predictor(model, device=device, threads=threads)
    run = raw_run(predictor, val, batch_size, progress)
    scale = fit_run_scale(run)
    scores = [score_policy(run, p, scale) for p in CANDIDATES]
    choice = rank_policies(scores)[0]["policy"]
    reports = {}
    for name, samples in (held_out or {}).items():
        held = raw_run(predictor, samples, batch_size, progress)
        reports[name] = policy_on(held, choice, scale)
        save_report(score_policy(held, choice, scale)["report"], out / f"{name}.json")
        save_report(score_policy(held, "none", scale)["report"], out / f"{name}_none.json")
    section = uncertainty_section(len(members), scale, choice, scores,
                                  calibration_blocks(run, scale), reports)
    meta = {k: v for k, v in read_checkpoint(members[0]).get("meta", {}).items()
            if k not in ("card", "epoch", "best_val_mae", "best_val_score")}
    meta["members"] = member_records(members)
    meta["card"] = {"uncertainty": _plain(section)}
    save_checkpoint(out / "best.pt", model, meta=meta)
    (out / "calibration.json").write_text(json.dumps(_plain(section), indent=1) + "\n")
    return section


def _plain(obj):
    """JSON-ready copy (numpy scalars to Python, NaN to None)."""
    from .evaluate import _clean
    return _clean(obj)


def _pct(n: int, total: int) -> str:
    return f"{n} / {total} ({100 * n / total:.1f} %)" if total else "0 / 0"


def calibration_text(section: dict) -> str:
    """The ``uncertainty`` section as markdown: calibration, the candidates on
    validation, and the chosen policy against the raw mean on each held-out set."""
    v = section["validation"]
    lines = [f"Deep ensemble of {section['members']} members; sigma = {section['sigma']}, "
             f"scale {section['scale']:.3g} (fitted on validation: 95 % of atoms within "
             f"2 sigma). Default policy: `{section['policy']}` ({section['rule']}).", "",
             "| set | Spearman (structure mean sigma vs MAE) | within 2 sigma, raw | "
             "within 2 sigma, calibrated |", "|---|---|---|---|",
             f"| validation | {v['raw']['spearman']:.2f} | "
             f"{100 * v['raw']['coverage_2sigma']:.1f} % | "
             f"{100 * v['calibrated']['coverage_2sigma']:.1f} % |"]
    held = [(k, b) for k, b in section.items() if isinstance(b, dict) and "calibration" in b]
    for name, b in held:
        c = b["calibration"]
        lines.append(f"| {name} | {c['raw']['spearman']:.2f} | "
                     f"{100 * c['raw']['coverage_2sigma']:.1f} % | "
                     f"{100 * c['calibrated']['coverage_2sigma']:.1f} % |")
    lines += ["", "Policies on validation (balanced: concentration-balanced improvement "
              "over the Dummy, mean over material/density groups):", "",
              "| policy | balanced MAE impr. % | balanced A3 impr. % | worse than input | "
              "withheld |", "|---|---|---|---|---|"]
    for s in v["policies"]:
        mark = " (chosen)" if s["policy"] == section["policy"] else ""
        lines.append(f"| {s['policy']}{mark} | {s['balanced_mae']:.1f} | "
                     f"{s['balanced_a3']:.1f} | {_pct(s['worse_n'], s['n'])} | "
                     f"{s['withheld']} |")
    for name, b in held:
        lines += ["", f"On {name}: `{section['policy']}` against the raw mean (`none`); "
                  f"drop {b['drop']:.1f} points overall.", "",
                  "| group | n | worse than input, none | worse, policy | balanced MAE "
                  "impr. %, none | policy | withheld |", "|---|---|---|---|---|---|---|"]
        rows = [("all", b["none"], b["policy"])] + [
            (g, b["none"]["groups"][g], b["policy"]["groups"][g]) for g in b["none"]["groups"]]
        for g, a, c in rows:
            lines.append(f"| {g} | {a['n']} | {_pct(a['worse_n'], a['n'])} | "
                         f"{_pct(c['worse_n'], c['n'])} | {a['balanced_mae']:.1f} | "
                         f"{c['balanced_mae']:.1f} | {c['withheld']} |")
    return "\n".join(lines)
