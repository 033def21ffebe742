"""Shared fixtures: every device-aware test runs on CPU, and on CUDA when a GPU is present."""

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """A torch device name: 'cpu' always, 'cuda' when available."""
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The suite's tensors are small: one intra-op thread is faster, and on a shared CPU it avoids the slowdown of
    torch's threads waiting on each other while other processes hold the cores (results are unchanged)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
