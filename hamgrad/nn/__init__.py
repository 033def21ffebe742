"""Modules: the Hamburger block, the context modules beside it (the paper's Table 3: self-attention, DA, A², APC, DM,
ACF; and global pooling) and the minimal HamNet segmentation network."""

from .attention import CONTEXTS, ContextCapture, DoubleAttention, GlobalPool, SelfAttention, build_context
from .context import AdaptivePyramidContext, AttentionalClassFeature, DualAttention, DynamicFilters
from .hamburger import HamCapture, Hamburger
from .hamnet import HamNet

__all__ = ["Hamburger", "HamCapture", "HamNet", "SelfAttention", "DoubleAttention", "GlobalPool", "DualAttention",
           "AdaptivePyramidContext", "DynamicFilters", "AttentionalClassFeature", "ContextCapture", "CONTEXTS",
           "build_context"]
