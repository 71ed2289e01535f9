"""gags-viewer: view, query, train and evaluate language Gaussian fields (GAGS)."""

import os as _os

# torch and numba share one OpenMP runtime; its default busy-waiting after every parallel region
# costs ~10 ms of spinning per region on shared CPUs (measured: benchmarks/render.py). Passive
# waiting must be chosen before torch is imported, which this package init precedes.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
