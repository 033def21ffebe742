"""The paper's six figures, one module each, and a registry that computes, draws and saves any registered figure.

Each figure module (:mod:`~hamgrad.figures.spectrum`, :mod:`~hamgrad.figures.flow`,
:mod:`~hamgrad.figures.agreement`, :mod:`~hamgrad.figures.ablation`, :mod:`~hamgrad.figures.accumulative_ratio`,
:mod:`~hamgrad.figures.feature_maps`) defines ``compute(quick, **kw) -> dict`` (the numbers, as plain data) and
``plot(result) -> Figure`` (drawn by :mod:`hamgrad.plots`), and registers itself with :func:`register`. The notebooks
in ``notebooks/`` and ``hamgrad figures`` call the same functions:

```python
from hamgrad import figures
result = figures.compute("flow", quick=True)        # plain data (what the JSON holds)
fig = figures.plot("flow", result)                  # a matplotlib Figure
figures.save("flow", result, fig, "figures")        # figures/flow.png and figures/flow.json
figures.load("flow", "figures")                     # the saved result back (None if there is none)
figures.run_all("figures", quick=False)             # every figure, resumable: finished figures are kept
```

Sizes: ``quick=True`` is the CI size (seconds per figure); the full size is what ``figures/`` in the repository
holds; one folder holds one size (writing the other size into it is refused unless ``force=True``). The ablation
behind figures 4–6 is a resumable :func:`hamgrad.experiments.run_ablation` sweep in ``ablation_dir`` (default
``runs/paper-ablation[-quick]``); pass ``ablation_dir`` to use a sweep you ran yourself. Figures 4–6 record the sweep
they were drawn from and are recomputed when it differs.

Beyond the paper's six, :mod:`~hamgrad.figures.probes` draws the gradient probes the same sweep records (each gradient
mode against BPTT, and ρ(J_K), along training).

A figure of your own is one :func:`register` call (a ``compute`` and a ``plot`` function); :func:`run` and
:func:`run_all` then treat it as they treat the paper's.
"""

from ._registry import (FigureSpec, available, compute, get, load, plot, quick_from_env, register, run, run_all,
                        save)
from ._common import ablation_config
from . import spectrum, flow, agreement, ablation, accumulative_ratio, feature_maps  # each registers itself
from . import probes  # registered after the paper's six
from .accumulative_ratio import block_accumulative_ratio
from .feature_maps import block_feature_maps
from .flow import contractive_model

#: The paper's six figures in the order they are produced (4–6 share the ablation sweep).
FIGURES = ("spectrum", "flow", "agreement", "ablation", "accumulative_ratio", "feature_maps")

__all__ = ["FIGURES", "FigureSpec", "register", "available", "get", "compute", "plot", "save", "load", "run",
           "run_all", "quick_from_env", "ablation_config", "block_accumulative_ratio", "block_feature_maps",
           "contractive_model", "spectrum", "flow", "agreement", "ablation", "accumulative_ratio", "feature_maps",
           "probes"]
