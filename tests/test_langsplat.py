"""LangSplat fields: a LangSplat output written here from its documented layout (gags-method.md §3.9, §4.6;
minghanqin/LangSplat train.py, scene/gaussian_model.py capture(), autoencoder/model.py) loads, renders,
answers queries by LangSplat's level rule in both query modes, and evaluates.

The layout: ``output/<scene>_<level>/chkpnt{7000,30000}.pth`` each holding ``(capture, iteration)`` with
the 13-item capture (raw 3-D language feature at index 7, ``spatial_lr_scale`` a numpy float64), saved as
LangSplat saves it (tensors tagged ``cuda:0``, numpy 1.x module names), ``cameras.json`` per level, and the
autoencoder state dict (``encoder.*`` with BatchNorm, ``decoder.{0..12}``) at
``autoencoder/ckpt/<scene>/best_ckpt.pth``.

The scene is the synthetic query scene's geometry (a "mug" and a "plant" blob on a floor). The
autoencoder's decoder maps the unit 3-D latents e0, e1, e2 to CLIP directions made from the tiny test
CLIP model's own text embeddings: e0 -> "mug" (relevancy ≈ 0.83 for "mug", ≈ 0.63 for "plant": the tiny
model's two phrases are nearly parallel), e1 -> "plant" (the converse), e2 -> below the negatives for
both. Only level 2 (part) gives the mug e0 and only level 3 (whole) gives the plant e1, so LangSplat's
rule must pick those levels.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rich.console import Console

from gags_viewer.cli import main
from gags_viewer.errors import FormatError
from gags_viewer.field.langsplat import split_level
from gags_viewer.field.language_field import FieldMetadata
from gags_viewer.field.load import load_field, save_field
from gags_viewer.language.langsplat import gaussian_levels, localization_levels, mask_levels
from tests.test_viewer_fixtures import project_mask

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCENE = "my_room_v2"  # underscores: the level is split off at the last one
W, H = 160, 120
DECODER_DIMS = (3, 16, 32, 64, 128, 256, 256, 512)
ENCODER_DIMS = (512, 256, 128, 64, 32, 3)
MUG, PLANT = 0, 1  # blob indices in gags_viewer.viewer.synthetic.DEFAULT_SCENE


# ---------------------------------------------------------------------------------------- the layout


def save_like_langsplat(obj, path: Path) -> None:
    """``torch.save`` as LangSplat's machines wrote it: storages tagged ``cuda:0`` and numpy's scalar
    under its numpy 1.x module name (this machine may have neither CUDA nor numpy 1)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info, data)


def capture(geometry, language: torch.Tensor) -> tuple:
    """The 13-item ``GaussianModel.capture(include_feature=True)`` tuple."""
    feature = torch.nn.Parameter(language.clone())
    optimizer = torch.optim.Adam([{"params": [feature], "lr": 0.0025, "name": "language_feature"}], eps=1e-15)
    feature.grad = torch.ones_like(feature)
    optimizer.step()  # a real optimizer state (step, exp_avg, exp_avg_sq)
    n = language.shape[0]
    return (
        3,
        geometry.means.clone(),
        geometry.sh[:, :1].clone(),
        torch.zeros(n, 15, 3),
        geometry.log_scales.clone(),
        geometry.quats.clone(),
        geometry.opacity_logits[:, None].clone(),
        language.clone(),
        torch.zeros(n),
        torch.zeros(n, 1),
        torch.zeros(n, 1),
        optimizer.state_dict(),
        np.float64(4.2),
    )


def autoencoder_state(directions: torch.Tensor) -> dict[str, torch.Tensor]:
    """A LangSplat ``Autoencoder`` state dict whose decoder maps x >= 0 (3-D) to directions.T @ x: bias-free
    identity blocks through the ReLUs, the three directions as the last layer's first columns."""
    generator = torch.Generator().manual_seed(3)
    state: dict[str, torch.Tensor] = {}
    index = 0
    for i, (a, b) in enumerate(zip(ENCODER_DIMS[:-1], ENCODER_DIMS[1:])):
        if i > 0:  # BatchNorm1d, then ReLU, before every Linear but the first
            state[f"encoder.{index}.weight"] = torch.ones(a)
            state[f"encoder.{index}.bias"] = torch.zeros(a)
            state[f"encoder.{index}.running_mean"] = torch.zeros(a)
            state[f"encoder.{index}.running_var"] = torch.ones(a)
            state[f"encoder.{index}.num_batches_tracked"] = torch.tensor(7)
            index += 2
        state[f"encoder.{index}.weight"] = torch.randn(b, a, generator=generator)
        state[f"encoder.{index}.bias"] = torch.zeros(b)
        index += 1
    for i, (a, b) in enumerate(zip(DECODER_DIMS[:-1], DECODER_DIMS[1:])):
        weight = torch.zeros(b, a)
        if b == 512:
            weight[:, :3] = directions.T
        else:
            weight[:3, :3] = torch.eye(3)
        state[f"decoder.{2 * i}.weight"] = weight
        state[f"decoder.{2 * i}.bias"] = torch.zeros(b)
    return state


def level_features(n_per_blob: list[int], seed: int) -> dict[int, torch.Tensor]:
    """Raw (not unit, positive random scale) 3-D features per level: mug e0 only at level 2, plant e1 only
    at level 3, the rest e2; one floor Gaussian in seven is never trained (zero) at level 3."""
    generator = torch.Generator().manual_seed(seed)
    blob = torch.cat([torch.full((n,), i) for i, n in enumerate(n_per_blob)])
    eye = torch.eye(3)
    out = {}
    for level in (1, 2, 3):
        latent = eye[torch.full_like(blob, 2)]
        if level == 2:
            latent[blob == MUG] = eye[0]
        if level == 3:
            latent[blob == PLANT] = eye[1]
            latent[(blob == 2) & (torch.arange(blob.shape[0]) % 7 == 0)] = 0.0
        scale = 0.2 + 3.0 * torch.rand(blob.shape[0], 1, generator=generator)
        out[level] = latent * scale
    return out


class Layout:
    """A LangSplat output tree under ``root`` and what the tests need to check it."""

    def __init__(self, root: Path):
        from gags_viewer.language import TextEncoder
        from gags_viewer.viewer.synthetic import DEFAULT_SCENE, clip_directions, make_query_field
        from tests.tiny_clip import TINY_CLIP_NAME, make_tiny_clip

        self.root = root
        self.clip = make_tiny_clip(root)
        self.clip_args = [
            "--clip-model",
            TINY_CLIP_NAME,
            "--clip-config",
            str(self.clip.config_file),
            "--clip-checkpoint",
            str(self.clip.checkpoint_file),
        ]
        self.encoder = TextEncoder(self.clip, device="cpu")
        self.geometry = make_query_field(self.encoder.encode, self.clip)
        negatives = ["object", "things", "stuff", "texture"]
        text = torch.nn.functional.normalize(self.encoder.encode(["mug", "plant", *negatives]).float(), dim=-1)
        targets = torch.tensor([[1.0, -1, -2, -2, -2, -2], [-1.0, 1, -2, -2, -2, -2], [-1.0, -1, 1, 1, 1, 1]])
        self.directions = clip_directions(targets, text)
        self.blob_sizes = [b.count for b in DEFAULT_SCENE]
        self.features = level_features(self.blob_sizes, seed=1)
        self.output = root / "output"
        self.levels = {level: self.output / f"{SCENE}_{level}" for level in (1, 2, 3)}
        for level, folder in self.levels.items():
            folder.mkdir(parents=True)
            older = level_features(self.blob_sizes, seed=10 + level)[4 - level]  # other features
            save_like_langsplat((capture(self.geometry, older), 7000), folder / "chkpnt7000.pth")
            save_like_langsplat((capture(self.geometry, self.features[level]), 30000), folder / "chkpnt30000.pth")
            self.write_cameras(folder / "cameras.json")
        self.autoencoder = root / "autoencoder" / "ckpt" / SCENE / "best_ckpt.pth"
        self.autoencoder.parent.mkdir(parents=True)
        torch.save(autoencoder_state(self.directions), self.autoencoder)

    def camera_c2w(self) -> np.ndarray:
        return np.asarray(self.geometry.metadata.default_camera["c2w"], dtype=np.float64)

    def write_cameras(self, path: Path) -> None:
        c2w = self.camera_c2w()
        fy = H / (2 * math.tan(math.radians(50.0) / 2))
        entry = {"id": 0, "img_name": "frame_00001", "width": W, "height": H}
        entry.update(position=c2w[:3, 3].tolist(), rotation=c2w[:3, :3].tolist(), fx=fy, fy=fy)
        path.write_text(json.dumps([entry]))

    def camera(self):
        from gags_viewer.eval.runner import cameras_json

        return cameras_json(self.levels[1] / "cameras.json").cameras["frame_00001"]

    def blob_mask(self, index: int, camera) -> np.ndarray:
        start = sum(self.blob_sizes[:index])
        return project_mask(self.geometry.means[start : start + self.blob_sizes[index]], camera, dilate=0)

    def engine(self, field):
        from gags_viewer.language import QueryEngine

        return QueryEngine(field, self.encoder)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Layout:
    return Layout(tmp_path_factory.mktemp("langsplat"))


def quiet():
    return Console(file=io.StringIO(), width=160)


# ------------------------------------------------------------------------------------- the level rule


def test_level_rules_on_hand_made_maps():
    """Maps whose raw peak, smoothed peak and box30 peak disagree; expected levels worked out by hand."""
    size = 40
    maps = np.zeros((2, 3, size, size), np.float32)  # [L, K, H, W]
    # query 0: level 0 a lone 1.0 on 0; level 1 flat 0.6. Raw peak: level 0. Smoothed peak of level 0:
    # ½ (1 + 1/900) ≈ 0.5006 < 0.6, box30 peak 1/900 < 0.6: both rules keep level 1.
    maps[0, 0, 20, 20] = 1.0
    maps[1, 0] = 0.6
    # query 1: level 0 a lone 1.0 on 0.55; level 1 flat 0.6. Smoothed peak of level 0:
    # ½ (1 + (899·0.55 + 1)/900) = ½ (1 + 0.5505) ≈ 0.775 > 0.6 -> masks keep level 0;
    # box30 peak 0.5505 < 0.6 -> localization keeps level 1.
    maps[0, 1] = 0.55
    maps[0, 1, 20, 20] = 1.0
    maps[1, 1] = 0.6
    # query 2: both levels flat 0.7: a tie, the lowest level (torch.argmax / np.argmax).
    maps[:, 2] = 0.7
    relevancy = torch.from_numpy(maps)
    assert mask_levels(relevancy).tolist() == [1, 0, 0]
    assert localization_levels(relevancy).tolist() == [1, 1, 0]
    scores = torch.tensor([[[0.2, 0.9], [0.5, 0.5]], [[0.8, 0.1], [0.5, 0.5]]])  # [L=2, K=2, N=2]
    assert gaussian_levels(scores).tolist() == [0, 0]


@pytest.mark.parametrize("shape", [(2, 3, 40, 40), (1, 2, 16, 23), (1, 1, 15, 50), (3, 1, 97, 130)])
def test_box_filter_on_a_tensor_device_equals_the_reference(shape):
    from gags_viewer.language.smoothing import box_filter, box_filter_tensor

    maps = torch.rand(shape, generator=torch.Generator().manual_seed(shape[-1]))
    # float64 sums of at most 900 values in [0, 1] from an integral image of at most ~2e4 values in [0, 1]:
    # each result is within a few 1e-12 of the reference
    np.testing.assert_allclose(box_filter_tensor(maps).numpy(), box_filter(maps.numpy()), rtol=0, atol=1e-10)


@pytest.mark.gpu
def test_mask_levels_on_cuda_equal_the_reference():
    maps = torch.rand(3, 4, 120, 160, generator=torch.Generator().manual_seed(0))
    maps[1, :, 40:80, 60:100] += 0.5  # a clear winner per query, plus random ones
    maps[2, 2, 10:50, 10:50] += 0.8
    assert torch.equal(mask_levels(maps.cuda()), mask_levels(maps))


def test_level_is_split_at_the_last_underscore():
    assert split_level("my_room_v2_3") == ("my_room_v2", 3)
    assert split_level("teatime_1") == ("teatime", 1)
    assert split_level("teatime_4") is None and split_level("teatime") is None and split_level("_2") is None


# ------------------------------------------------------------------------------------------ loading


def test_loads_the_latest_checkpoint_of_every_level(layout):
    field = load_field(layout.levels[2])  # one level folder: its sibling levels are found
    same = load_field(layout.output)  # the folder holding them
    assert field.metadata.levels == ("subpart", "part", "whole") and field.metadata.decoder_kind == "langsplat"
    assert torch.equal(field.features, same.features)
    expected = torch.cat([layout.features[level] for level in (1, 2, 3)], dim=1)  # chkpnt30000, not 7000
    norms = torch.cat([layout.features[level].norm(dim=1, keepdim=True).expand(-1, 3) for level in (1, 2, 3)], 1)
    assert torch.allclose(field.features, expected / (norms + 1e-9), rtol=1e-6, atol=1e-7)
    never_trained = layout.features[3].norm(dim=1) == 0
    assert never_trained.any() and (field.features[never_trained, 6:9] == 0).all()  # stays zero
    assert torch.equal(field.means, layout.geometry.means) and field.sh.shape[1] == 16
    assert sorted(field.decoder) == sorted(f"decoder.{i}.{p}" for i in range(0, 13, 2) for p in ("weight", "bias"))
    assert field.metadata.default_camera is not None and "chkpnt" not in field.metadata.source
    older = load_field(layout.output, iteration=7000)
    assert not torch.allclose(older.features, field.features)
    with pytest.raises(FormatError, match="no chkpnt123.pth; available iterations: 7000, 30000"):
        load_field(layout.output, iteration=123)


def test_saved_as_native_it_queries_the_same(layout, tmp_path):
    field = load_field(layout.output)
    copy = load_field(save_field(field, tmp_path / "native"))
    assert copy.metadata.levels == field.metadata.levels and torch.equal(copy.features, field.features)
    assert json.loads((tmp_path / "native" / "field.json").read_text())["levels"] == ["subpart", "part", "whole"]
    assert "levels" not in FieldMetadata().to_json()  # single-level fields' files are as before


def test_missing_autoencoder_is_one_line_naming_the_paths_and_the_flag(layout, tmp_path, capsys):
    moved = tmp_path / "ae.pth"
    layout.autoencoder.rename(moved)
    try:
        assert main(["info", str(layout.output)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0
        assert f"autoencoder/ckpt/{SCENE}/best_ckpt.pth" in err and f"<dir>/{SCENE}/ae_ckpt/best_ckpt.pth" in err
        assert "--autoencoder FILE" in err
        assert main(["info", str(layout.output), "--autoencoder", str(moved)]) == 0
        out = capsys.readouterr().out
        assert "levels     subpart, part, whole (3-D each" in out and "decoder: langsplat" in out
    finally:
        moved.rename(layout.autoencoder)
    assert main(["info", str(layout.output), "--autoencoder", str(layout.autoencoder)]) == 0
    capsys.readouterr()
    assert main(["info", str(layout.levels[1] / "chkpnt30000.pth"), "--autoencoder", str(moved)]) == 2


class Payload:
    """Unpickling this would create ``marker``: a stand-in for code in a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_code_is_refused_before_it_runs(layout, tmp_path, capsys):
    output = tmp_path / "output"
    folder = output / f"{SCENE}_1"
    folder.mkdir(parents=True)
    marker = tmp_path / "ran"
    items = list(capture(layout.geometry, layout.features[1]))
    items[12] = Payload(marker)
    torch.save((tuple(items), 30000), folder / "chkpnt30000.pth")
    with pytest.raises(FormatError, match="possibly code"):
        load_field(output, autoencoder=layout.autoencoder)
    assert main(["info", str(output), "--autoencoder", str(layout.autoencoder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refusing to unpickle" in err
    assert not marker.exists()


def test_an_rgb_only_checkpoint_is_named_as_such(layout, tmp_path):
    folder = tmp_path / "output" / f"{SCENE}_1"
    folder.mkdir(parents=True)
    items = list(capture(layout.geometry, layout.features[1]))
    del items[7]  # LangSplat's capture(include_feature=False): 12 items, no language feature
    torch.save((tuple(items), 30000), folder / "chkpnt30000.pth")
    with pytest.raises(FormatError, match=r"without language features \(12 items, not 13\)"):
        load_field(folder, autoencoder=layout.autoencoder)


def test_levels_with_different_gaussians_are_refused(layout, tmp_path):
    output = tmp_path / "output"
    for level in (1, 2):
        folder = output / f"{SCENE}_{level}"
        folder.mkdir(parents=True)
        geometry = layout.geometry
        if level == 2:
            geometry = load_field(layout.output).to("cpu")
            geometry.means = geometry.means + 0.01
        torch.save((capture(geometry, layout.features[level]), 30000), folder / "chkpnt30000.pth")
    with pytest.raises(FormatError, match=r"Gaussians \(means\) differ from the first level"):
        load_field(output, autoencoder=layout.autoencoder)


def test_several_scenes_need_a_level_folder(layout, tmp_path):
    output = tmp_path / "output"
    for name in (f"{SCENE}_1", "other_scene_1"):
        (output / name).mkdir(parents=True)
        torch.save((capture(layout.geometry, layout.features[1]), 30000), output / name / "chkpnt30000.pth")
    with pytest.raises(FormatError, match="several scenes"):
        load_field(output, autoencoder=layout.autoencoder)
    field = load_field(output / f"{SCENE}_1", autoencoder=layout.autoencoder)
    assert field.metadata.levels == ("subpart",) and field.feature_dim == 3


# ------------------------------------------------------------------------------------------ queries


def independent_mask_levels(per_level: np.ndarray) -> list[int]:
    """LangSplat's activate_stream rule with cv2.filter2D itself: argmax over levels of max ½ (r + box30(r))."""
    kernel = np.ones((30, 30)) / 900.0
    peaks = [
        [float((0.5 * (r + cv2.filter2D(r, -1, kernel))).max()) for r in level.astype(np.float64)]
        for level in per_level
    ]
    return np.argmax(np.asarray(peaks), axis=0).tolist()


@pytest.mark.parametrize("mode", ["pixel", "gaussian"])
def test_queries_pick_the_level_by_langsplat_rule_and_highlight_the_object(layout, mode):
    field = load_field(layout.output)
    engine = layout.engine(field)
    camera = layout.camera()
    result = engine.query(camera, ["mug", "plant"], mode=mode)
    assert result.level_relevancy.shape == (3, 2, H, W) and result.relevancy.shape == (2, H, W)
    per_level = result.level_relevancy.numpy()
    assert list(result.levels) == independent_mask_levels(per_level) == [1, 2]  # part, whole
    for k, level in enumerate(result.levels):
        assert torch.equal(result.relevancy[k], result.level_relevancy[level, k])
    mug, plant = layout.blob_mask(MUG, camera), layout.blob_mask(PLANT, camera)
    rel = result.relevancy.numpy()
    background = ~project_mask(field.means, camera, dilate=12)  # beyond every splat's skirt
    for k, own, other in ((0, mug, plant), (1, plant, mug)):
        assert np.median(rel[k][own]) > 0.75 and np.median(rel[k][own]) > np.median(rel[k][other]) + 0.1
        assert rel[k][background].max() <= 0.5 + 1e-4  # nothing highlighted where there is nothing
    # At the other levels the mug is not "mug": the rule did not keep them.
    assert np.median(per_level[0, 0][mug]) < 0.5 and np.median(per_level[2, 0][mug]) < 0.5
    if mode == "gaussian":
        n_mug = layout.blob_sizes[MUG]
        assert result.gaussian_scores.shape == (2, field.num_gaussians)
        assert (result.gaussian_scores[0, :n_mug] > 0.75).float().mean() > 0.95
        # Without an image, each query keeps the level where its per-Gaussian scores peak: the same here.
        assert torch.equal(engine.gaussian_relevancy(["mug", "plant"]), result.gaussian_scores)


def test_render_cli_with_a_query(layout, tmp_path, capsys):
    out = tmp_path / "render"
    args = ["render", str(layout.output), "--out", str(out), "--query", "mug", "--frames", "2", "--width", "64"]
    for mode in ("gaussian", "pixel"):
        assert main([*args, "--video", "none", "--device", "cpu", "--query-mode", mode, *layout.clip_args]) == 0
        assert sorted(p.name for p in (out / "frames").iterdir()) == ["frame_00000.png", "frame_00001.png"]
    assert "wrote 2 frames (64x48)" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["pixel", "gaussian"])
def test_eval_scores_each_query_at_langsplat_levels(layout, tmp_path, mode):
    from gags_viewer.eval.runner import EvalConfig, run_eval
    from tests.tiny_clip import TINY_CLIP_NAME

    camera = layout.camera()
    labels = tmp_path / "labels"
    labels.mkdir()
    objects = []
    for name, index in (("mug", MUG), ("plant", PLANT)):
        rows, cols = np.nonzero(layout.blob_mask(index, camera))
        x0, y0, x1, y1 = int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())
        polygon = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        objects.append({"category": name, "bbox": [x0, y0, x1, y1], "segmentation": polygon})
    info = {"name": "frame_00001.jpg", "height": H, "width": W}
    (labels / "frame_00001.json").write_text(json.dumps({"info": info, "objects": objects}))
    config = EvalConfig(
        field=layout.output,
        labels=labels,
        mode=mode,
        device="cpu",
        clip_model=TINY_CLIP_NAME,
        clip_config=Path(layout.clip.config_file),
        clip_checkpoint=Path(layout.clip.checkpoint_file),
    )
    report = run_eval(config, console=quiet())
    assert report.settings["levels"] == ["subpart", "part", "whole"] and "LangSplat levels" in report.settings["rule"]
    assert report.settings["camera_source"].endswith(str(layout.levels[1] / "cameras.json"))
    by_query = {row.query: row for row in report.rows}
    assert (by_query["mug"].mask_level, by_query["plant"].mask_level) == ("part", "whole")
    assert (by_query["mug"].localization_level, by_query["plant"].localization_level) == ("part", "whole")
    assert by_query["mug"].localized and by_query["plant"].localized
    assert by_query["mug"].iou > 0.3 and by_query["plant"].iou > 0.3


# ------------------------------------------------------------------------------------------- viewer


@pytest.mark.parametrize("query_mode", ["gaussian", "pixel"])
def test_viewer_frames_overlay_the_object(layout, query_mode):
    from gags_viewer.viewer.frame import compose_frame
    from gags_viewer.viewer.settings import settings_for_render

    field = load_field(layout.output)
    engine, camera = layout.engine(field), layout.camera()
    rgb = compose_frame(field, camera, settings_for_render("", "rgb"), engine).image.astype(int)
    frame = compose_frame(field, camera, settings_for_render("mug; plant", None, query_mode=query_mode), engine)
    assert "level kept (LangSplat rule): mug → part; plant → whole" in frame.legend.notes
    overlay = compose_frame(field, camera, settings_for_render("mug", None, query_mode=query_mode), engine).image
    changed = np.abs(overlay.astype(int) - rgb).sum(axis=-1) > 30
    mug, plant = layout.blob_mask(MUG, camera), layout.blob_mask(PLANT, camera)
    assert changed[mug].mean() > 0.8 and changed[plant].mean() < 0.2


def test_view_command_serves_a_langsplat_output(layout, tmp_path, monkeypatch, capsys):
    from gags_viewer.viewer import commands

    started = []
    real_serve = commands.serve

    def serve_and_stop(field, engine, **kwargs):
        server, _ = real_serve(field, engine, **{**kwargs, "port": 0, "block": False})
        started.append((field, engine))
        server.stop()

    monkeypatch.setattr(commands, "serve", serve_and_stop)
    moved = tmp_path / "elsewhere.pth"
    moved.write_bytes(layout.autoencoder.read_bytes())
    args = ["view", str(layout.levels[3]), "--device", "cpu", "--autoencoder", str(moved), *layout.clip_args]
    assert main([*args, "--output-dir", str(tmp_path / "exports")]) == 0
    ((field, engine),) = started
    assert field.metadata.levels == ("subpart", "part", "whole") and str(moved) in field.metadata.source
    assert engine.query(layout.camera(), ["mug"], mode="gaussian").levels == (1,)
    assert "serving" in capsys.readouterr().out


def test_selection_keeps_each_phrase_at_its_level(layout):
    from gags_viewer.language.selection import GaussianSelector, OfficialRule

    field = load_field(layout.output)
    selector = GaussianSelector(layout.engine(field))
    rel = selector.relevancy(["mug", "plant"])
    n_mug, n_plant = layout.blob_sizes[MUG], layout.blob_sizes[PLANT]
    assert rel.shape == (2, field.num_gaussians)
    assert (rel[0, :n_mug] > 0.75).all() and (rel[1, n_mug : n_mug + n_plant] > 0.75).all()
    chosen = selector.select("mug", official=OfficialRule(radius=0.3)).mask
    assert chosen[:n_mug].float().mean() > 0.95 and chosen[n_mug:].float().mean() < 0.05


def test_select_command_saves_the_mug_with_its_levels(layout, tmp_path):
    out = tmp_path / "mug"
    args = ["select", str(layout.output), "--query", "mug", "--out", str(out), "--radius", "0.3", "--device", "cpu"]
    assert main([*args, "--autoencoder", str(layout.autoencoder), *layout.clip_args]) == 0
    kept = load_field(out)
    assert kept.metadata.levels == ("subpart", "part", "whole") and kept.feature_dim == 9
    n_mug = layout.blob_sizes[MUG]
    exact = "donot_use_mm_for_euclid_dist"
    is_mug = torch.cdist(kept.means, layout.geometry.means[:n_mug], compute_mode=exact).min(dim=1).values < 1e-6
    assert is_mug.sum() > 0.95 * n_mug and (~is_mug).sum() < 0.02 * n_mug  # the vote moves a few at the edge


def test_feature_click_on_several_levels_is_one_line(layout):
    from gags_viewer.errors import GagsError
    from gags_viewer.viewer.click_query import feature_embedding

    engine = layout.engine(load_field(layout.output))
    with pytest.raises(GagsError, match="one per level \\(subpart, part, whole\\)"):
        feature_embedding(engine, layout.camera(), W // 2, H // 2)


def test_compare_render_beside_a_langsplat_output(layout, tmp_path, capsys):
    """``render A B`` with B a LangSplat output (its autoencoder found where LangSplat writes it)."""
    native = save_field(load_field(layout.output), tmp_path / "native")
    out = tmp_path / "compare"
    args = ["render", str(native), str(layout.output), "--out", str(out), "--query", "mug", "--frames", "1"]
    assert main([*args, "--width", "64", "--video", "none", "--device", "cpu", *layout.clip_args]) == 0
    (frame,) = sorted((out / "frames").iterdir())
    assert frame.name == "frame_00000.png"
    assert "wrote 1 frames" in capsys.readouterr().out
