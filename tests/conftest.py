"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests with one intra-op thread and restore the setting afterwards.

    The models in the unit tests are tiny, so extra threads only add synchronisation. On a busy
    two-core machine two threads ran up to ten times slower than one.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
