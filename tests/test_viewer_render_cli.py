"""``gags-viewer render``: headless frames equal the viewer's; saved paths render identically."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from gags_viewer.cli import main
from gags_viewer.viewer import camera_path as cp
from gags_viewer.viewer.export import draw_legend
from gags_viewer.viewer.frame import compose_frame
from gags_viewer.viewer.settings import settings_for_render
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def field_dir(scene, tmp_path_factory):
    from gags_viewer.field.load import save_field

    return save_field(scene.field, tmp_path_factory.mktemp("cli") / "synthetic")


def _frames(out):
    return [iio.imread(p) for p in sorted((out / "frames").glob("frame_*.png"))]


def test_orbit_with_query_then_the_saved_path_renders_identically(scene, field_dir, tmp_path, capsys):
    out = tmp_path / "orbit"
    args = [
        "render",
        str(field_dir),
        "--out",
        str(out),
        "--query",
        "mug",
        "--frames",
        "3",
        "--width",
        "96",
        "--height",
        "72",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    frames = _frames(out)
    assert len(frames) == 3 and frames[0].shape == (72, 96, 3)
    assert (out / "orbit.mp4").stat().st_size > 0
    assert "wrote 3 frames" in capsys.readouterr().out

    # The first frame is the viewer's composition (legend included) for the orbit camera. The shared test
    # engine may have built its per-field caches under another thread count (another float32 summation
    # order), so a value on a rounding edge may land one 8-bit level away, on a handful of pixels.
    camera = cp.orbit_path(scene.field, 3, 96, 72).cameras[0]
    frame = compose_frame(scene.field, camera, settings_for_render("mug", None), scene.engine)
    diff = np.abs(frames[0].astype(int) - draw_legend(frame.image, frame.legend).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())

    # camera_path.json (nerfview format) reproduces the same frames.
    saved = json.loads((out / "camera_path.json").read_text())
    assert len(saved["camera_path"]) == 3 and saved["render_width"] == 96
    again = tmp_path / "again"
    assert (
        main(
            [
                "render",
                str(field_dir),
                "--out",
                str(again),
                "--query",
                "mug",
                "--camera-path",
                str(out / "camera_path.json"),
                "--video",
                "gif",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    again_frames = _frames(again)
    assert len(again_frames) == len(frames)
    for a, b in zip(frames, again_frames):  # same cameras; float32 rounding edges as above
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    assert (again / "camera_path.gif").exists()


def test_query_on_rgb_only_field_is_a_clear_error(scene, tmp_path, capsys):
    from gags_viewer.field.splat import write_splat

    splat = tmp_path / "rgb.splat"
    write_splat(scene.field, splat)
    assert main(["render", str(splat), "--out", str(tmp_path / "o"), "--query", "mug", "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "no language features" in err and "--mode rgb" in err
    assert main(["render", str(splat), "--out", str(tmp_path / "o"), "--mode", "pca", "--frames", "1"]) == 2
    # RGB works on it.
    assert (
        main(["render", str(splat), "--out", str(tmp_path / "o"), "--frames", "1", "--width", "48", "--video", "none"])
        == 0
    )
    assert len(_frames(tmp_path / "o")) == 1


def test_bad_camera_path_is_a_clear_error(field_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"camera_path": [{"fov": 50}]}))
    assert main(["render", str(field_dir), "--out", str(tmp_path / "o"), "--camera-path", str(bad)]) == 2
    assert "frame 0" in capsys.readouterr().err


def test_modes_and_colours_from_flags(scene, field_dir, tmp_path):
    out = tmp_path / "mask"
    assert (
        main(
            [
                "render",
                str(field_dir),
                "--out",
                str(out),
                "--query",
                "mug; plant",
                "--mode",
                "mask",
                "--colors",
                "#ff0000;#0000ff",
                "--frames",
                "1",
                "--width",
                "96",
                "--height",
                "72",
                "--no-legend",
                "--video",
                "none",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    image = _frames(out)[0].astype(int)
    camera = cp.orbit_path(scene.field, 1, 96, 72).cameras[0]
    mug = image[scene.object_mask("mug", camera)].mean(0)
    plant = image[scene.object_mask("plant", camera)].mean(0)
    assert mug[0] > mug[2] + 50 and plant[2] > plant[0] + 50
