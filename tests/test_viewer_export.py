"""Exports: safe names, atomic writes (nothing partial, nothing left behind), legends, videos."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pytest

from gags_viewer.viewer import export as ex


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mug; plant", "mug_plant"),
        ("../../etc/passwd", "etc_passwd"),
        ("/abs/path", "abs_path"),
        ("..", "export"),
        ("", "export"),
        ("   ", "export"),
        (".hidden", "hidden"),
        ("café crème", "cafe_creme"),
        ('a\\b:c*d?e"f<g>h|i', "a_b_c_d_e_f_g_h_i"),
        ("con", "con_"),
        ("NUL.txt", "NUL_.txt"),
        ("x\x00y\ny", "x_y_y"),
        ("多言語", "export"),
    ],
)
def test_sanitize_filename(text, expected):
    name = ex.sanitize_filename(text)
    assert name == expected
    assert "/" not in name and "\\" not in name and not name.startswith(".") and ".." not in name


def test_sanitize_limits_length():
    assert len(ex.sanitize_filename("x" * 500)) == ex.MAX_NAME_LENGTH


def test_unique_path_and_stem(tmp_path):
    first = ex.unique_path(tmp_path, "view", ".png")
    first.write_bytes(b"1")
    second = ex.unique_path(tmp_path, "view", ".png")
    assert first.name == "view.png" and second.name == "view-2.png"
    assert ex.unique_path(tmp_path, "../evil", "png").parent == tmp_path
    stem = ex.export_stem("view", "mug; plant/..")
    assert stem.startswith("view-mug_plant-") and "/" not in stem


def test_png_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "a.png"
    image = np.zeros((8, 8, 3), np.uint8)
    ex.write_png(target, image)
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ex.ExportError, match="cannot write"):
        ex.write_png(target, np.full((8, 8, 3), 255, np.uint8))
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary left


def test_video_failure_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("render failed mid-way")

    with pytest.raises(RuntimeError):
        ex.write_video(tmp_path / "v.mp4", frames(), 10)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ex.ExportError, match="no frames"):
        ex.write_video(tmp_path / "v.gif", iter(()), 10)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ex.ExportError, match="format"):
        ex.write_video(tmp_path / "v.avi", [np.zeros((4, 4, 3), np.uint8)], 10)


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_video_round_trip(tmp_path, suffix):
    frames = [np.full((31, 41, 3), 30 * i, np.uint8) for i in range(6)]
    seen = []
    path = ex.write_video(tmp_path / f"v.{suffix}", iter(frames), 12, progress=seen.append)
    assert seen == [1, 2, 3, 4, 5, 6]
    back = iio.imread(path)
    assert back.shape[0] == 6
    # MP4 frames lose their odd last row/column (H.264 yuv420p); GIF keeps the size.
    assert back.shape[1:3] == ((30, 40) if suffix == "mp4" else (31, 41))
    assert abs(int(back[3, 10, 10, 0]) - 90) < 8
    assert [p.name for p in tmp_path.iterdir()] == [f"v.{suffix}"]


def test_png_sequence(tmp_path):
    paths = ex.write_png_sequence(tmp_path / "seq", [np.zeros((4, 4, 3), np.uint8)] * 3, stem="../f")
    assert [p.name for p in paths] == ["f_00000.png", "f_00001.png", "f_00002.png"]


def test_legend_is_drawn_in_the_corner():
    image = np.zeros((240, 320, 3), np.uint8)
    lut = np.stack([np.arange(256)] * 3, 1).astype(np.uint8)
    legend = ex.Legend(
        title="relevancy > 0.50",
        swatches=[("mug", (255, 0, 0)), ("plant", (0, 0, 255))],
        colorbar=(lut, "0", "1"),
        notes=["note"],
    )
    out = ex.draw_legend(image, legend)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not out[:120].any()  # top half untouched
    bottom = out[120:, :200].reshape(-1, 3).astype(int)
    assert ((bottom[:, 0] > 200) & (bottom[:, 2] < 50)).any()  # the red swatch
    assert ((bottom[:, 2] > 200) & (bottom[:, 0] < 50)).any()  # the blue swatch
    assert ex.draw_legend(image, ex.Legend()) is image
    assert "mug" in legend.html() and "#ff0000" in legend.html()
    assert legend == ex.Legend(
        title="relevancy > 0.50",
        swatches=[("mug", (255, 0, 0)), ("plant", (0, 0, 255))],
        colorbar=(lut.copy(), "0", "1"),
        notes=["note"],
    )
    assert legend != ex.Legend(title="other")


def test_html_legend_escapes_user_text():
    html = ex.Legend(swatches=[("<script>alert(1)</script>", (1, 2, 3))]).html()
    assert "<script>" not in html and "&lt;script&gt;" in html


def _scene_like_frames(count: int, width: int, height: int) -> list:
    """Smooth shaded blobs moving over a gradient: what a render of a field looks like."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(count):
        cx, cy = width * (0.3 + 0.02 * i), height * 0.5
        blob = np.exp(-(((x - cx) / (0.15 * width)) ** 2 + ((y - cy) / (0.2 * height)) ** 2))
        image = np.stack([0.2 + 0.6 * blob, 0.3 + 0.3 * y / height, 0.5 * (1 - blob) + 0.2 * x / width], -1)
        frames.append((image.clip(0, 1) * 255).astype(np.uint8))
    return frames


def test_a_gif_is_sized_for_sharing(tmp_path):
    """Long side at most 480 px, at most 12.5 frames per second (same duration), a palette per frame:
    a fraction of the raw frames' size (an unscaled full-rate GIF of these frames is about 8x larger)."""
    from PIL import Image

    frames = _scene_like_frames(30, 960, 720)
    path = ex.write_video(tmp_path / "v.gif", iter(frames), 30)
    with Image.open(path) as gif:
        assert gif.size == (480, 360) and gif.n_frames == 10
        assert gif.info["duration"] == 100  # 10 frames x 100 ms = the 1 s of 30 frames at 30 fps
    assert path.stat().st_size < 30 * 960 * 720 * 3 / 100
