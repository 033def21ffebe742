"""A user's own solver end to end: the plots API on result objects, ``hamgrad spectrum --import``, ``--version``,
and what ``import hamgrad`` loads."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import hamgrad as hg

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd=ROOT) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout's hamgrad."""
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------------- import hamgrad
def test_import_hamgrad_loads_only_the_core():
    # torch itself imports tqdm (torch.hub), so "not loaded" means: nothing beyond what `import torch` loaded
    code = ("import sys, json, torch\n"
            "before = set(sys.modules)\n"
            "import hamgrad as hg\n"
            "new = sorted(set(sys.modules) - before)\n"
            "lazy = 'hamgrad.experiments' in sys.modules\n"
            "hg.experiments.AblationConfig\n"
            "print(json.dumps([new, lazy, 'hamgrad.experiments' in sys.modules]))\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    new, loaded_before_access, loaded_after_access = json.loads(proc.stdout)
    heavy = ("hamgrad.experiments", "hamgrad.data", "hamgrad.plots", "hamgrad.paper", "PIL", "tqdm", "matplotlib",
             "seaborn")
    assert [m for m in new if m.split(".")[0] in heavy or m.startswith(heavy)] == []
    assert not loaded_before_access and loaded_after_access


def test_lazy_attributes_and_public_names():
    assert hg.plots.__name__ == "hamgrad.plots" and hg.experiments.__name__ == "hamgrad.experiments"
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        hg.not_a_module
    for name in hg.__all__:
        assert not name.startswith("_") and getattr(hg, name) is not None
    assert {"experiments", "data", "plots", "paper"} <= set(dir(hg))


def test_version_matches_the_package_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert hg.__version__ == meta["project"]["version"]
