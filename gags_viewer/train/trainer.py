"""Granularity-aware distillation (GaD, gags-method.md §3): the training loop, headless or in a thread.

- :class:`Trainer`: state (features, decoders, three Adams, RNG, view stack), ``step()``, a pausable
  ``run()`` loop for a background thread, ``snapshot()`` as a :class:`LanguageField`, loss history,
  checkpoints (resume state + native field + official layout).
- :func:`build_decoders`, :func:`granularity_state_official`: the two trained decoders, fresh and exported.

Elsewhere: the settings are :class:`gags_viewer.train.config.TrainConfig`, the loss terms of one view
:func:`gags_viewer.train.distillation.distillation_losses`, and the headless entry point with a progress
bar :func:`gags_viewer.train.run.run_training` (used by ``gags-viewer train``).

What is frozen and what is trained follows the official code: geometry frozen, per-Gaussian 16-D
features initialised to zero, the CLIP decoder and the granularity decoder trained, one random view per
iteration popped from a reshuffled stack (Python ``random`` seeded with ``seed``).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from gags_viewer.errors import FormatError, GagsError
from gags_viewer.field.language_field import FieldMetadata, LanguageField
from gags_viewer.train import checkpoint as ckpt
from gags_viewer.train.config import RESUME_FIXED, TrainConfig
from gags_viewer.train.distillation import distillation_losses
from gags_viewer.train.scene import PreprocessedScene, TrainView

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GagsError("--device cuda asked for but no CUDA GPU is available")
    return torch.device(name)


def build_decoders(feature_dim: int, seed: int, width: int = 256) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Fresh CLIP and granularity decoders, initialised from ``seed`` without touching the global RNG."""
    from gags_viewer.language.decoders import GagsClipDecoder, MLPDecoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip_decoder = GagsClipDecoder(in_dim=feature_dim, width=width)
        granularity_decoder = MLPDecoder([feature_dim, 64, 128, 64, 32, 16, 3], output="softmax")
    return clip_decoder.train(), granularity_decoder.train()


def granularity_state_official(module: torch.nn.Module) -> dict[str, Tensor]:
    """The granularity decoder's weights in the official layout ``decoder.{0,2,..,10}`` ([out, in, 1, 1])."""
    from gags_viewer.language.decoders import GAGS_GRANULARITY_LAYERS

    state = {}
    for linear, index in zip(module.layers, GAGS_GRANULARITY_LAYERS):
        state[f"decoder.{index}.weight"] = linear.weight.detach().clone()[:, :, None, None]
        state[f"decoder.{index}.bias"] = linear.bias.detach().clone()
    return state


class Trainer:
    """One distillation run, usable headless or from a background thread (the viewer).

    Thread safety: :meth:`step`, :meth:`snapshot`, :meth:`save_checkpoint` and :meth:`history_since`
    take one lock, so a viewer thread can snapshot or read the history while another thread runs
    :meth:`run`. :meth:`pause`, :meth:`resume` and :meth:`stop` only set events and return at once.

    Args:
        config: the settings (``config.out`` is where checkpoints go; None-like use is fine for
            in-memory runs that never call :meth:`save_checkpoint`).
        scene: preloaded views (default: read ``config.scene``).
        geometry: preloaded frozen Gaussians (default: read ``config.init``).
    """

    def __init__(
        self, config: TrainConfig, scene: PreprocessedScene | None = None, geometry: LanguageField | None = None
    ):
        from gags_viewer.train.scene import load_geometry, read_preprocessed_scene

        config.check()
        self.config = config
        self.device = resolve_device(config.device)
        if scene is None:
            scene = read_preprocessed_scene(config.scene, config.resolution, config.center_principal_point)
        if geometry is None:
            geometry = load_geometry(config.init)
        self.scene = scene
        self.views: list[TrainView] = scene.views
        g = geometry.to(self.device)
        self.geometry = LanguageField(  # frozen: plain tensors that never require grad
            means=g.means.detach(),
            quats=g.quats.detach(),
            log_scales=g.log_scales.detach(),
            opacity_logits=g.opacity_logits.detach(),
            sh=g.sh.detach(),
            metadata=g.metadata,
        )
        n = self.geometry.num_gaussians
        self.features = torch.nn.Parameter(torch.zeros(n, config.feature_dim, device=self.device))
        clip_decoder, granularity_decoder = build_decoders(config.feature_dim, config.seed, config.decoder_width)
        self.clip_decoder = clip_decoder.to(self.device)
        self.granularity_decoder = granularity_decoder.to(self.device)
        self.optimizers = {
            "features": torch.optim.Adam([self.features], lr=config.feature_lr, eps=config.feature_adam_eps),
            "clip_decoder": torch.optim.Adam(self.clip_decoder.parameters(), lr=config.decoder_lr),
            "granularity_decoder": torch.optim.Adam(self.granularity_decoder.parameters(), lr=config.decoder_lr),
        }
        self.rng = random.Random(config.seed)
        self.view_stack: list[int] = []
        self.iteration = 0
        self.history: list[dict] = []
        self.last_checkpoint: int | None = None
        self._lock = threading.RLock()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._stop = threading.Event()
        self._durations: list[float] = []

    # ------------------------------------------------------------------ stepping

    @property
    def finished(self) -> bool:
        return self.iteration >= self.config.iterations

    def _next_view(self) -> int:
        """Pop a random view from the stack, refilled with all views when empty (official order rule)."""
        if not self.view_stack:
            self.view_stack = list(range(len(self.views)))
        return self.view_stack.pop(self.rng.randint(0, len(self.view_stack) - 1))

    def step(self) -> dict:
        """One iteration: render a random view, compute the losses, step the three Adams.

        Returns:
            The history record: iteration, view name, loss terms (floats), weights and it/s.
        """
        from gags_viewer.render.api import render

        with self._lock:
            started = time.perf_counter()
            iteration = self.iteration + 1
            view_index = self._next_view()
            view = self.views[view_index]
            w_ent, w_cons = self.config.weights(iteration)
            out = render(self.geometry, view.camera, rgb=False, features=self.features)
            terms = distillation_losses(
                out.features,
                view.seg.to(self.device, non_blocking=True),
                view.embeddings.to(self.device, non_blocking=True),
                self.clip_decoder,
                self.granularity_decoder,
                variant=self.config.variant,
                single_scale=self.config.single_scale,
                smoothing=self.config.region_smoothing,
                region_loss=self.config.region_loss,
            )
            total = terms["distill"] + w_ent * terms["entropy"] + w_cons * terms["consistency"]
            total.backward()
            for optimizer in self.optimizers.values():
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            self.iteration = iteration
            values = torch.stack(
                [total.detach(), terms["distill"].detach(), terms["entropy"].detach(), terms["consistency"].detach()]
            ).tolist()
            duration = time.perf_counter() - started
            self._durations = (self._durations + [duration])[-20:]
            record = {
                "iteration": iteration,
                "view": view.name,
                "loss": values[0],
                "distill": values[1],
                "entropy": values[2],
                "consistency": values[3],
                "entropy_weight": w_ent,
                "consistency_weight": w_cons,
                "its_per_s": len(self._durations) / max(sum(self._durations), 1e-12),
            }
            self.history.append(record)
            return record

    @property
    def its_per_s(self) -> float:
        """Iterations per second over the last 20 steps (pauses excluded)."""
        return len(self._durations) / sum(self._durations) if self._durations else 0.0

    def history_since(self, iteration: int) -> list[dict]:
        """History records after ``iteration`` (for incremental loss plots)."""
        with self._lock:
            return [r for r in self.history if r["iteration"] > iteration]

    # ------------------------------------------------------------------ background control

    def pause(self) -> None:
        """Make :meth:`run` wait before its next step."""
        self._unpaused.clear()

    def resume(self) -> None:
        """Let a paused :meth:`run` continue."""
        self._unpaused.set()

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    def stop(self) -> None:
        """Make :meth:`run` return after the current step (also wakes a paused run)."""
        self._stop.set()
        self._unpaused.set()

    def run(
        self,
        stop_event: threading.Event | None = None,
        on_step: Callable[[dict], None] | None = None,
        checkpoints: bool = True,
    ) -> None:
        """Train until ``config.iterations`` or until stopped; pausable. Safe to call from a thread.

        Args:
            stop_event: extra event that stops the loop when set (besides :meth:`stop`).
            on_step: called with each history record (outside the lock).
            checkpoints: write checkpoints every ``checkpoint_every`` iterations and at the end.
        """
        self._stop.clear()
        while not self.finished:
            if self._stop.is_set() or (stop_event is not None and stop_event.is_set()):
                return
            if not self._unpaused.wait(timeout=0.1):
                continue
            if self._stop.is_set() or (stop_event is not None and stop_event.is_set()):
                return
            record = self.step()
            if checkpoints and self.config.checkpoint_every and self.iteration % self.config.checkpoint_every == 0:
                self.save_checkpoint()
            if on_step is not None:
                on_step(record)
        if checkpoints and self.last_checkpoint != self.iteration:
            self.save_checkpoint()

    # ------------------------------------------------------------------ field and checkpoints

    def snapshot(self, device: torch.device | str | None = None) -> LanguageField:
        """The current field as a :class:`LanguageField` (a consistent copy, taken under the lock).

        Geometry tensors are shared with the trainer (they are frozen); features and decoders are
        copies. ``decoder`` / ``granularity_decoder`` are in the official key layout.
        """
        with self._lock:
            field = LanguageField(
                means=self.geometry.means,
                quats=self.geometry.quats,
                log_scales=self.geometry.log_scales,
                opacity_logits=self.geometry.opacity_logits,
                sh=self.geometry.sh,
                features=self.features.detach().clone(),
                decoder=self.clip_decoder.state_dict_official(),
                granularity_decoder=granularity_state_official(self.granularity_decoder),
                metadata=FieldMetadata(
                    decoder_kind="gags",
                    up=self.geometry.metadata.up,
                    default_camera=self.geometry.metadata.default_camera,
                    source=f"gags-viewer train {self.config.scene} (iteration {self.iteration})",
                ),
            )
        return field if device is None else field.to(device)

    def state_tensors(self) -> tuple[dict[str, Tensor], dict]:
        """Everything needed to continue bit-for-bit: (tensors, JSON-able meta)."""
        tensors: dict[str, Tensor] = {"features": self.features.detach()}
        tensors.update({f"clip_decoder.{k}": v for k, v in self.clip_decoder.state_dict().items()})
        tensors.update({f"granularity_decoder.{k}": v for k, v in self.granularity_decoder.state_dict().items()})
        optimizers = {}
        for name, optimizer in self.optimizers.items():
            flat, json_part = ckpt.flatten_optimizer(name, optimizer)
            tensors.update(flat)
            optimizers[name] = json_part
        tensors["rng.torch"] = torch.get_rng_state()
        version, state, gauss = self.rng.getstate()
        meta = {
            "iteration": self.iteration,
            "config": self.config.to_json(),
            "python_rng": [version, list(state), gauss],
            "view_stack": list(self.view_stack),
            "views": [v.name for v in self.views],
            "num_gaussians": self.geometry.num_gaussians,
            "optimizers": optimizers,
            "history": self.history,
        }
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        """Restore what :meth:`state_tensors` produced (same scene and geometry)."""
        where = ckpt.state_path(self.config.out)
        views = [v.name for v in self.views]
        if meta["views"] != views:
            raise FormatError(where, f"was trained on {len(meta['views'])} other views; the scene's views differ")
        if meta["num_gaussians"] != self.geometry.num_gaussians:
            raise FormatError(
                where, f"has {meta['num_gaussians']} Gaussians but --init has {self.geometry.num_gaussians}"
            )
        with self._lock, torch.no_grad():
            if tuple(tensors["features"].shape) != tuple(self.features.shape):
                raise FormatError(
                    where,
                    f"features have shape {list(tensors['features'].shape)}, expected {list(self.features.shape)}",
                )
            self.features.copy_(tensors["features"])
            for prefix, module in (
                ("clip_decoder.", self.clip_decoder),
                ("granularity_decoder.", self.granularity_decoder),
            ):
                module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            for name, optimizer in self.optimizers.items():
                ckpt.restore_optimizer(name, optimizer, tensors, meta["optimizers"][name])
            torch.set_rng_state(tensors["rng.torch"])
            version, state, gauss = meta["python_rng"]
            self.rng.setstate((version, tuple(state), gauss))
            self.view_stack = list(meta["view_stack"])
            self.iteration = int(meta["iteration"])
            self.history = list(meta["history"])
            self.last_checkpoint = self.iteration

    def save_checkpoint(self, exports: bool = True) -> None:
        """Write the resume state and (``exports``) the native field and the official layout into ``config.out``."""
        from gags_viewer.field.native import write_native
        from gags_viewer.train.export import write_official

        with self._lock:
            out = Path(self.config.out)
            out.mkdir(parents=True, exist_ok=True)
            if exports:
                field = self.snapshot().validate()
                write_native(field.to("cpu"), out / "field")
                write_official(
                    field.to("cpu"),
                    out,
                    self.iteration,
                    decoder_optimizer=self.optimizers["clip_decoder"].state_dict(),
                    scale_decoder_optimizer=self.optimizers["granularity_decoder"].state_dict(),
                    source_path=self.config.scene,
                    resolution=self.config.resolution,
                )
            tensors, meta = self.state_tensors()
            ckpt.save_state(out, tensors, meta)  # last: a resumable state implies complete exports
            self.last_checkpoint = self.iteration

    @staticmethod
    def from_checkpoint(
        config: TrainConfig, scene: PreprocessedScene | None = None, geometry: LanguageField | None = None
    ) -> Trainer:
        """A trainer continuing the run in ``config.out``; settings in :data:`RESUME_FIXED` come from it."""
        tensors, meta = ckpt.load_state(config.out)
        saved = TrainConfig.from_json(meta["config"])
        changes = {key: getattr(saved, key) for key in RESUME_FIXED if getattr(saved, key) != getattr(config, key)}
        if changes:
            log.warning(
                "resuming with the checkpoint's settings: %s",
                ", ".join(f"{k}={v!r}" for k, v in sorted(changes.items())),
            )
        merged = dataclasses.replace(config, **{key: getattr(saved, key) for key in RESUME_FIXED})
        trainer = Trainer(merged, scene=scene, geometry=geometry)
        trainer.load_state(tensors, meta)
        return trainer
