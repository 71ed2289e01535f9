"""Training inside the viewer (``gags-viewer train-view``): a background trainer, a live preview, a Train panel.

- :class:`TrainingDriver`: runs :meth:`Trainer.run` on a thread and, on a second "monitor" thread,
  every ``preview_every`` seconds swaps a snapshot of the current field into the viewer
  (:func:`swap_field`: a new :class:`~gags_viewer.language.engine.QueryEngine` on the snapshot, so the
  per-field caches — decoded per-Gaussian features, similarities, granularity, PCA — start empty),
  and every ``status_every`` seconds hands a :class:`TrainingStatus` to its listeners (the panel).
- :class:`TrainPanel`: the "Training" folder shown to every browser: iteration / total, it/s, ETA, the
  loss terms, a progress bar, Pause / Resume / Save checkpoint, and a uPlot loss chart.

Responsiveness: the trainer yields to the browsers. While any browser's camera moved in the last
``yield_after_move`` seconds the trainer waits between steps (nerfview records the time of the last
camera move), so interactive frames get the cores; the at-rest frame and queries render while the
trainer runs. No global torch thread setting is changed (it would slow the viewer's own decoding too).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gags_viewer.field.language_field import LanguageField

log = logging.getLogger(__name__)

PLOT_POINTS = 400
"""At most this many points of the loss chart are sent to the browser (evenly strided)."""


@dataclass
class TrainingStatus:
    """What the panel shows; a plain snapshot, safe to read on any thread."""

    iteration: int
    total: int
    its_per_s: float
    eta_s: float
    paused: bool
    finished: bool
    running: bool
    preview_iteration: int
    last: dict
    error: str | None = None

    def summary(self) -> str:
        """Markdown lines for the panel."""
        state = (
            "error"
            if self.error
            else "finished"
            if self.finished
            else "paused"
            if self.paused
            else "training"
            if self.running
            else "stopped"
        )
        lines = [f"**{state}** · iteration {self.iteration:,} / {self.total:,}"]
        if self.its_per_s > 0 and not self.finished:
            lines.append(f"{self.its_per_s:.1f} it/s · ETA {format_duration(self.eta_s)}")
        if self.last:
            lines.append(
                f"loss {self.last['loss']:.4f} · distill {self.last['distill']:.4f}  \n"
                f"entropy {self.last['entropy']:.3f} · consistency {self.last['consistency']:.4f}"
            )
        lines.append(f"preview: iteration {self.preview_iteration:,}")
        if self.error:
            lines.append(f"error: {self.error}")
        return "  \n".join(lines)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


def swap_field(source, field: LanguageField) -> None:
    """Show ``field`` in ``source`` (a :class:`~gags_viewer.viewer.frame.FrameSource` / ViewerApp).

    The query engine is rebuilt on the new field (sharing the old engine's text encoder and settings,
    so encoded phrases stay cached) and the field keeps the shown field's metadata (CLIP model,
    negatives, up direction) apart from its provenance. Browsers are asked to render again.
    """
    from gags_viewer.viewer.editing import engine_for_field, rerender_all

    old_field, old = source.field, source.engine
    field = dataclasses.replace(field, metadata=dataclasses.replace(old_field.metadata, source=field.metadata.source))
    engine = engine_for_field(old, field)
    # Engine first: a frame starting in between uses the new engine with the old field; both share the
    # (frozen) geometry, so such a frame is merely a mix of two consecutive previews.
    source.engine = engine
    source.field = field
    rerender_all(source)


class TrainingDriver:
    """A :class:`~gags_viewer.train.trainer.Trainer` running in the background, previewed in a viewer.

    Args:
        trainer: the trainer (fresh or resumed).
        source: the ViewerApp (or FrameSource) whose field is replaced by snapshots; None: no preview.
        device: where snapshots go (default: the trainer's device).
        preview_every: seconds between preview swaps (only when the iteration changed).
        status_every: seconds between status updates to the listeners.
        checkpoints: let the trainer write its checkpoints (every ``checkpoint_every`` and at the end).
        busy: returns True while the trainer should wait between steps (e.g. a camera is moving).
    """

    def __init__(
        self,
        trainer,
        source=None,
        *,
        device=None,
        preview_every: float = 2.0,
        status_every: float = 1.0,
        checkpoints: bool = True,
        busy: Callable[[], bool] | None = None,
    ):
        self.trainer = trainer
        self.source = source
        self.device = device if device is not None else trainer.device
        self.preview_every = float(preview_every)
        self.status_every = float(status_every)
        self.checkpoints = checkpoints
        self.busy = busy
        self.preview_iteration = trainer.iteration
        self.error: str | None = None
        self.listeners: list[Callable[[TrainingStatus], None]] = []
        self._stop = threading.Event()
        self._train_thread: threading.Thread | None = None
        self._monitor_thread: threading.Thread | None = None
        self._terminal = None  # a tqdm bar in the terminal while training runs (config.progress)
        self._plot_lock = threading.Lock()
        self._plot_iteration = trainer.iteration
        self._plot: dict[str, list[float]] = {"iteration": [], "loss": [], "distill": []}
        for record in trainer.history:
            self._add_record(record)

    # -- control ------------------------------------------------------------------------------------

    def start(self) -> TrainingDriver:
        self._train_thread = threading.Thread(target=self._train, name="gags-train", daemon=True)
        self._monitor_thread = threading.Thread(target=self._monitor, name="gags-train-monitor", daemon=True)
        self._train_thread.start()
        self._monitor_thread.start()
        return self

    def pause(self) -> None:
        self.trainer.pause()
        self._notify()

    def resume(self) -> None:
        self.trainer.resume()
        self._notify()

    @property
    def running(self) -> bool:
        return self._train_thread is not None and self._train_thread.is_alive()

    def stop(self, timeout: float | None = 60.0, save: bool = False) -> bool:
        """Stop after the current step and end both threads; with ``save``, write a checkpoint of the
        last step unless one exists. Returns True if that checkpoint was written here."""
        self._stop.set()
        self.trainer.stop()
        for thread in (self._train_thread, self._monitor_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        if save and self.trainer.iteration > 0 and self.trainer.last_checkpoint != self.trainer.iteration:
            self.trainer.save_checkpoint()
            return True
        return False

    def save_checkpoint(self) -> None:
        """Write a checkpoint now (between two steps; the trainer's lock orders it)."""
        self.trainer.save_checkpoint()

    # -- state --------------------------------------------------------------------------------------

    def status(self) -> TrainingStatus:
        t = self.trainer
        rate = t.its_per_s
        remaining = t.config.iterations - t.iteration
        last = t.history[-1] if t.history else {}
        return TrainingStatus(
            iteration=t.iteration,
            total=t.config.iterations,
            its_per_s=rate,
            eta_s=remaining / rate if rate > 0 else math.nan,
            paused=t.paused,
            finished=t.finished,
            running=self.running,
            preview_iteration=self.preview_iteration,
            last=dict(last),
            error=self.error,
        )

    def loss_curve(self, max_points: int = PLOT_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(iterations, total loss, distillation loss), strided to at most ``max_points`` (float64)."""
        for record in self.trainer.history_since(self._plot_iteration):
            self._add_record(record)
        with self._plot_lock:
            arrays = [np.asarray(self._plot[k], dtype=np.float64) for k in ("iteration", "loss", "distill")]
        n = len(arrays[0])
        if n > max_points:
            index = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
            arrays = [a[index] for a in arrays]
        return arrays[0], arrays[1], arrays[2]

    def _add_record(self, record: dict) -> None:
        with self._plot_lock:
            if record["iteration"] <= self._plot_iteration and self._plot["iteration"]:
                return
            self._plot["iteration"].append(float(record["iteration"]))
            self._plot["loss"].append(float(record["loss"]))
            self._plot["distill"].append(float(record["distill"]))
            self._plot_iteration = max(self._plot_iteration, int(record["iteration"]))

    def update_preview(self) -> bool:
        """Swap a snapshot of the current field into the viewer if training advanced; True if swapped."""
        if self.source is None or self.trainer.iteration == self.preview_iteration:
            return False
        iteration = self.trainer.iteration  # read first: the snapshot is of this iteration or a later one
        field = self.trainer.snapshot(self.device)
        swap_field(self.source, field)
        self.preview_iteration = iteration
        return True

    # -- threads ------------------------------------------------------------------------------------

    def _on_step(self, record: dict) -> None:
        if self._terminal is not None:
            self._terminal.update(record)
        # Give the cores to the browsers while a camera moves (checked between steps).
        if self.busy is None:
            return
        while not self._stop.is_set():
            try:
                if not self.busy():
                    return
            except Exception:  # noqa: BLE001 - never stop training over this check
                return
            time.sleep(0.05)

    def _train(self) -> None:
        from gags_viewer.train.run import TerminalProgress

        if self.trainer.config.progress:
            self._terminal = TerminalProgress(self.trainer)
        try:
            self.trainer.run(on_step=self._on_step, checkpoints=self.checkpoints)
        except Exception as exc:  # noqa: BLE001 - report in the panel instead of killing the thread silently
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("training failed")
        finally:
            if self._terminal is not None:
                self._terminal.close()
            if not self._stop.is_set():
                try:
                    self.update_preview()  # the final field
                except Exception:  # noqa: BLE001
                    log.warning("preview update failed", exc_info=True)
            self._notify()

    def _monitor(self) -> None:
        next_preview = time.monotonic() + self.preview_every
        next_status = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_preview:
                next_preview = now + self.preview_every
                try:
                    self.update_preview()
                except Exception:  # noqa: BLE001 - the preview must never stop training
                    log.warning("preview update failed", exc_info=True)
            if now >= next_status:
                next_status = now + self.status_every
                self._notify()
            if not self.running:  # the training thread shows the final field and notifies
                return
            self._stop.wait(0.1)

    def _notify(self) -> None:
        status = self.status()
        for listener in list(self.listeners):
            try:
                listener(status)
            except Exception:  # noqa: BLE001 - a GUI update must not stop training
                log.debug("training listener failed", exc_info=True)


def camera_moving(viewer, within: float = 0.3) -> Callable[[], bool]:
    """A ``busy`` check: True while a browser's camera moved in the last ``within`` seconds."""
    from gags_viewer.viewer.nerfview_adapter import last_move_time

    return lambda: time.time() - last_move_time(viewer) < within


class TrainPanel:
    """The "Training" folder, shared by all browsers (``server.gui``), updated by the driver's listener."""

    def __init__(self, server, driver: TrainingDriver, order: float = 0.5):
        import viser.uplot as uplot

        self.driver = driver
        gui = server.gui
        with gui.add_folder("Training", order=order):
            self.text = gui.add_markdown("**starting…**")
            self.progress = gui.add_progress_bar(0.0)
            self.pause_button = gui.add_button("Pause")
            self.resume_button = gui.add_button("Resume", visible=False)
            self.save_button = gui.add_button("Save checkpoint")
            x, loss, distill = driver.loss_curve()
            self.plot = gui.add_uplot(
                data=_plot_data(x, loss, distill),
                series=(
                    uplot.Series(label="iteration"),
                    uplot.Series(label="loss", stroke="#ffd369", width=1.5),
                    uplot.Series(label="distill", stroke="#69b7ff", width=1.5),
                ),
                title="loss",
                scales={"x": uplot.Scale(time=False, auto=True), "y": uplot.Scale(auto=True)},
                legend=uplot.Legend(show=True),
                aspect=1.6,
            )
        self._last_plot_iteration = -1

        @self.pause_button.on_click
        def _(_) -> None:
            driver.pause()

        @self.resume_button.on_click
        def _(_) -> None:
            driver.resume()

        @self.save_button.on_click
        def _(event) -> None:
            # Writing a checkpoint waits for the current step and takes seconds: never on viser's
            # callback thread, which would hold every other GUI event of this server meanwhile.
            self.save_button.disabled = True
            threading.Thread(target=self._save, args=(event.client,), name="gags-save-checkpoint", daemon=True).start()

        driver.listeners.append(self.update)

    def _save(self, client) -> None:
        """Write a checkpoint and tell ``client`` (the browser that asked) how it went."""
        try:
            self.driver.save_checkpoint()
            if client is not None:
                client.add_notification(
                    "Checkpoint written",
                    str(self.driver.trainer.config.out),
                    auto_close_seconds=4.0,
                    with_close_button=True,
                )
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            log.warning("checkpoint failed", exc_info=True)
            if client is not None:
                client.add_notification(
                    "Checkpoint failed", str(exc), color="red", auto_close_seconds=8.0, with_close_button=True
                )
        finally:
            self.save_button.disabled = False

    def update(self, status: TrainingStatus) -> None:
        self.text.content = status.summary()
        self.progress.value = 100.0 * status.iteration / max(status.total, 1)
        active = status.running and not status.finished
        self.pause_button.visible = active and not status.paused
        self.resume_button.visible = active and status.paused
        if status.iteration != self._last_plot_iteration:
            self._last_plot_iteration = status.iteration
            self.plot.data = _plot_data(*self.driver.loss_curve())


def _plot_data(x: np.ndarray, loss: np.ndarray, distill: np.ndarray) -> tuple[np.ndarray, ...]:
    if len(x) == 0:  # uPlot needs arrays; show one point at 0
        x, loss, distill = np.zeros(1), np.full(1, np.nan), np.full(1, np.nan)
    return tuple(np.asarray(a, dtype=np.float64) for a in (x, loss, distill))
