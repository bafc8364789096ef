"""The one calculator resolver: names, ``module:function`` specs, objects, factories.

Every place that takes a calculator (``definet relax --calculator``, batch
relaxation, the residual-step study, the oracle data generator) resolves it here.
Built-in names: ``chgnet`` (CHGNet 0.3.0, the oracle of the shipped weights),
``sevenn`` (SevenNet-0), ``gpaw`` (DFT: GPAW with :data:`GPAW_SETTINGS`) and ``emt``
(ASE's EMT, for tests). The ``chgnet``, ``sevenn`` and ``gpaw`` packages are optional
extras.
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Callable

from ase.calculators.calculator import BaseCalculator

CalculatorLike = str | BaseCalculator | Callable[[], BaseCalculator]


def chgnet_task(properties: list[str] | None) -> str:
    """CHGNet prediction task that covers ``properties`` and nothing more.

    Energy and forces always come together (every caller here needs forces, and the
    energy is the forward pass they are differentiated from); stress and magnetic
    moments only when asked for. ``None`` means everything, as in ASE.
    """
    props = set(properties if properties is not None else ["stress", "magmoms"])
    if "magmoms" in props:
        return "efsm"  # CHGNet has no "efm" task
    return "efs" if "stress" in props else "ef"


def _chgnet(device: str = "cpu") -> BaseCalculator:
    from chgnet.model import CHGNet, CHGNetCalculator

    class OnDemandCHGNetCalculator(CHGNetCalculator):
        """CHGNet computing only what ASE asks for.

        The stock calculator always runs task ``"efsm"``; its stress is a second
        backward pass through the whole graph, about a third of a step's time, which
        a fixed-cell relaxation throws away. Energies and forces are bit-identical.
        """

        def calculate(self, atoms=None, properties=None, system_changes=None,
                      task=None) -> None:
            super().calculate(atoms, properties, system_changes,
                              task=task or chgnet_task(properties))

    model = CHGNet.load(model_name="0.3.0", use_device=device, verbose=False)
    return OnDemandCHGNetCalculator(model=model, use_device=device)


def _sevenn(device: str = "cpu") -> BaseCalculator:
    from sevenn.calculator import SevenNetCalculator
    return SevenNetCalculator("7net-0", device=device)


#: The one place the ``gpaw`` name's DFT settings are stated; every report made with
#: it records them (:func:`calculator_version`). LCAO with a double-zeta polarised basis
#: and PBE at the Gamma point: a residual-step study's settings, not converged
#: energetics. Fermi-Dirac smearing of 50 meV lets defect levels fill fractionally; a
#: structure is spin-polarised when it carries initial magnetic moments (GPAW's
#: ``spinpol=None``), which the caller sets for odd electron counts. Symmetry is off
#: so that a relaxation may break it.
GPAW_SETTINGS: dict = {
    "mode": "lcao", "basis": "dzp", "xc": "PBE",
    "kpts": {"size": (1, 1, 1), "gamma": True},
    "occupations": {"name": "fermi-dirac", "width": 0.05},
    "symmetry": "off", "spinpol": None, "txt": None,
}


def _gpaw(device: str = "cpu") -> BaseCalculator:
    from gpaw import GPAW
    return GPAW(**GPAW_SETTINGS)


def _emt(device: str = "cpu") -> BaseCalculator:
    from ase.calculators.emt import EMT
    return EMT()


#: Built-in calculator names and their factories ``f(device) -> calculator``.
CALCULATORS: dict[str, Callable[..., BaseCalculator]] = {
    "chgnet": _chgnet, "sevenn": _sevenn, "gpaw": _gpaw, "emt": _emt}


def make_calculator(calculator: CalculatorLike, device: str = "cpu") -> BaseCalculator:
    """An ASE calculator from a name, a ``module:function`` spec, a factory or an object.

    Parameters
    ----------
    calculator : str, ASE calculator, class or callable
        A built-in name (:data:`CALCULATORS`); ``"module:function"``, an importable
        zero-argument factory; an ASE calculator object (returned as it is); or a
        calculator class / zero-argument factory (called).
    device : str
        Device of the built-in ML calculators (``"cpu"``, ``"cuda"``).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones), a spec that cannot
        be imported, or a factory that does not return a calculator.
    ImportError
        If a built-in calculator's package (e.g. ``chgnet``) is not installed; the
        message names the pip extra that provides it.
    """
    if isinstance(calculator, BaseCalculator) or (
            not isinstance(calculator, type) and hasattr(calculator, "get_potential_energy")):
        return calculator               # an object: used as it is
    if isinstance(calculator, str):
        name = calculator
        if ":" in name:
            module, _, func = name.partition(":")
            try:
                factory = getattr(importlib.import_module(module), func)
            except (ImportError, AttributeError) as err:
                raise ValueError(f"cannot import calculator factory {name!r}: {err}") from err
            return _called(factory, name)
        if name not in CALCULATORS:
            raise ValueError(f"unknown calculator {name!r}; use one of "
                             f"{', '.join(CALCULATORS)} or 'module:function'")
        try:
            return CALCULATORS[name](device)
        except ImportError as err:
            raise ImportError(f"calculator {name!r} needs its package: "
                              f"pip install 'ase_definet[{name}]' ({err})") from err
    if callable(calculator):
        return _called(calculator, getattr(calculator, "__name__", repr(calculator)))
    raise ValueError(f"calculator must be a name ({', '.join(CALCULATORS)}), "
                     f"'module:function', an ASE calculator or a factory; got "
                     f"{type(calculator).__name__}")


def _called(factory: Callable, what: str) -> BaseCalculator:
    calc = factory()
    if not hasattr(calc, "get_potential_energy") and not isinstance(calc, BaseCalculator):
        raise ValueError(f"calculator factory {what} returned {type(calc).__name__}, "
                         "not an ASE calculator")
    return calc


def calculator_version(name: str) -> str:
    """Package and model version string recorded with every relaxation."""
    if name == "chgnet":
        import chgnet
        return f"chgnet {chgnet.__version__}, model 0.3.0"
    if name == "sevenn":
        import sevenn
        return f"sevenn {sevenn.__version__}, model 7net-0"
    if name == "gpaw":
        import gpaw
        settings = {k: v for k, v in GPAW_SETTINGS.items() if k != "txt"}
        return f"gpaw {gpaw.__version__}, {json.dumps(settings, sort_keys=True)}"
    if name == "emt":
        import ase
        return f"ase {ase.__version__} EMT"
    module = name.partition(":")[0]
    mod = importlib.import_module(module.split(".")[0])
    return f"{module} {getattr(mod, '__version__', 'unknown')}"
