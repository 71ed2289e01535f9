"""Set-up shared by the training tests (``test_train_*.py``).

Import :func:`one_thread` into a test module to make it autouse there:
``from tests.train_helpers import one_thread  # noqa: F401``.
"""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads slow small ops 10x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
