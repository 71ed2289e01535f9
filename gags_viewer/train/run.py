"""Headless training from the command line (``gags-viewer train``): output checks, Ctrl-C, progress bar."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from pathlib import Path

import torch

from gags_viewer.errors import GagsError
from gags_viewer.train import checkpoint as ckpt
from gags_viewer.train.config import TrainConfig
from gags_viewer.train.trainer import Trainer


def check_output(config: TrainConfig) -> None:
    """Refuse outputs that would overwrite the input model or an unrelated directory."""
    out = Path(config.out).resolve()
    init = Path(config.init).resolve()
    scene = Path(config.scene).resolve()
    if init == out or out in init.parents:
        raise GagsError(f"--out {config.out} contains the input model {config.init}; choose another output directory")
    scene_data = [scene] + [scene / name for name in ("images", "sparse", "language_features")]
    if any(d == out or d in out.parents for d in scene_data[1:]) or out == scene:
        raise GagsError(f"--out {config.out} is inside the preprocessed scene's data; choose another output directory")
    state = ckpt.state_path(out)
    if config.resume:
        if not state.is_file():
            raise GagsError(f"--resume: {config.out} holds no checkpoint ({ckpt.STATE_DIR}/{ckpt.STATE_FILE})")
        return
    if state.is_file():
        raise GagsError(
            f"{config.out} already holds a training run; pass --resume to continue it or choose another --out"
        )
    if out.exists() and (not out.is_dir() or any(p.name != "train_config.json" for p in out.iterdir())):
        raise GagsError(f"--out {config.out} exists and is not empty; choose a new output directory")


@contextlib.contextmanager
def deterministic_algorithms():
    """torch's deterministic kernels while the block runs (then the previous setting again): with two or more
    CPU threads, some accumulations (``index_add_``) otherwise sum in an order that varies from run to run,
    so neither a resumed run nor a rebuild would be bit-for-bit. Costs ~5 % of a CPU training step."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def start_trainer(config: TrainConfig) -> Trainer:
    """A trainer for ``config`` after the output checks: resumed from ``config.out`` with ``--resume``,
    else fresh (with ``train_config.json`` written). Prints the scene's warnings."""
    import json

    from gags_viewer.fsutil import atomic_write_text

    config.check()
    check_output(config)
    if config.resume:
        trainer = Trainer.from_checkpoint(config)
    else:
        trainer = Trainer(config)
        Path(config.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(config.out) / "train_config.json", json.dumps(trainer.config.to_json(), indent=1))
    for line in trainer.scene.report():
        print(f"warning: {line}")
    return trainer


def run_training(config: TrainConfig) -> Trainer:
    """Headless training with a progress bar; checkpoints as configured; Ctrl-C saves and stops. On the
    CPU it runs with deterministic kernels, so a killed and resumed run equals an uninterrupted one bit for
    bit whatever the thread count (gsplat's CUDA backward uses atomic adds: no such promise on a GPU).

    Returns:
        The trainer after the last step (its field: ``trainer.snapshot()``).
    """
    trainer = start_trainer(config)
    print(
        f"training {trainer.geometry.num_gaussians:,} Gaussians on {len(trainer.views)} views "
        f"({trainer.views[0].width}x{trainer.views[0].height}) on {trainer.device}, "
        f"iterations {trainer.iteration + 1}..{trainer.config.iterations}"
    )

    stop = threading.Event()
    previous_handler = None
    if threading.current_thread() is threading.main_thread():

        def interrupt(signum, frame):  # first Ctrl-C: finish the step, checkpoint, stop
            stop.set()
            signal.signal(signal.SIGINT, previous_handler or signal.default_int_handler)

        previous_handler = signal.signal(signal.SIGINT, interrupt)

    bar = TerminalProgress(trainer) if config.progress else None

    try:
        with deterministic_algorithms() if trainer.device.type == "cpu" else contextlib.nullcontext():
            trainer.run(stop_event=stop, on_step=bar.update if bar is not None else None)
        if stop.is_set() and trainer.last_checkpoint != trainer.iteration:
            trainer.save_checkpoint()
            print(f"\nstopped at iteration {trainer.iteration}; checkpoint written, continue with --resume")
    finally:
        if bar is not None:
            bar.close()
        if previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous_handler)
    return trainer


class TerminalProgress:
    """A tqdm bar of a training run in the terminal, fed by the trainer's per-step records."""

    def __init__(self, trainer: Trainer):
        from tqdm import tqdm

        self.total = trainer.config.iterations
        self.bar = tqdm(
            total=self.total,
            initial=trainer.iteration,
            unit="it",
            dynamic_ncols=True,
            desc="distilling",
            smoothing=0.1,
            mininterval=0.5,
        )

    def update(self, record: dict) -> None:
        self.bar.update(1)
        if record["iteration"] % 10 == 0 or record["iteration"] == self.total:
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}",
                distill=f"{record['distill']:.4f}",
                ent=f"{record['entropy']:.3f}",
                cons=f"{record['consistency']:.4f}",
                refresh=False,
            )

    def close(self) -> None:
        self.bar.close()


def estimate_seconds(trainer: Trainer) -> float:
    """Seconds left at the current rate (NaN before the first step)."""
    rate = trainer.its_per_s
    return (trainer.config.iterations - trainer.iteration) / rate if rate > 0 else math.nan
