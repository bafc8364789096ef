"""DefiNetRelaxer: one-step DefiNet prediction behind an ASE optimizer's API.

``run()`` first writes the DefiNet prediction into ``atoms`` (in place, same
order and cell, constraints honoured, calculator not called). If ``atoms``
has a calculator, a fallback ASE optimizer (BFGS by default) then takes the
residual ionic steps to ``fmax``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.optimize.optimize import DEFAULT_MAX_STEPS, BaseDynamics

from .checks import (MAX_DISPLACEMENT, MIN_DISTANCE_FRACTION, POLICIES, apply_prediction,
                     check_policy, uncertainty_note)
from .inference import Predictor
from .labels import marker_counts
from .optimizers import optimizer_class
from .process import check_threads, torch_threads

#: where the residual steps may start (``DefiNetRelaxer(start=...)``)
STARTS = ("prediction", "lower")

__all__ = ["DefiNetRelaxer", "POLICIES"]


class DefiNetRelaxer(BaseDynamics):
    """Pre-relax a defect structure in one DefiNet forward pass, then optionally
    finish with residual steps of an ASE optimizer.

    Parameters
    ----------
    atoms : ase.Atoms
        The defect structure; modified in place.
    host : ase.Atoms, str or path
        Pristine host: supercell, tiling unit cell, file, or built-in name.
    model : None, str, path, torch.nn.Module or Predictor
        ``None`` uses the shipped default weights. Names and paths are loaded
        once per process (:mod:`ase_definet.model_cache`), so constructing a
        fresh relaxer per structure in a loop costs no reload; a
        :class:`~ase_definet.inference.Predictor` may be passed to share settings.
    device : None, "cpu" or "cuda"
        ``None`` uses CUDA when available.
    logfile : None, "-", path or file object
        ASE-style log (``"-"`` is stdout, the ASE default).
    trajectory : None or path
        Trajectory with the unrelaxed frame, the prediction, and every
        residual step (the prediction frame carries energy and forces when a
        calculator is attached, since the fallback optimizer writes it).
    optimizer : str or class
        Fallback ASE optimizer for the residual steps (default ``"BFGS"``).
    optimizer_kwargs : dict
        Extra arguments of the fallback optimizer (e.g. ``{"maxstep": 0.1}``).
    tolerance : float, optional
        Host-matching tolerance in Å (``None``: the predictor's, 0.5 Å unless
        a :class:`~ase_definet.inference.Predictor` says otherwise).
    on_violation : {"keep", "revert", "calculator"}
        What to do when the prediction fails the sanity checks: keep it and
        flag it, restore the unrelaxed positions (default: a structure with
        overlapping or flung-away atoms must not reach the calculator), or
        restore them and leave the relaxation to the calculator. Flags go to the log and to
        ``atoms.info["definet_warnings"]``; ``atoms.info`` also records the defects
        found and the largest move (:func:`~ase_definet.checks.apply_prediction`).
    strict : bool
        Refuse elements/defect types outside the model card (default True).
    deterministic : bool
        Deterministic GPU kernels.
    start : {"prediction", "lower"}
        Where the residual steps start when a calculator is attached:
        ``"prediction"`` (default), or ``"lower"``: the calculator's energy is
        evaluated at the unrelaxed input too (one extra calculator call) and the
        steps start from whichever is lower, so the calculator is never handed
        a start above doing nothing. ``atoms.info`` records ``definet_start``
        and both energies (``definet_energy_prediction``,
        ``definet_energy_unrelaxed``, eV).
    uncertainty_policy : str, optional
        With an ensemble model, what to do where its members disagree
        (:mod:`ase_definet.uncertainty`; ``None``: the card's policy, ``"none"``:
        the raw mean). The per-atom sigma goes to ``atoms.arrays["definet_sigma"]``,
        its mean and maximum to ``atoms.info`` and the log line.
    threads : int, optional
        torch threads while :meth:`run` / :meth:`irun` execute (the prediction and,
        with a torch calculator such as CHGNet, the residual steps), restored
        afterwards; ``None`` keeps torch's setting. Beside another busy process
        use ``threads=1``. A Predictor passed as ``model`` with its own
        ``threads`` uses those for the prediction.
    """

    def __init__(self, atoms: Atoms, host, model=None, device=None,
                 logfile: Any = "-", trajectory: str | Path | None = None,
                 optimizer="BFGS", optimizer_kwargs: dict | None = None,
                 tolerance: float | None = None, on_violation: str = "revert",
                 min_distance_fraction: float = MIN_DISTANCE_FRACTION,
                 max_displacement: float = MAX_DISPLACEMENT, strict: bool = True,
                 deterministic: bool = False, append_trajectory: bool = False,
                 threads: int | None = None, start: str = "prediction",
                 uncertainty_policy: str | None = None):
        check_policy(on_violation)
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        self.start = start
        self.threads = check_threads(threads)
        super().__init__(atoms, logfile=logfile, trajectory=None)
        self._logfile_arg = logfile
        self.host = host
        self.predictor = model if isinstance(model, Predictor) else Predictor(
            model, device=device, strict=strict, deterministic=deterministic,
            uncertainty_policy=uncertainty_policy)
        self.trajectory_path = None if trajectory is None else Path(trajectory)
        self.append_trajectory = append_trajectory
        self.optimizer_class = optimizer_class(optimizer)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.tolerance = tolerance
        self.on_violation = on_violation
        self.min_distance_fraction = min_distance_fraction
        self.max_displacement = max_displacement
        self.fmax: float | None = None
        self.predicted = False
        self.prediction: np.ndarray | None = None
        self.match = None
        self.report = None
        self.timings: dict[str, float] = {}
        self.fallback = None
        self.unrelaxed: np.ndarray | None = None

    # ------------------------------------------------------------ ASE API
    def todict(self) -> dict:
        return {"type": "optimization", "optimizer": self.__class__.__name__,
                "model": getattr(self.predictor.model, "model_name", "DefiNet"),
                "fallback": self.optimizer_class.__name__, "fmax": self.fmax,
                "max_steps": self.max_steps}

    def irun(self, fmax: float = 0.05, steps: int = DEFAULT_MAX_STEPS):
        """Predict, then yield the fallback optimizer's convergence flags.

        Without a calculator a single ``True`` is yielded after the prediction.
        ``steps`` caps the residual ionic steps.
        """
        self.fmax = fmax
        self.max_steps = self.nsteps + steps
        with torch_threads(self.threads):
            yield from self._irun(fmax, steps)

    def _irun(self, fmax: float, steps: int):
        traj = self._open_trajectory()
        try:
            if not self.predicted:
                if traj is not None:
                    traj.write(self._frame())
                self.predict()
                if traj is not None and self.atoms.calc is None:
                    traj.write(self._frame())
                self.call_observers()
            if self.atoms.calc is None:
                yield True
                return
            if self.start == "lower" and self.nsteps == 0:
                self._choose_lower_start()
            yield from self._residual(fmax, steps, traj)
        finally:
            if traj is not None:
                traj.close()

    def run(self, fmax: float = 0.05, steps: int = DEFAULT_MAX_STEPS) -> bool:
        """Predict, then relax to ``fmax`` with the fallback optimizer if a
        calculator is attached. Returns the converged flag (True without one)."""
        converged = True
        for flag in self.irun(fmax=fmax, steps=steps):
            converged = flag
        return converged

    # ------------------------------------------------------------ steps
    def predict(self) -> np.ndarray:
        """Write the DefiNet prediction into ``atoms`` and return it.

        The sanity checks and the ``on_violation`` policy are applied by
        :func:`~ase_definet.checks.apply_prediction`, as in batch relaxation.
        """
        t0 = time.perf_counter()
        self.unrelaxed = self.atoms.get_positions()
        pred = self.predictor.predict([self.atoms], self.host, tolerance=self.tolerance)[0]
        self.match = pred.match
        applied = apply_prediction(self.atoms, pred.positions, pred.match, self.on_violation,
                                   self.min_distance_fraction, self.max_displacement,
                                   stacklevel=3, **pred.uncertainty())
        self.report = applied.report
        self.prediction = applied.positions
        self.timings = dict(pred.timings, total=time.perf_counter() - t0)
        self.predicted = True
        self._log_prediction()
        if applied.warning:
            self.logfile.write(f"# WARNING: {applied.warning}\n")
        return self.prediction

    def _choose_lower_start(self) -> None:
        """Start the residual steps from the lower in energy of the prediction and
        the unrelaxed input. The unrelaxed energy is the extra call; the
        prediction's is computed last, so the optimizer's first step reuses it."""
        self.atoms.set_positions(self.unrelaxed)
        e_unrelaxed = float(self.atoms.get_potential_energy())
        self.atoms.set_positions(self.prediction)
        e_pred = float(self.atoms.get_potential_energy())
        chosen = "prediction" if e_pred <= e_unrelaxed else "unrelaxed"
        if chosen == "unrelaxed":
            self.atoms.set_positions(self.unrelaxed)
        self.atoms.info.update(definet_start=chosen, definet_energy_prediction=e_pred,
                               definet_energy_unrelaxed=e_unrelaxed)
        self.logfile.write(
            f"DefiNet: start from the {chosen}: the prediction is "
            f"{1e3 * (e_pred - e_unrelaxed):+.1f} meV from the unrelaxed input\n")

    def _residual(self, fmax: float, steps: int, traj):
        kwargs = dict(self.optimizer_kwargs)
        kwargs.setdefault("logfile", self._logfile_arg)
        if traj is not None:
            kwargs["trajectory"] = traj
        self.fallback = self.optimizer_class(self.atoms, **kwargs)
        first = True
        try:
            for converged in self.fallback.irun(fmax=fmax, steps=steps):
                self.nsteps = self.fallback.nsteps
                if self.nsteps:
                    self.call_observers()
                elif traj is not None and first:
                    # ASE skips step 0 on a non-empty trajectory: write the
                    # prediction here, with the energy and forces just computed.
                    traj.write(self.atoms)
                first = False
                yield bool(converged)
        except Exception:
            # Keep the prediction in atoms; the trajectory so far is on disk.
            self.atoms.set_positions(self.prediction)
            raise

    # ------------------------------------------------------------ helpers
    def _open_trajectory(self):
        if self.trajectory_path is None:
            return None
        from ase.io.trajectory import Trajectory
        mode = "a" if (self.append_trajectory or self.predicted) else "w"
        return Trajectory(self.trajectory_path, mode)

    def _frame(self) -> Atoms:
        frame = self.atoms.copy()
        frame.calc = None
        return frame

    def _log_prediction(self) -> None:
        name = "DefiNet"
        t = time.localtime()
        counts = marker_counts(self.match)
        moved = self.report.max_displacement
        self.logfile.write(
            f"{name}:  {0:3d} {t[3]:02d}:{t[4]:02d}:{t[5]:02d}  predicted in "
            f"{1e3 * self.timings['total']:.1f} ms: {counts['vacancies']} vacancies, "
            f"{counts['substitutions']} substitutions, largest move {moved:.3f} Å"
            f"{uncertainty_note(self.atoms.info)}\n")
