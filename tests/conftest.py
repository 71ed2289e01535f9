import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
