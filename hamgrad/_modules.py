"""A module executed from its source text: ``--import FILE.py`` in the CLI, and a user's solver module on a Ray
worker that cannot import it by name."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def module_from_source(name: str, source: str, filename: str) -> ModuleType:
    """Execute ``source`` as the module ``name`` and put it in ``sys.modules`` (removed again if it raises).

    Args:
        name: the module's name (what ``sys.modules`` and pickling know it by).
        source: its Python source.
        filename: the file it came from (named in tracebacks and by ``module.__file__``).

    Returns:
        The module.
    """
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None, origin=filename))
    module.__file__ = filename
    sys.modules[name] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
