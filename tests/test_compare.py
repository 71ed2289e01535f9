"""Compare mode: two fields under one camera (gags_viewer.viewer.compare).

Field A is the synthetic scene (a "mug" on the left of the default view, a "plant" on the right); field B
is a copy with the mug's Gaussians deleted. Every comparison frame must show A's mug highlighted and not
B's, the plant in both, and each side must be exactly what its field renders alone with the shared camera.
"""

from __future__ import annotations

import dataclasses

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from gags_viewer.cli import main
from gags_viewer.render.camera import Camera
from gags_viewer.viewer import camera_path as cp
from gags_viewer.viewer.compare import (
    DIVIDER_RGB,
    DIVIDER_WIDTH,
    Comparison,
    alignment_note,
    clicked_view,
    comparison_labels,
    half_camera,
)
from gags_viewer.viewer.display import with_contrasting_colors
from gags_viewer.viewer.frame import FrameSource, compose_frame, with_legend
from gags_viewer.viewer.settings import ViewSettings, settings_for_render
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture

WIDTH, HEIGHT = 162, 96
"""(WIDTH - DIVIDER_WIDTH) / 2 is even, so each side-by-side half is the full view's middle columns
shifted by a whole number of pixels."""
TINT = 30
"""A pixel counts as highlighted when the overlay differs from the plain render by more than this (sum
over RGB, 0-765): the overlay paints matches in a colour chosen to contrast with the object."""


def mug_mask(field) -> torch.Tensor:
    from gags_viewer.viewer.synthetic import DEFAULT_SCENE

    index = [b.phrase for b in DEFAULT_SCENE].index("mug")
    return field.features[:, index] == 1


@pytest.fixture(scope="module")
def pair(scene):
    """(A's FrameSource, the Comparison with B = A without its mug)."""
    from gags_viewer.field.edit import delete
    from gags_viewer.language import QueryEngine

    without_mug = delete(scene.field, mug_mask(scene.field))
    second = QueryEngine(without_mug, scene.encoder)
    return FrameSource(scene.field, scene.engine), Comparison(without_mug, second, ("gags", "no_mug"))


def settings(**changes) -> ViewSettings:
    return ViewSettings(**{"queries_text": "mug; plant", "display": "overlay", **changes}).checked()


def alone(field, engine, camera, shown: ViewSettings, scene) -> np.ndarray:
    """What ``field`` renders by itself, with the comparison's colours (chosen from A)."""
    shown = with_contrasting_colors(shown, scene.engine)
    return compose_frame(field, camera, shown, engine).image


def highlighted(overlay: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """[H, W] bool"""
    return np.abs(overlay.astype(int) - plain.astype(int)).sum(axis=2) > TINT


def test_split_screen_sides_are_each_field_alone_with_the_same_camera(scene, pair):
    first, comparison = pair
    camera = scene.camera(WIDTH, HEIGHT)
    asked = settings(compare_layout="split", compare_split=0.5)
    frame = comparison.compose(first, camera, asked, legends=False)
    assert frame.image.shape == (HEIGHT, WIDTH, 3)
    column = WIDTH // 2
    image_a = alone(scene.field, scene.engine, camera, asked, scene)
    image_b = alone(comparison.second.source.field, comparison.second.source.engine, camera, asked, scene)
    np.testing.assert_array_equal(
        frame.image[:, : column - DIVIDER_WIDTH // 2], image_a[:, : column - DIVIDER_WIDTH // 2]
    )
    np.testing.assert_array_equal(
        frame.image[:, column + DIVIDER_WIDTH // 2 :], image_b[:, column + DIVIDER_WIDTH // 2 :]
    )
    assert (frame.image[:, column - 1 : column + 1] == DIVIDER_RGB).all()
    assert not (image_a == image_b).all()  # the sides really are different fields


def test_side_by_side_shows_the_mug_only_in_a_and_the_plant_in_both(scene, pair):
    first, comparison = pair
    camera = scene.camera(WIDTH, HEIGHT)
    frame = comparison.compose(first, camera, settings(), legends=False)
    plain = comparison.compose(first, camera, settings(display="rgb"), legends=False)
    half = (WIDTH - DIVIDER_WIDTH) // 2
    cam = half_camera(camera, half)
    left, right = slice(0, half), slice(WIDTH - half, WIDTH)

    # Both halves: exactly each field alone with the same half-width camera.
    second = comparison.second.source
    np.testing.assert_array_equal(frame.image[:, left], alone(scene.field, scene.engine, cam, settings(), scene))
    np.testing.assert_array_equal(frame.image[:, right], alone(second.field, second.engine, cam, settings(), scene))
    assert (frame.image[:, half : WIDTH - half] == DIVIDER_RGB).all()

    lit_a = highlighted(frame.image[:, left], plain.image[:, left])
    lit_b = highlighted(frame.image[:, right], plain.image[:, right])
    mug, plant = scene.object_mask("mug", cam), scene.object_mask("plant", cam)
    assert mug.sum() > 20 and plant.sum() > 20
    assert lit_a[mug].mean() > 0.5, "A's mug is highlighted"
    assert lit_b[mug].mean() < 0.05, "B has no mug to highlight"
    assert lit_a[plant].mean() > 0.5 and lit_b[plant].mean() > 0.5, "the plant is highlighted in both"


def test_a_half_is_the_middle_of_the_full_view(scene):
    """The half camera sees the middle columns of the full camera's image, at the same scale."""
    camera = scene.camera(WIDTH, HEIGHT)
    half = (WIDTH - DIVIDER_WIDTH) // 2
    offset = (WIDTH - half) // 2
    rgb = settings(display="rgb", queries_text="")
    full = compose_frame(scene.field, camera, rgb).image[:, offset : offset + half].astype(int)
    cropped = compose_frame(scene.field, half_camera(camera, half), rgb).image.astype(int)
    # The same rays up to float32 rounding of the shifted principal point: a Gaussian at its cut-off
    # (alpha 1/255) may fall on either side, changing a pixel by a few levels at most.
    assert np.abs(full - cropped).max() <= 3
    assert (full != cropped).mean() < 0.01


def test_each_legend_is_drawn_in_its_own_half(scene, pair):
    first, comparison = pair
    camera = scene.camera(WIDTH, HEIGHT)
    bare = comparison.compose(first, camera, settings(), legends=False)
    drawn = comparison.compose(first, camera, settings(), legends=True)
    assert drawn.legend_drawn and with_legend(drawn) is drawn.image
    changed = np.abs(drawn.image.astype(int) - bare.image.astype(int)).sum(axis=2) > 0
    half = (WIDTH - DIVIDER_WIDTH) // 2
    assert changed[:, :half].any() and changed[:, WIDTH - half :].any()
    assert not changed[:, half : WIDTH - half].any(), "no legend crosses the divider"
    assert not changed[: HEIGHT // 3].any(), "legends sit at the bottom"
    # each legend starts from its half's own left edge
    assert changed[:, :4].any() and changed[:, WIDTH - half : WIDTH - half + 4].any()
    assert drawn.legend.notes[0] == "A = gags, B = no_mug"


def test_one_field_alone_and_an_rgb_only_second_field(scene, pair):
    first, comparison = pair
    camera = scene.camera(WIDTH, HEIGHT)
    only_b = comparison.compose(first, camera, settings(compare_layout="b"), legends=False)
    second = comparison.second.source
    np.testing.assert_array_equal(only_b.image, alone(second.field, second.engine, camera, settings(), scene))

    rgb_only = dataclasses.replace(scene.field, features=None, decoder=None, granularity_decoder=None)
    plain_b = Comparison(rgb_only, None, ("gags", "splat"))
    frame = plain_b.compose(first, camera, settings(compare_layout="split", compare_split=0.0), legends=False)
    rgb = compose_frame(rgb_only, camera, settings(display="rgb")).image
    np.testing.assert_array_equal(frame.image[:, DIVIDER_WIDTH:], rgb[:, DIVIDER_WIDTH:])
    legend = plain_b._side_frame(1, plain_b.second, camera, settings(), True)[1]
    assert legend.title == "B · splat" and "RGB only: no language features" in legend.notes


def test_a_click_on_either_half_lands_on_the_same_point(scene):
    camera = scene.camera(WIDTH, HEIGHT)
    half = (WIDTH - DIVIDER_WIDTH) // 2
    left_cam, left_x = clicked_view(camera, 10, settings())
    right_cam, right_x = clicked_view(camera, WIDTH - half + 10, settings())
    assert left_x == right_x == 10 and left_cam.width == right_cam.width == half
    assert torch.equal(left_cam.K, half_camera(camera, half).K)
    assert clicked_view(camera, 100, settings(compare_layout="split")) == (camera, 100)


def test_alignment_note_and_labels(scene):
    assert alignment_note(scene.field, scene.field) is None
    low, high = scene.field.bounds()
    moved = dataclasses.replace(scene.field, means=scene.field.means + 3 * (high - low))
    note = alignment_note(scene.field, moved)
    assert note is not None and "do not look aligned" in note
    assert comparison_labels("out/run1/scene", "out/run2/scene") == ("run1/scene", "run2/scene")


@pytest.fixture(scope="module")
def field_dirs(scene, pair, tmp_path_factory):
    from gags_viewer.field.load import save_field

    root = tmp_path_factory.mktemp("compare")
    return save_field(scene.field, root / "gags"), save_field(pair[1].second.source.field, root / "no_mug")


def test_render_command_renders_both_fields(scene, pair, field_dirs, tmp_path, capsys):
    first, comparison = pair
    out = tmp_path / "out"
    args = ["render", str(field_dirs[0]), str(field_dirs[1]), "--out", str(out), "--query", "mug; plant"]
    args += ["--frames", "2", "--width", str(WIDTH), "--height", str(HEIGHT), "--layout", "split", "--device", "cpu"]
    assert main(args) == 0
    frames = [iio.imread(p) for p in sorted((out / "frames").glob("frame_*.png"))]
    assert len(frames) == 2
    camera = cp.orbit_path(scene.field, 2, WIDTH, HEIGHT).cameras[0]
    asked = settings_for_render("mug; plant", None).copy(compare_layout="split")
    expected = comparison.compose(first, camera, asked, legends=True)
    # The command built its own engines: their per-field caches may come from another float32 summation
    # order (thread count), so a value on a rounding edge may land one 8-bit level away on a few pixels.
    diff = np.abs(frames[0].astype(int) - expected.image.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    video = iio.imread(out / "orbit.mp4")
    assert video.shape[0] == 2 and video.shape[1:3] == (HEIGHT, WIDTH)
    # H.264 is lossy: the video's first frame is the PNG's up to compression noise
    error = np.abs(video[0].astype(int) - frames[0].astype(int)).mean()
    assert error < 4
    assert "wrote 2 frames" in capsys.readouterr().out


def test_viewer_png_export_renders_both(scene, pair, tmp_path):
    from types import SimpleNamespace

    from gags_viewer.viewer.app import ViewerApp
    from gags_viewer.viewer.export_actions import export_png
    from gags_viewer.viewer.session import ClientSession

    first, comparison = pair
    app = ViewerApp(scene.field, scene.engine, output_dir=tmp_path, comparison=comparison)
    view = scene.camera(WIDTH, HEIGHT)
    state = SimpleNamespace(c2w=view.camera_to_world.numpy(), aspect=WIDTH / HEIGHT, get_K=lambda size: view.K.numpy())
    camera = Camera.from_nerfview(state, WIDTH, HEIGHT)  # the camera the export rebuilds from the browser's state
    host = SimpleNamespace(
        app=app, output_dir=tmp_path, render_size=lambda session: (WIDTH, HEIGHT), get_camera_state=lambda client: state
    )
    session = ClientSession(None, settings(compare_layout="side"), app.compose_for)
    path = export_png(host, session)
    expected = comparison.compose(first, camera, settings(compare_layout="side"), legends=True).image
    np.testing.assert_array_equal(iio.imread(path), expected)
