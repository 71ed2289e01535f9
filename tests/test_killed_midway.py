"""Processes killed (SIGKILL, no clean-up) at arbitrary moments: training resumes losing at most one
checkpoint interval, and an export or a checkpoint killed while it is written leaves no partial file
under its name."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gags_viewer.train.checkpoint import load_state, state_path
from gags_viewer.train.synthetic import make_synthetic_scene, write_synthetic_scene

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_EVERY = 2
ITERATIONS = 200  # never reached: every run is killed
TRAINING = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from gags_viewer.train.config import TrainConfig
    from gags_viewer.train.trainer import Trainer
    scene, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = TrainConfig(scene=scene, init=scene / "init" / "point_cloud.ply", out=out, iterations={ITERATIONS},
                         checkpoint_every={CHECKPOINT_EVERY}, decoder_width=32, progress=False, device="cpu")
    if "--resume" in sys.argv:
        trainer = Trainer.from_checkpoint(TrainConfig(**{{**config.__dict__, "resume": True}}))
    else:
        trainer = Trainer(config)
    print("ready", flush=True)
    trainer.run(on_step=lambda record: print("iteration", record["iteration"], flush=True))
    """
)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_scene")
    write_synthetic_scene(
        make_synthetic_scene(num_objects=2, gaussians_per_object=40, num_views=3, width=48, height=36), root
    )
    return root


def _train_and_kill(scene_dir: Path, out: Path, delay: float, resume: bool = False) -> int:
    """Start a training run, SIGKILL it ``delay`` s after its first step; the last iteration it reported."""
    args = [sys.executable, "-c", TRAINING, str(scene_dir), str(out)] + (["--resume"] if resume else [])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    last = 0
    assert process.stdout.readline().strip() == "ready", process.stderr.read()[-2000:]
    first = process.stdout.readline()
    assert first.startswith("iteration"), first + process.stderr.read()[-2000:]
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    remaining, _ = process.communicate(timeout=60)
    for line in [first, *remaining.splitlines()]:
        if line.startswith("iteration"):
            last = int(line.split()[1])
    return last


def _saved_iteration(out: Path) -> int:
    """The iteration of the resume state on disk (0 when none was written yet); it must be complete."""
    if not state_path(out).exists():
        return 0
    _, meta = load_state(out)
    return meta["iteration"]


def test_training_killed_at_random_moments_loses_at_most_one_interval(scene_dir, tmp_path):
    rng = random.Random(12)
    out = tmp_path / "run"
    reached = _train_and_kill(scene_dir, out, delay=rng.uniform(0.0, 0.4))
    for kills in range(1, 4):
        saved = _saved_iteration(out)
        assert reached - saved <= CHECKPOINT_EVERY, (kills, saved, reached)
        reached = _train_and_kill(scene_dir, out, delay=rng.uniform(0.0, 0.4), resume=saved > 0)
        assert reached > saved  # the resumed run went on from the saved state
    assert reached - _saved_iteration(out) <= CHECKPOINT_EVERY


KILLED_WHILE_SAVING = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import gags_viewer.fsutil as fsutil
    import gags_viewer.train.checkpoint as checkpoint
    from gags_viewer.train.checkpoint import save_state
    import torch
    out = Path(sys.argv[1])
    save_state(out, {"x": torch.zeros(1000)}, {"iteration": 2})
    def half_then_die(path, data):  # the real atomic writer, killed with half of the file written
        with fsutil.atomic_write(path) as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.atomic_write_bytes = half_then_die
    save_state(out, {"x": torch.ones(1000)}, {"iteration": 4})
    """
)


def test_a_checkpoint_killed_while_written_keeps_the_previous_one(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_SAVING, str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    tensors, meta = load_state(tmp_path)
    assert meta["iteration"] == 2 and float(tensors["x"].sum()) == 0.0
    assert state_path(tmp_path).name in os.listdir(state_path(tmp_path).parent)


KILLED_VIDEO = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from gags_viewer.viewer.export import write_png, write_video
    target = sys.argv[1]
    def frames():
        for i in range(40):
            if i == 12:
                os.kill(os.getpid(), signal.SIGKILL)
            yield np.full((64, 96, 3), i * 5, dtype=np.uint8)
    if target.endswith(".png"):
        import gags_viewer.viewer.export as export
        real = export.encode_png
        def encode_and_die(image):
            data = real(image)
            os.kill(os.getpid(), signal.SIGKILL)
        export.encode_png = encode_and_die
        write_png(target, np.zeros((64, 96, 3), dtype=np.uint8))
    else:
        write_video(target, frames(), fps=10)
    """
)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "view.png"])
def test_an_export_killed_midway_leaves_no_file_under_its_name(tmp_path, name):
    target = tmp_path / name
    done = subprocess.run(
        [sys.executable, "-c", KILLED_VIDEO, str(target)], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not target.exists()
    # what a SIGKILL leaves behind is only a hidden temporary sibling, never a file a user would open
    assert all(entry.startswith(".") for entry in os.listdir(tmp_path)), os.listdir(tmp_path)
