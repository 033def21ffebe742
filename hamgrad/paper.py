"""Deprecated: the paper's figures moved to :mod:`hamgrad.figures` (one module per figure and a registry).

``from hamgrad import paper`` still works and warns; every name it had is the same object in :mod:`hamgrad.figures`.
"""

import warnings

from .figures import (FIGURES, ablation_config, block_accumulative_ratio, block_feature_maps, compute,
                      contractive_model, load, plot, quick_from_env, run, run_all, save)

__all__ = ["FIGURES", "compute", "plot", "save", "load", "run", "run_all", "quick_from_env", "ablation_config",
           "block_accumulative_ratio", "block_feature_maps", "contractive_model"]

warnings.warn("hamgrad.paper is deprecated; use hamgrad.figures (the same functions)", DeprecationWarning,
              stacklevel=2)
