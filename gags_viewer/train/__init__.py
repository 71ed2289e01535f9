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
    if name == "Trainer":
        from gags_viewer.train.trainer import Trainer

        return Trainer
    if name == "run_training":
        from gags_viewer.train.run import run_training

        return run_training
    raise AttributeError(name)
