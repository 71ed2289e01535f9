import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported; see gags_viewer/__init__.py

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

# Property-based tests (tests/test_fuzz_*.py) are deterministic: the same examples on every run and
# machine, no example database. Each test sets its own example count (tests/fuzz.py:examples).
settings.register_profile(
    "gags",
    derandomize=True,
    database=None,
    deadline=None,  # hangs are caught by pytest-timeout; timing on a shared CI box is not a property
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("gags-debug", parent=settings.get_profile("gags"), phases=[Phase.explicit, Phase.generate])
"""For hunting failures fast: ``pytest --hypothesis-profile=gags-debug`` reports without shrinking."""
settings.load_profile("gags")

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
