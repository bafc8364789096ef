"""The one calculator resolver: every caller (relax --calculator, batch, residual
study, data generation) resolves names, specs, objects and factories here."""
from __future__ import annotations

import sys
import types

import pytest
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from ase_definet import calculators, residual
from ase_definet.calculators import CALCULATORS, make_calculator
from ase_definet.data import generate


def test_names_specs_objects_and_factories(monkeypatch):
    assert isinstance(make_calculator("emt"), EMT)
    mine = LennardJones()
    assert make_calculator(mine) is mine                          # an object: as it is
    assert isinstance(make_calculator(EMT), EMT)                  # a class: called
    assert isinstance(make_calculator(lambda: LennardJones(sigma=2.0)), LennardJones)
    module = types.ModuleType("h3b_calc_factories")
    module.lj = lambda: LennardJones(epsilon=0.5)
    monkeypatch.setitem(sys.modules, "h3b_calc_factories", module)
    calc = make_calculator("h3b_calc_factories:lj")               # module:function
    assert isinstance(calc, LennardJones) and calc.parameters.epsilon == 0.5


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        make_calculator("vasp-typo")
    msg = str(info.value)
    assert "unknown calculator 'vasp-typo'" in msg and "module:function" in msg
    assert all(name in msg for name in CALCULATORS)


def test_not_a_calculator_is_refused():
    with pytest.raises(ValueError, match="returned int, not an ASE calculator"):
        make_calculator(lambda: 3)
    with pytest.raises(ValueError, match="calculator must be a name"):
        make_calculator(42)


def test_missing_package_names_the_extra(monkeypatch):
    def missing(device="cpu"):
        raise ImportError("No module named 'sevenn'")
    monkeypatch.setitem(CALCULATORS, "sevenn", missing)
    with pytest.raises(ImportError, match=r"pip install 'ase_definet\[sevenn\]'"):
        make_calculator("sevenn")


def test_every_caller_uses_the_one_resolver():
    # one function object, reached from each place that takes a calculator
    assert residual.make_calculator is calculators.make_calculator
    assert generate.make_calculator is calculators.make_calculator
    assert not hasattr(residual, "resolve_calculator")
    # batch.relax_many: tests/test_batch.py::test_unknown_calculator_name_lists_the_known_ones
