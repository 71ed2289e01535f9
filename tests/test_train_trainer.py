"""Distillation training on a small synthetic scene: learning, relevancy, resume, outputs, threads."""

import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace

import pytest
import torch

from gags_viewer.errors import GagsError
from gags_viewer.language.decoders import GagsClipDecoder
from gags_viewer.language.relevancy import relevancy
from gags_viewer.render.api import render
from gags_viewer.train.config import TrainConfig
from gags_viewer.train.distillation import distillation_losses
from gags_viewer.train.run import run_training
from gags_viewer.train.scene import read_preprocessed_scene
from gags_viewer.train.synthetic import make_synthetic_scene, write_synthetic_scene
from gags_viewer.train.trainer import Trainer
from tests.train_helpers import one_thread  # noqa: F401 (autouse: one torch thread in this module)

# Small and quick: 3 objects x 60 Gaussians, 4 views rendered at 32x24, a narrow CLIP decoder.
FAST = dict(decoder_width=64, progress=False, device="cpu")


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_scene")
    write_synthetic_scene(
        make_synthetic_scene(num_objects=3, gaussians_per_object=60, num_views=4, width=64, height=48), root
    )
    return root


def config_for(scene_dir, out, **kwargs):
    return TrainConfig(scene=scene_dir, init=scene_dir / "init" / "point_cloud.ply", out=out, **{**FAST, **kwargs})


@pytest.fixture(scope="module")
def trained(scene_dir, tmp_path_factory):
    """Official losses with learned granularity, higher learning rates so that 50 steps suffice."""
    config = config_for(
        scene_dir, tmp_path_factory.mktemp("trained") / "out", iterations=50, feature_lr=5e-2, decoder_lr=5e-3
    )
    trainer = Trainer(config)
    trainer.run(checkpoints=False)
    return trainer


def test_loss_decreases(trained):
    distill = [r["distill"] for r in trained.history]
    assert len(distill) == 50
    first, last = sum(distill[:10]) / 10, sum(distill[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    assert all(r["its_per_s"] > 0 for r in trained.history)


def assert_localised(decoded, solid, region, rid, embedding, negatives, name):
    """Relevancy of ``embedding`` is higher inside region ``rid`` than on the other labelled pixels, and its
    cosine similarity peaks inside (over rendered pixels: empty ones decode a constant, see §1.4)."""
    inside = region == rid
    others = (region >= 0) & ~inside
    rel = relevancy(decoded, embedding[None], negatives)[..., 0]
    if others.any():
        assert rel[inside].mean() > rel[others].mean() + 0.3, (name, rid)
    similarity = torch.where(solid, decoded @ embedding, torch.full_like(rel, -2.0))
    assert inside.flatten()[similarity.flatten().argmax()], (name, rid)


def test_relevancy_of_a_region_feature_is_highest_inside_it(trained):
    """Over the rendered pixels (alpha > 0.5: empty pixels decode a constant, as in §1.4), per region that
    training assigned (argmax of the smoothed granularity), the region's own CLIP feature peaks inside it."""
    negatives = torch.nn.functional.normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    checked = 0
    for view in trained.views:
        with torch.no_grad():
            out = render(trained.geometry, view.camera, rgb=False, features=trained.features)
            features, solid = out.features, out.alpha > 0.5
            region = distillation_losses(
                features, view.seg, view.embeddings, trained.clip_decoder, trained.granularity_decoder
            )["region"]
            decoded = trained.clip_decoder(features)
        for rid in torch.unique(region[region >= 0]):
            assert_localised(decoded, solid, region, int(rid), view.embeddings[rid], negatives, view.name)
            checked += 1
    assert checked >= len(trained.views)


def test_single_scale_object_level_localises_each_object(scene_dir, tmp_path):
    trainer = Trainer(
        config_for(scene_dir, tmp_path / "out", iterations=40, single_scale="m", feature_lr=5e-2, decoder_lr=5e-3)
    )
    trainer.run(checkpoints=False)
    negatives = torch.nn.functional.normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(1)), dim=-1)
    for view in trainer.views:
        with torch.no_grad():
            out = render(trainer.geometry, view.camera, rgb=False, features=trainer.features)
            decoded = trainer.clip_decoder(out.features)
        objects = view.seg[1].long()
        for rid in torch.unique(objects[objects >= 0]):
            inside = objects == rid
            if inside.sum() < 4:
                continue
            assert_localised(decoded, out.alpha > 0.5, objects, int(rid), view.embeddings[rid], negatives, view.name)


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)  # as in the parent test process
    from gags_viewer.train.config import TrainConfig
    from gags_viewer.train.trainer import Trainer
    scene, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = TrainConfig(scene=scene, init=scene / "init" / "point_cloud.ply", out=out, iterations=6,
                         checkpoint_every=3, decoder_width=64, progress=False, device="cpu")
    def on_step(record):
        if record["iteration"] == 4:  # after the checkpoint at 3: die without any cleanup
            os.kill(os.getpid(), signal.SIGKILL)
    Trainer(config).run(on_step=on_step)
    """
)


def all_tensors(trainer):
    tensors, meta = trainer.state_tensors()
    return tensors, {k: meta[k] for k in ("iteration", "python_rng", "view_stack")}


def test_kill_and_resume_equals_uninterrupted_run(scene_dir, tmp_path):
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(scene_dir), str(tmp_path / "killed")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]

    straight = Trainer(config_for(scene_dir, tmp_path / "straight", iterations=6))
    for _ in range(6):
        straight.step()

    resumed = Trainer.from_checkpoint(config_for(scene_dir, tmp_path / "killed", iterations=6, resume=True))
    assert resumed.iteration == 3 and len(resumed.history) == 3
    resumed.run(checkpoints=False)
    assert resumed.iteration == 6

    expected, expected_meta = all_tensors(straight)
    got, got_meta = all_tensors(resumed)
    assert got_meta == expected_meta
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]


def test_run_training_resumes_bit_for_bit_with_two_threads(tmp_path):
    """Headless training uses deterministic kernels: with two threads index_add_ would otherwise sum in a
    varying order (on scenes big enough to be split between threads) and the resumed run would drift."""
    scene_dir = tmp_path / "scene"
    write_synthetic_scene(
        make_synthetic_scene(num_objects=3, gaussians_per_object=1500, num_views=2, width=128, height=96), scene_dir
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        straight = run_training(config_for(scene_dir, tmp_path / "straight", iterations=6, checkpoint_every=3))
        run_training(config_for(scene_dir, tmp_path / "split", iterations=3, checkpoint_every=3))
        resumed = run_training(config_for(scene_dir, tmp_path / "split", iterations=6, checkpoint_every=3, resume=True))
    finally:
        torch.set_num_threads(previous)
    assert not torch.are_deterministic_algorithms_enabled()  # the previous setting is back
    expected, _ = all_tensors(straight)
    got, _ = all_tensors(resumed)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_run_training_writes_native_and_official_outputs(scene_dir, tmp_path):
    from gags_viewer.field.load import load_field
    from gags_viewer.field.official import official_iterations, read_official

    out = tmp_path / "out"
    trainer = run_training(config_for(scene_dir, out, iterations=4, checkpoint_every=2))
    assert official_iterations(out) == [2, 4]
    official = read_official(out)  # latest = 4
    native = load_field(out / "field")
    snapshot = trainer.snapshot()
    for field in (official, native):
        assert torch.equal(field.features, snapshot.features)
        assert field.features.shape == (180, 16)
        for key, value in snapshot.decoder.items():
            assert torch.equal(field.decoder[key], value)
        assert field.granularity_decoder is not None
    decoder = GagsClipDecoder.from_state_dict(official.decoder)
    x = torch.randn(5, 16)
    assert torch.allclose(decoder(x), trainer.clip_decoder(x))
    assert "Namespace(" in (out / "cfg_args").read_text()
    payload = torch.load(out / "decoder_chkpnt4.pth", weights_only=True)
    assert set(payload) == {"module_state_dict", "optimizer_state_dict"}
    assert (out / "resume" / "state.safetensors").is_file()

    with pytest.raises(GagsError, match="--resume"):
        run_training(config_for(scene_dir, out, iterations=4))
    more = run_training(config_for(scene_dir, out, iterations=6, resume=True))
    assert more.iteration == 6 and official_iterations(out) == [2, 4, 6]


def test_refuses_to_write_over_the_input_model(scene_dir, tmp_path):
    with pytest.raises(GagsError, match="contains the input model"):
        run_training(config_for(scene_dir, scene_dir / "init", iterations=1))
    with pytest.raises(GagsError, match="holds no checkpoint"):
        run_training(config_for(scene_dir, tmp_path / "fresh", iterations=1, resume=True))


def test_background_run_pause_resume_snapshot_stop(scene_dir, tmp_path):
    scene = read_preprocessed_scene(scene_dir)
    trainer = Trainer(config_for(scene_dir, tmp_path / "out", iterations=10_000), scene=scene)
    thread = threading.Thread(target=trainer.run, kwargs={"checkpoints": False}, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while trainer.iteration < 2 and time.time() < deadline:
        time.sleep(0.02)
    field = trainer.snapshot()  # consistent copy while training runs
    assert field.validate().feature_dim == 16 and field.decoder is not None
    trainer.pause()
    time.sleep(0.5)  # let the current step finish
    paused_at = trainer.iteration
    time.sleep(0.5)
    assert trainer.paused and trainer.iteration == paused_at
    trainer.resume()
    while trainer.iteration <= paused_at and time.time() < deadline:
        time.sleep(0.02)
    assert trainer.iteration > paused_at
    trainer.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert trainer.history_since(paused_at)[0]["iteration"] == paused_at + 1


@pytest.mark.parametrize("variant, single_scale", [("paper", None), ("official", "mix")])
def test_variants_run(scene_dir, tmp_path, variant, single_scale):
    trainer = Trainer(config_for(scene_dir, tmp_path / "out", iterations=2, variant=variant, single_scale=single_scale))
    for _ in range(2):
        record = trainer.step()
    assert all(torch.isfinite(torch.tensor(record[k])) for k in ("loss", "distill", "entropy", "consistency"))


def test_late_weights_switch_on_at_15001():
    config = TrainConfig(scene="s", init="i.ply", out="o")
    assert config.weights(15000) == (0.001, 0.0)
    assert config.weights(15001) == (0.002, 0.1)
    assert (config.iterations, config.feature_lr, config.feature_adam_eps, config.decoder_lr, config.resolution) == (
        30000,
        1e-3,
        1e-15,
        1e-4,
        2,
    )
    assert replace(config, switch_iteration=2).weights(2) == (0.002, 0.1)
