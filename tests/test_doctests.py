"""The examples in the docstrings, and the worked example of docs/theory.md, run as doctests.

Each module listed must hold at least one example, so an example that disappears in a merge fails here.
"""

import doctest
import importlib
from pathlib import Path

import pytest

MODULES = [
    "hamgrad.grad",                 # hg.solve: the quick start
    "hamgrad.fixed_point",          # FixedPoint: one-step, BPTT and implicit against (1 − J)⁻¹
    "hamgrad.linalg",               # operator algebra: (I − J)⁻¹ by GMRES against the 2 × 2 inverse
    "hamgrad.analysis.ratio",       # accumulative_ratio against known singular values
    "hamgrad.analysis.codes",       # code_information: an exact split explains all, one code nothing
    "hamgrad.nn.hamburger",
    "hamgrad.nn.hamnet",
    "hamgrad.data.synthetic",
]
THEORY = Path(__file__).resolve().parents[1] / "docs" / "theory.md"


def _check(result: doctest.TestResults, where: str) -> None:
    assert result.attempted > 0, f"{where} has no doctest examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {where} (see above)"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    _check(doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE), name)


def test_theory_worked_example():
    _check(doctest.testfile(str(THEORY), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE),
           "docs/theory.md")
