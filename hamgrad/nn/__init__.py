"""Modules: the Hamburger block, the context modules beside it (self-attention, A², global pooling) and the minimal
HamNet segmentation network."""

from .attention import CONTEXTS, ContextCapture, DoubleAttention, GlobalPool, SelfAttention, build_context
from .hamburger import HamCapture, Hamburger
from .hamnet import HamNet

__all__ = ["Hamburger", "HamCapture", "HamNet", "SelfAttention", "DoubleAttention", "GlobalPool", "ContextCapture",
           "CONTEXTS", "build_context"]
