"""Shared fixtures: every device-aware test runs on CPU, and on CUDA when a GPU is present."""

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """A torch device name: 'cpu' always, 'cuda' when available."""
    return request.param
