"""Granularity-aware distillation of a GAGS language field (gags-method.md §3).

Entry points: :class:`TrainConfig` (settings, official defaults), :func:`run_training` (headless, with a
progress bar and checkpoints) and :class:`Trainer` (step / pausable run loop / snapshot, for a viewer
thread). Imports are lazy so that ``import gags_viewer.train`` stays cheap.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "Trainer", "run_training"]


def __getattr__(name: str):
    if name == "TrainConfig":  # torch-free, for building the CLI parser
        from gags_viewer.train.config import TrainConfig

        return TrainConfig
    if name in __all__:
        from gags_viewer.train import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
