"""``gags-viewer preprocess`` end to end: tiny synthetic scene, tiny random-weight SAM, the demo CLIP model.

Covers: the files it writes and that ``gags-viewer train`` reads them unchanged; resuming after an
interruption gives the same bytes; one-line errors for bad input; a local Ray run equals the local run.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gags_viewer.cli import main
from gags_viewer.field.ply import read_ply, write_ply
from gags_viewer.train.synthetic import make_synthetic_scene, write_synthetic_scene
from tests.tiny_sam import save_tiny_sam

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo_clip"
CLIP_ARGS = [
    "--clip-model",
    "gags-demo-clip",
    "--clip-config",
    str(ASSETS / "gags-demo-clip.json"),
    "--clip-checkpoint",
    str(ASSETS / "gags-demo-clip.safetensors"),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread (as a Ray task gets), so the local and Ray runs do the same float sums."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def raw_scene(tmp_path_factory):
    """images/ + sparse/0 + the pretrained 3DGS, no language features; a tiny SAM checkpoint beside."""
    root = tmp_path_factory.mktemp("photos") / "scene"
    write_synthetic_scene(
        make_synthetic_scene(num_objects=3, gaussians_per_object=60, num_views=3, width=64, height=48), root
    )
    shutil.rmtree(root / "language_features")
    save_tiny_sam(root.parent / "sam_tiny.pth")
    return root


def fresh_copy(raw_scene, tmp_path, name="scene"):
    target = tmp_path / name
    shutil.copytree(raw_scene, target)
    return target


def preprocess_args(scene, *extra):
    return [
        "preprocess",
        str(scene),
        "--model",
        str(scene / "init" / "point_cloud.ply"),
        "--sam-checkpoint",
        str(SAM[0]),
        "--device",
        "cpu",
        "--no-progress",
        *CLIP_ARGS,
        *extra,
    ]


SAM: list = []


@pytest.fixture(scope="module")
def reference(raw_scene, tmp_path_factory, one_thread):
    """One uninterrupted run: {file name: bytes} of language_features/."""
    SAM[:] = [raw_scene.parent / "sam_tiny.pth"]
    assert torch.get_num_threads() == 1
    scene = fresh_copy(raw_scene, tmp_path_factory.mktemp("reference"))
    assert main(preprocess_args(scene)) == 0
    return scene, {p.name: p.read_bytes() for p in sorted((scene / "language_features").iterdir())}


def test_outputs_in_the_official_layout_and_train(reference, tmp_path):
    from gags_viewer.train.scene import read_preprocessed_scene

    scene, files = reference
    assert sorted(files) == [f"frame_{i}_{kind}.npy" for i in (1, 2, 3) for kind in ("f", "s")]
    assert sorted(p.name for p in (scene / "depths_sample").iterdir()) == [
        f"frame_{i}_depth_sample.npy" for i in (1, 2, 3)
    ]
    for i in (1, 2, 3):
        f = np.load(scene / "language_features" / f"frame_{i}_f.npy")
        s = np.load(scene / "language_features" / f"frame_{i}_s.npy")
        assert f.dtype == np.float32 and f.shape[1] == 512 and s.shape == (4, 48, 64)
        np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=2e-3)
        assert s.min() >= -1 and s.max() < len(f)
        for level in range(1, 4):
            assert (s[level] >= 0).any()
    loaded = read_preprocessed_scene(scene, resolution=1)
    assert [v.name for v in loaded.views] == ["frame_1.png", "frame_2.png", "frame_3.png"]
    out = tmp_path / "field"
    assert (
        main(
            [
                "train",
                str(scene),
                "--init",
                str(scene / "init" / "point_cloud.ply"),
                "--out",
                str(out),
                "--iterations",
                "3",
                "--checkpoint-every",
                "3",
                "--decoder-width",
                "32",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out / "point_cloud.ply").is_file() or any(out.rglob("point_cloud.ply"))


def test_resume_after_interruption_gives_the_same_files(reference, raw_scene, tmp_path, monkeypatch):
    import gags_viewer.preprocess.pipeline as pipeline

    _, expected = reference
    scene = fresh_copy(raw_scene, tmp_path)
    real_save, calls = pipeline.save_language_features, []

    def save_then_die(folder, stem, features, seg):
        if calls:
            raise KeyboardInterrupt  # killed while on the second image
        calls.append(stem)
        return real_save(folder, stem, features, seg)

    monkeypatch.setattr(pipeline, "save_language_features", save_then_die)
    assert main(preprocess_args(scene)) == 130
    monkeypatch.setattr(pipeline, "save_language_features", real_save)
    done = sorted(p.name for p in (scene / "language_features").iterdir())
    assert done == ["frame_1_f.npy", "frame_1_s.npy"]
    # as if killed between the two writes of the next image: an _f without its _s is redone
    (scene / "language_features" / "frame_2_f.npy").write_bytes(b"partial")
    processed = []
    real_features = pipeline.image_features
    monkeypatch.setattr(
        pipeline, "image_features", lambda image, name, *a: processed.append(name) or real_features(image, name, *a)
    )
    assert main(preprocess_args(scene)) == 0
    assert processed == ["frame_2.png", "frame_3.png"]
    assert {p.name: p.read_bytes() for p in sorted((scene / "language_features").iterdir())} == expected


KILLABLE = "import sys, torch; torch.set_num_threads(1); from gags_viewer.cli import main; sys.exit(main(sys.argv[1:]))"


def test_killed_midway_then_rerun_gives_the_same_files(reference, raw_scene, tmp_path):
    """SIGKILL (no clean-up) as soon as the first image is done; a rerun finishes with the same bytes.

    The 3DGS is given as an output directory here: the depth stage reads the same Gaussians as from the PLY.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    _, expected = reference
    scene = fresh_copy(raw_scene, tmp_path)
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", HF_HUB_OFFLINE="1")
    # the 3DGS given as an Inria output directory (point_cloud/iteration_<N>/point_cloud.ply) this time
    output = tmp_path / "output" / "point_cloud" / "iteration_30000"
    output.mkdir(parents=True)
    shutil.copy(scene / "init" / "point_cloud.ply", output / "point_cloud.ply")
    argv = preprocess_args(scene)
    argv[argv.index("--model") + 1] = str(tmp_path / "output")
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, *argv], env=env, cwd=repo)
    first = scene / "language_features" / "frame_1_s.npy"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    done = {p.name for p in (scene / "language_features").glob("frame_*")}
    assert "frame_1_s.npy" in done and not {"frame_3_f.npy", "frame_3_s.npy"} <= done
    assert main(argv) == 0
    assert {p.name: p.read_bytes() for p in sorted((scene / "language_features").glob("frame_*"))} == expected


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gags-viewer: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_gives_one_line_errors(reference, raw_scene, tmp_path, capsys):
    scene = fresh_copy(raw_scene, tmp_path)
    argv = preprocess_args(scene)
    missing = list(argv)
    missing[missing.index("--sam-checkpoint") + 1] = str(tmp_path / "sam_vit_h_4b8939.pth")
    err = one_line_error(capsys, missing)
    assert "sam_vit_h_4b8939.pth" in err and "https://dl.fbaipublicfiles.com/segment_anything/" in err

    assert "--sam-crop-layers must be 0-3" in one_line_error(capsys, preprocess_args(scene, "--sam-crop-layers", "-1"))
    assert "--points-per-batch must be at least 1" in one_line_error(
        capsys, preprocess_args(scene, "--points-per-batch", "0")
    )

    no_sparse = fresh_copy(raw_scene, tmp_path, "no_sparse")
    shutil.rmtree(no_sparse / "sparse")
    assert "sparse/0" in one_line_error(capsys, preprocess_args(no_sparse))
    no_images = fresh_copy(raw_scene, tmp_path, "no_images")
    shutil.rmtree(no_images / "images")
    assert "images/" in one_line_error(capsys, preprocess_args(no_images))

    field = read_ply(scene / "init" / "point_cloud.ply")
    field.means = field.means + torch.tensor([0.0, 0.0, 100.0])  # another scene's model: nowhere in these views
    write_ply(field, scene / "init" / "point_cloud.ply")
    assert "does not match the scene" in one_line_error(capsys, argv)
    assert not (scene / "language_features").exists()


def test_ray_run_equals_local_run(reference, raw_scene, tmp_path, capsys):
    ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install -e ".[distributed]"')
    _, expected = reference
    scene = fresh_copy(raw_scene, tmp_path)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(preprocess_args(scene, "--ray", "local")) == 0
        assert {p.name: p.read_bytes() for p in sorted((scene / "language_features").iterdir())} == expected
        # a user mistake met inside a task is still one line: a depth map of the wrong size
        for name in ("frame_2_f.npy", "frame_2_s.npy"):
            (scene / "language_features" / name).unlink()
        np.save(scene / "depths" / "frame_2_depth.npy", np.ones((5, 5), np.float32))
        capsys.readouterr()  # Ray's own start-up log lines
        assert "delete depths/" in one_line_error(capsys, preprocess_args(scene, "--ray", "local"))
    finally:
        ray.shutdown()


def test_grid_prompts_need_no_model_and_no_depth_stage(reference, raw_scene, tmp_path, monkeypatch, capsys):
    """--prompts grid: SAM's regular 32x32 grid; no 3DGS is read and no depth map written. One image (the
    others removed) and no crop layer, to keep it short (the crops: the next test and test_preprocess_sam)."""
    import gags_viewer.preprocess.sam as sam

    scene = fresh_copy(raw_scene, tmp_path)
    for name in ("frame_2.png", "frame_3.png"):
        (scene / "images" / name).unlink()
    argv = preprocess_args(scene, "--prompts", "grid", "--sam-crop-layers", "0")
    del argv[argv.index("--model") : argv.index("--model") + 2]
    seen = []
    real_predict = sam.predict_candidates

    def spy(predictor, points, *args):
        seen.append(points)
        return real_predict(predictor, points, *args)

    monkeypatch.setattr(sam, "predict_candidates", spy)
    assert main(argv) == 0
    assert not (scene / "depths").exists() and not (scene / "depths_sample").exists()
    assert sorted(p.name for p in (scene / "language_features").iterdir()) == ["frame_1_f.npy", "frame_1_s.npy"]
    # the grid's cell centres, in pixels of the 64x48 image: (k + 0.5) / 32 * size
    assert len(seen) == 1 and len(seen[0]) == 1024
    np.testing.assert_allclose(np.unique(seen[0][:, 0]), (np.arange(32) + 0.5) * 2, atol=1e-9)
    np.testing.assert_allclose(np.unique(seen[0][:, 1]), (np.arange(32) + 0.5) * 1.5, atol=1e-9)
    # without --model, the depth-ratio prompts say what they need
    argv[argv.index("grid")] = "gags"
    shutil.rmtree(scene / "language_features")
    assert "--model is needed" in one_line_error(capsys, argv)


def test_crop_layers_default_to_langsplat_for_the_grid_and_to_none_for_gags(reference, raw_scene):
    from gags_viewer.preprocess.run import PreprocessConfig, build_sam_source

    def crop_layers(**options):
        config = PreprocessConfig(scene=raw_scene, sam_checkpoint=SAM[0], device="cpu", **options)
        return build_sam_source(config, torch.device("cpu")).config.crop_layers

    assert crop_layers(prompts="grid") == 1 and crop_layers(prompts="gags") == 0
    assert crop_layers(prompts="gags-paper") == 0 and crop_layers(prompts="grid", sam_crop_layers=0) == 0
