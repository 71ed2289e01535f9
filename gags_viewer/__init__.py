"""gags-viewer: view, query, train and evaluate language Gaussian fields (GAGS)."""

__version__ = "0.1.0"
