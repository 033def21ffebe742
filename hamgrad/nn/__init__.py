"""Modules: the Hamburger block and the minimal HamNet segmentation network."""

from .hamburger import HamCapture, Hamburger
from .hamnet import HamNet

__all__ = ["Hamburger", "HamCapture", "HamNet"]
