"""Training inside the viewer: background iterations, pause / resume, live preview swaps, queries on the
swapped field, yielding to a moving camera, and the Training panel on a real viser server."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import numpy as np
import pytest
import torch

from gags_viewer.train.config import TrainConfig
from gags_viewer.train.synthetic import make_synthetic_scene, write_synthetic_scene
from gags_viewer.train.trainer import Trainer
from gags_viewer.viewer.app import ViewerApp
from gags_viewer.viewer.settings import ViewSettings
from gags_viewer.viewer.training import TrainingDriver, TrainPanel, format_duration
from tests.train_helpers import one_thread  # noqa: F401 (autouse: one torch thread in this module)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer_train_scene")
    write_synthetic_scene(
        make_synthetic_scene(num_objects=3, gaussians_per_object=40, num_views=3, width=48, height=36), root
    )
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from gags_viewer.language import TextEncoder
    from tests.tiny_clip import make_tiny_clip

    return TextEncoder(make_tiny_clip(tmp_path_factory.mktemp("tiny_clip")), device="cpu")


def make_trainer(scene_dir, out, iterations=100_000):
    config = TrainConfig(
        scene=scene_dir,
        init=scene_dir / "init" / "point_cloud.ply",
        out=out,
        iterations=iterations,
        decoder_width=32,
        progress=False,
        device="cpu",
        feature_lr=5e-2,
        decoder_lr=5e-3,
    )
    return Trainer(config)


class FakeSession:
    def __init__(self):
        self.rerenders = 0

    def rerender(self):
        self.rerenders += 1


def wait_for(condition, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def make_app(trainer, encoder):
    from gags_viewer.language import QueryEngine

    field = trainer.snapshot("cpu")
    field = dataclasses.replace(field, metadata=dataclasses.replace(field.metadata, clip=encoder.spec))
    app = ViewerApp(field, QueryEngine(field, encoder), output_dir=trainer.config.out / "exports")
    session = FakeSession()
    app.sessions[1] = session
    return app, session


def test_background_training_pause_resume_and_preview(scene_dir, encoder, tmp_path):
    trainer = make_trainer(scene_dir, tmp_path / "out")
    app, session = make_app(trainer, encoder)
    field0, engine0 = app.field, app.engine
    assert float(field0.features.abs().sum()) == 0.0
    statuses = []
    driver = TrainingDriver(trainer, app, preview_every=0.2, status_every=0.1, checkpoints=False)
    driver.listeners.append(statuses.append)
    driver.start()
    try:
        wait_for(lambda: trainer.iteration >= 5, what="iterations in the background")
        assert driver.running and not trainer.paused

        # Live preview: the shown field is a snapshot with trained features, with a fresh engine on it.
        wait_for(lambda: driver.preview_iteration >= 3 and app.field is not field0, what="a preview swap")
        assert app.engine is not engine0 and app.engine.field is app.field
        assert float(app.field.features.abs().sum()) > 0.0
        assert app.field.metadata.clip == encoder.spec  # the shown field's metadata is kept
        assert app.engine.text_encoder is encoder  # encoded phrases stay cached
        assert session.rerenders >= 1

        # Queries work on the swapped field while training continues.
        scores = app.engine.gaussian_relevancy(["object 0"], ["object", "things"])
        assert scores.shape == (1, trainer.geometry.num_gaussians) and torch.isfinite(scores).all()
        camera = trainer.views[0].camera
        frame = app.compose(camera, ViewSettings(queries_text="object 0", display="overlay"))
        assert frame.image.shape == (camera.height, camera.width, 3)
        frame = app.compose(camera, ViewSettings(display="pca"))
        assert frame.image.dtype == np.uint8

        # Pause: the count stops; resume: it continues.
        driver.pause()
        assert trainer.paused
        time.sleep(0.3)  # a step in flight finishes
        stopped_at = trainer.iteration
        time.sleep(0.5)
        assert trainer.iteration == stopped_at
        assert driver.status().paused
        wait_for(lambda: statuses and statuses[-1].paused, what="a paused status")
        driver.resume()
        wait_for(lambda: trainer.iteration >= stopped_at + 3, what="iterations after resume")

        status = driver.status()
        assert status.its_per_s > 0 and np.isfinite(status.eta_s) and "iteration" in status.summary()
        x, loss, distill = driver.loss_curve()
        assert len(x) == len(loss) == len(distill) >= stopped_at
        assert np.all(np.diff(x) > 0)
        x, _, _ = driver.loss_curve(max_points=4)
        assert len(x) <= 4
    finally:
        driver.stop()
    assert not driver.running


def test_trainer_yields_while_busy_and_finishes_with_a_checkpoint(scene_dir, encoder, tmp_path):
    trainer = make_trainer(scene_dir, tmp_path / "out", iterations=12)
    trainer.config.checkpoint_every = 0
    app, _ = make_app(trainer, encoder)
    busy = {"on": True}
    driver = TrainingDriver(trainer, app, preview_every=0.1, status_every=0.1, busy=lambda: busy["on"])
    driver.start()
    try:
        wait_for(lambda: trainer.iteration >= 1, what="the first step")
        time.sleep(0.4)
        assert trainer.iteration == 1  # waits between steps while the camera "moves"
        busy["on"] = False
        wait_for(lambda: not driver.running, what="the end of training")
    finally:
        driver.stop()
    assert trainer.iteration == 12 and trainer.last_checkpoint == 12
    assert (tmp_path / "out" / "field").is_dir()
    assert driver.preview_iteration == 12  # the final field is shown
    assert driver.status().finished and "finished" in driver.status().summary()


def test_stop_saves_a_checkpoint(scene_dir, tmp_path):
    trainer = make_trainer(scene_dir, tmp_path / "out")
    driver = TrainingDriver(trainer, None, checkpoints=False).start()
    wait_for(lambda: trainer.iteration >= 2, what="steps")
    assert driver.stop(save=True)
    assert trainer.last_checkpoint == trainer.iteration and not driver.running
    assert driver.update_preview() is False  # no viewer: nothing to swap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_panel_on_a_viser_server(scene_dir, tmp_path):
    import viser

    trainer = make_trainer(scene_dir, tmp_path / "out", iterations=6)
    driver = TrainingDriver(trainer, None, status_every=0.1, checkpoints=False)
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        panel = TrainPanel(server, driver)
        panel.update(driver.status())
        assert "iteration 0 / 6" in panel.text.content
        driver.start()
        wait_for(lambda: not driver.running, what="the end of training")
        panel.update(driver.status())
        assert "finished" in panel.text.content and panel.progress.value == pytest.approx(100.0)
        assert not panel.pause_button.visible and not panel.resume_button.visible
        assert len(panel.plot.data[0]) == 6
    finally:
        driver.stop()
        server.stop()


def test_save_button_never_blocks_the_gui_thread(scene_dir, tmp_path):
    """The click returns at once; the (slow) checkpoint is written on its own thread and reported."""
    import types

    import viser

    trainer = make_trainer(scene_dir, tmp_path / "out", iterations=2)
    driver = TrainingDriver(trainer, None, status_every=0.1, checkpoints=False)
    release = threading.Event()
    saved = []
    driver.save_checkpoint = lambda: (release.wait(10), saved.append(True))
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        panel = TrainPanel(server, driver)
        notes = []
        client = types.SimpleNamespace(add_notification=lambda title, *a, **k: notes.append(title))
        (on_click,) = panel.save_button._impl.update_cb
        start = time.monotonic()
        on_click(types.SimpleNamespace(client=client))
        assert time.monotonic() - start < 1.0 and panel.save_button.disabled and not saved
        release.set()
        wait_for(lambda: notes == ["Checkpoint written"], what="the checkpoint notification")
        assert saved == [True] and not panel.save_button.disabled
    finally:
        server.stop()


def test_format_duration():
    assert format_duration(float("nan")) == "–"
    assert format_duration(42) == "42 s"
    assert format_duration(125) == "2 min 05 s"
    assert format_duration(3 * 3600 + 60) == "3 h 01 min"


def test_progress_bar_in_the_terminal_when_asked(scene_dir, tmp_path, capfd):
    """train-view --progress: the background run also shows a tqdm bar in the terminal, to the last step."""
    trainer = make_trainer(scene_dir, tmp_path / "out", iterations=5)
    trainer.config = dataclasses.replace(trainer.config, progress=True)
    driver = TrainingDriver(trainer, None, preview_every=0.2, status_every=0.1, checkpoints=False)
    driver.start()
    try:
        wait_for(
            lambda: driver._train_thread is not None and not driver._train_thread.is_alive(), what="training to end"
        )
    finally:
        driver.stop()
    err = capfd.readouterr().err
    assert "distilling" in err and "5/5" in err
