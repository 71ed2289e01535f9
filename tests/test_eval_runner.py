"""The eval runner: frame -> camera matching, aggregation over (frame, query) pairs, report files, and
an end-to-end run through the real query engine on a small synthetic field."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console

from gags_viewer.eval import protocol
from gags_viewer.eval.labels import LabelError
from gags_viewer.eval.runner import (
    FRAME_CONVENTION,
    EvalConfig,
    EvalError,
    NamedCameras,
    cameras_json,
    find_cameras_json,
    run_eval,
)
from gags_viewer.render.camera import Camera, intrinsics, look_at

H, W = 40, 60


def quiet():
    return Console(file=open("/dev/null", "w"), width=120)


def box_polygon(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def write_frame(folder, name, objects, h=H, w=W):
    data = {"info": {"name": f"{name}.jpg", "height": h, "width": w}, "objects": objects}
    (folder / f"{name}.json").write_text(json.dumps(data))


def obj(category, x0, y0, x1, y1):
    return {"category": category, "bbox": [x0, y0, x1, y1], "segmentation": box_polygon(x0, y0, x1, y1)}


def fake_cameras(names):
    c2w = look_at([0.0, 0.0, -3.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0])
    cams = {n: Camera.from_camera_to_world(c2w, intrinsics(50.0, 50.0, 2 * W, 2 * H), 2 * W, 2 * H) for n in names}
    return NamedCameras(sorted(names), cams, "test cameras")


def block(x0, y0, x1, y1, h=H, w=W):
    r = np.zeros((h, w), np.float32)
    r[y0 : y1 + 1, x0 : x1 + 1] = 1.0
    return r


@pytest.fixture
def labels(tmp_path):
    folder = tmp_path / "myscene"
    folder.mkdir()
    write_frame(folder, "frame_00001", [obj("mug", 5, 5, 20, 20)])
    write_frame(
        folder,
        "frame_00002",
        [obj("mug", 30, 10, 50, 30), obj("plant", 2, 2, 10, 10), obj("mug", 52, 30, 58, 38), obj("lamp", 40, 0, 59, 5)],
    )
    return folder


def make_fn(maps, calls):
    """A relevancy function that returns prepared maps per frame (identified by call order)."""

    def fn(camera, queries):
        calls.append((camera.width, camera.height, list(queries)))
        return maps[len(calls) - 1], None

    return fn


def test_aggregates_over_all_pairs(labels, tmp_path):
    frame1 = np.stack([block(5, 5, 20, 20)])  # the mug, exactly
    frame2 = np.stack(
        [
            block(30, 10, 50, 30),  # mug: finds the big box
            np.full((H, W), 0.5, np.float32),  # plant: constant map -> empty mask, every pixel a peak
            block(0, 20, 15, 39),  # lamp: somewhere else
        ]
    )
    calls = []
    config = EvalConfig(field=tmp_path / "nofield", labels=labels, out=tmp_path / "out")
    report = run_eval(
        config,
        relevancy_fn=make_fn([frame1, frame2], calls),
        cameras=fake_cameras(["frame_00001", "frame_00002"]),
        console=quiet(),
    )
    # rendered at label resolution, queries in first-appearance order (same categories unioned)
    assert calls == [(W, H, ["mug"]), (W, H, ["mug", "plant", "lamp"])]
    assert report.mapping == "name" and report.frame_cameras == {
        "frame_00001": "frame_00001",
        "frame_00002": "frame_00002",
    }
    assert [(r.frame, r.query) for r in report.rows] == [
        ("frame_00001", "mug"),
        ("frame_00002", "mug"),
        ("frame_00002", "plant"),
        ("frame_00002", "lamp"),
    ]

    # every number equals the protocol functions on the same inputs
    from gags_viewer.eval.labels import load_labels

    frames = load_labels(labels)
    expected = []
    for frame, maps in zip(frames, [frame1, frame2]):
        for k, query in enumerate(frame.queries):
            expected.append(
                (protocol.iou(protocol.predict_mask(maps[k]), query.mask), protocol.localize(maps[k], query.boxes).hit)
            )
    assert [(r.iou, r.localized) for r in report.rows] == expected
    # hand-checked values: the constant map predicts nothing, and all its pixels tie as peaks
    plant = report.rows[2]
    assert plant.iou == 0.0 and plant.pred_pixels == 0 and plant.localized and len(plant.peaks) == H * W
    assert report.rows[3].iou == 0.0 and not report.rows[3].localized
    assert report.rows[0].localized and report.rows[1].localized
    # mIoU is the mean over the 4 pairs, not the mean of per-frame means
    ious = [r.iou for r in report.rows]
    assert report.miou == pytest.approx(sum(ious) / 4)
    assert report.miou != pytest.approx((ious[0] + sum(ious[1:]) / 3) / 2)
    assert report.localization_accuracy == pytest.approx(3 / 4)

    # files
    data = json.loads((tmp_path / "out" / "myscene.json").read_text())
    assert data["miou"] == pytest.approx(report.miou) and data["pairs"] == 4 and data["hits"] == 3
    assert data["mapping"] == "name" and len(data["rows"]) == 4
    assert [c["query"] for c in data["categories"]] == ["mug", "plant", "lamp"]
    assert data["categories"][0]["frames"] == 2
    with open(tmp_path / "out" / "myscene.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["query"] for r in rows] == ["mug", "mug", "plant", "lamp"]
    assert float(rows[1]["iou"]) == pytest.approx(report.rows[1].iou)
    import imageio.v3 as iio

    image = iio.imread(tmp_path / "out" / "frames" / "frame_00002" / "plant.png")
    assert image.shape == (H, 2 * W + 8, 3)
    assert sorted(p.name for p in (tmp_path / "out" / "frames" / "frame_00002").iterdir()) == [
        "lamp.png",
        "mug.png",
        "plant.png",
    ]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_frame_lines_are_not_wrapped(labels, tmp_path):
    import io

    text = io.StringIO()
    maps = [np.stack([block(5, 5, 20, 20)]), np.stack([block(30, 10, 50, 30)] * 3)]
    run_eval(
        EvalConfig(field=tmp_path / "nofield", labels=labels),
        relevancy_fn=make_fn(maps, []),
        cameras=fake_cameras(["frame_00001", "frame_00002"]),
        console=Console(file=text, width=40),
    )
    lines = text.getvalue().splitlines()
    for name in ("frame_00001", "frame_00002"):
        (line,) = [text for text in lines if text.startswith(name)]
        assert "mIoU" in line and "localized" in line and line.rstrip().endswith(" s")


def test_constructed_iou_and_localization_by_hand(tmp_path):
    # A 60x60 frame, GT = the 30x30 block at rows 10..39, cols 20..49 (fillPoly corners inclusive).
    folder = tmp_path / "scene"
    folder.mkdir()
    write_frame(folder, "frame_00001", [obj("cube", 20, 10, 49, 39), obj("ball", 0, 0, 5, 5)], h=60, w=60)
    r = block(20, 10, 49, 39, h=60, w=60)
    # Prediction for "cube": r' = ½(r + box30(r)); inside the block r' ≥ ½(1 + 0.25), outside r' ≤ ½·0.75,
    # so with min r' = 0 and max r' = 1 the threshold r' > 0.7 (times 1 + 1e-9) keeps exactly the block
    # pixels where box30(r) > 0.4; box30(r) is a multiple of 1/900 here, so 360/900 itself stays out.
    boxed = protocol.box_filter(r)
    expected_pred = protocol.majority_filter((r > 0) & (boxed > 0.4 + 1e-6))
    gt = r > 0
    expected_iou = (expected_pred & gt).sum() / (expected_pred | gt).sum()
    report = run_eval(
        EvalConfig(field=tmp_path / "x", labels=folder),
        relevancy_fn=lambda cam, q: (np.stack([r, r]), None),
        cameras=fake_cameras(["frame_00001"]),
        console=quiet(),
    )
    cube, ball = report.rows
    assert cube.iou == pytest.approx(expected_iou) and 0.5 < cube.iou < 1
    assert cube.peaks == [[35, 25]] and cube.localized  # box30 peak where the window covers the block
    assert ball.peaks == [[35, 25]] and not ball.localized
    assert report.localization_accuracy == 0.5


def test_frame_number_convention_fallback(labels, tmp_path):
    cams = fake_cameras(["img_b", "img_a", "img_c"])
    lines = []
    console = Console(file=open("/dev/null", "w"), width=200)
    console.print = lambda text, **kw: lines.append(str(text))  # capture notes
    maps = [np.zeros((1, H, W), np.float32), np.zeros((3, H, W), np.float32)]
    report = run_eval(
        EvalConfig(field=tmp_path / "x", labels=labels), relevancy_fn=make_fn(maps, []), cameras=cams, console=console
    )
    assert report.mapping == FRAME_CONVENTION
    assert report.frame_cameras == {"frame_00001": "img_a", "frame_00002": "img_b"}  # name order, XXXXX - 1
    assert any("official convention" in line and "frame_00001 -> img_a" in line for line in lines)
    assert any("official convention" in n for n in report.notes)


def test_partial_name_match_is_an_error(labels, tmp_path):
    with pytest.raises(
        EvalError, match=r"frame_00002\.json: no camera named 'frame_00002' \(1 of 2 label frames match"
    ):
        run_eval(
            EvalConfig(field=tmp_path / "x", labels=labels),
            relevancy_fn=make_fn([], []),
            cameras=fake_cameras(["frame_00001", "other"]),
            console=quiet(),
        )


def test_convention_out_of_range(labels, tmp_path):
    with pytest.raises(EvalError, match=r"frame_00002\.json: frame number 2 is outside the 1 cameras"):
        run_eval(
            EvalConfig(field=tmp_path / "x", labels=labels),
            relevancy_fn=make_fn([], []),
            cameras=fake_cameras(["zzz"]),
            console=quiet(),
        )


def test_malformed_label_stops_before_rendering(labels, tmp_path):
    (labels / "frame_00003.json").write_text(
        json.dumps({"info": {"height": 4, "width": 4}, "objects": [{"category": "x"}]})
    )
    with pytest.raises(LabelError, match=r"frame_00003\.json: objects\[0\] has no 'bbox'"):
        run_eval(
            EvalConfig(field=tmp_path / "x", labels=labels),
            relevancy_fn=make_fn([], []),
            cameras=fake_cameras(["frame_00001"]),
            console=quiet(),
        )


def test_cameras_json_reading(tmp_path):
    c2w = look_at([0.0, 0.0, -3.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]).numpy()
    entries = [
        {
            "id": i,
            "img_name": name,
            "width": 80,
            "height": 40,
            "position": c2w[:3, 3].tolist(),
            "rotation": c2w[:3, :3].tolist(),
            "fx": 40.0,
            "fy": 41.0,
        }
        for i, name in enumerate(["frame_00002", "frame_00001"])
    ]
    case = tmp_path / "output" / "case"
    ply_dir = case / "point_cloud" / "iteration_30000"
    ply_dir.mkdir(parents=True)
    (case / "cameras.json").write_text(json.dumps(entries))
    assert find_cameras_json(ply_dir / "point_cloud.ply") == case / "cameras.json"
    assert find_cameras_json(case) == case / "cameras.json"
    cams = cameras_json(case / "cameras.json")
    assert cams.names == ["frame_00001", "frame_00002"]
    np.testing.assert_allclose(cams.cameras["frame_00001"].camera_to_world.numpy(), c2w, atol=1e-6)
    np.testing.assert_allclose(cams.cameras["frame_00001"].K.numpy(), [[40, 0, 40], [0, 41, 20], [0, 0, 1]])
    del entries[0]["fy"]
    (case / "cameras.json").write_text(json.dumps(entries))
    with pytest.raises(EvalError, match=r"cameras\.json: \[0\] has no 'fy'"):
        cameras_json(case / "cameras.json")


def test_no_cameras_is_a_clear_error(labels, tmp_path):
    (tmp_path / "field").mkdir()
    with pytest.raises(EvalError, match="no cameras.json beside the field; pass --scene-data"):
        run_eval(EvalConfig(field=tmp_path / "field", labels=labels), relevancy_fn=make_fn([], []), console=quiet())


# ------------------------------------------------------------------------------ real engine, end to end


def synthetic_field(clip_spec, n_side=14):
    """Gaussians on the plane z = 0 over [-1, 1]^2; left half one feature, right half another."""
    from gags_viewer.field.language_field import FieldMetadata, LanguageField
    from gags_viewer.language.decoders import random_gags_decoder_state

    g = torch.Generator().manual_seed(0)
    xs = torch.linspace(-1, 1, n_side)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    n = grid.shape[0]
    means = torch.cat([grid, torch.zeros(n, 1)], 1)
    left = torch.randn(16, generator=g)
    right = torch.randn(16, generator=g)
    features = torch.where((grid[:, :1] < 0), left, right) + 0.05 * torch.randn(n, 16, generator=g)
    return LanguageField(
        means=means,
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), math.log(0.1)),
        opacity_logits=torch.full((n,), 3.0),
        sh=torch.rand(n, 1, 3, generator=g),
        features=features,
        decoder=random_gags_decoder_state(seed=1),
        metadata=FieldMetadata(clip=clip_spec, decoder_kind="gags", source="test"),
    )


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory):
    from gags_viewer.field.load import save_field
    from tests.tiny_clip import make_tiny_clip

    root = tmp_path_factory.mktemp("evalfield")
    spec = make_tiny_clip(root)
    directory = save_field(synthetic_field(spec), root / "field")
    return directory


def write_cameras_json(directory, names, w=64, h=48):
    entries = []
    for i, name in enumerate(names):
        c2w = look_at([0.3 * i, 0.0, -3.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]).numpy()
        entries.append(
            {
                "id": i,
                "img_name": name,
                "width": w,
                "height": h,
                "position": c2w[:3, 3].tolist(),
                "rotation": c2w[:3, :3].tolist(),
                "fx": 60.0,
                "fy": 60.0,
            }
        )
    (directory / "cameras.json").write_text(json.dumps(entries))


@pytest.mark.parametrize("mode", ["pixel", "gaussian"])
def test_end_to_end_with_engine(field_dir, tmp_path, mode):
    from gags_viewer.field.load import load_field
    from gags_viewer.language.clip_text import shared_text_encoder
    from gags_viewer.language.engine import QueryEngine

    write_cameras_json(field_dir, ["frame_00001", "frame_00002"])
    labels = tmp_path / "labels"
    labels.mkdir()
    write_frame(labels, "frame_00001", [obj("red mug", 2, 2, 15, 20), obj("plant", 20, 5, 30, 25)], h=24, w=32)
    write_frame(labels, "frame_00002", [obj("plant", 0, 0, 31, 23)], h=24, w=32)
    out = tmp_path / "out"
    report = run_eval(EvalConfig(field=field_dir, labels=labels, mode=mode, out=out, device="cpu"), console=quiet())
    assert report.mapping == "name" and len(report.rows) == 3
    assert 0.0 <= report.miou <= 1.0
    assert report.settings["negatives"] == ["object", "things", "stuff", "texture"]
    assert "§4.3" in report.settings["rule"] and "not the 3D per-Gaussian query" in report.settings["rule"]
    assert report.scene == tmp_path.name  # ".../labels" is named after its parent
    assert report.settings.get("decode_precision") == ("float32" if mode == "pixel" else None)  # auto on CPU
    assert (out / f"{tmp_path.name}.json").is_file() and (out / "frames" / "frame_00001" / "red_mug.png").is_file()

    # The runner's relevancy is the engine's, at label resolution, for the frame's camera.
    field = load_field(field_dir)
    engine = QueryEngine(field, shared_text_encoder(field.metadata.clip, device="cpu"))
    cams = cameras_json(field_dir / "cameras.json")
    camera = cams.cameras["frame_00001"].resized(32, 24)
    rel = engine.query(camera, ["red mug", "plant"], mode=mode).relevancy.numpy()
    from gags_viewer.eval.labels import load_labels
    from gags_viewer.eval.runner import score_frame

    rows, _ = score_frame(load_labels(labels)[0], rel)
    assert [(r.iou, r.localized, r.peaks) for r in rows] == [(r.iou, r.localized, r.peaks) for r in report.rows[:2]]
    assert report.timings[0].width == 32 and report.timings[0].render > 0


def test_end_to_end_with_colmap_scene(field_dir, tmp_path):
    from gags_viewer.dataset import colmap

    scene = tmp_path / "scene"
    sparse = scene / "sparse" / "0"
    sparse.mkdir(parents=True)
    colmap.write_cameras(
        sparse / "cameras.bin", [colmap.ColmapCamera(1, "PINHOLE", 64, 48, np.array([60.0, 60.0, 32.0, 24.0]))]
    )
    # camera at (0, 0, -3) looking down +z: identity rotation, t = (0, 0, 3)
    colmap.write_images(
        sparse / "images.bin",
        [
            colmap.ColmapImage(1, "IMG_0002.jpg", np.array([1.0, 0, 0, 0]), np.array([0.0, 0, 3]), 1),
            colmap.ColmapImage(2, "IMG_0001.jpg", np.array([1.0, 0, 0, 0]), np.array([0.1, 0, 3]), 1),
        ],
    )
    labels = tmp_path / "labels"
    labels.mkdir()
    write_frame(labels, "frame_00002", [obj("plant", 0, 0, 15, 23)], h=24, w=32)
    report = run_eval(EvalConfig(field=field_dir, labels=labels, scene_data=scene, device="cpu"), console=quiet())
    assert report.mapping == FRAME_CONVENTION and report.frame_cameras == {"frame_00002": "IMG_0002"}
    assert report.settings["camera_source"].startswith("COLMAP")


def test_decode_precision_is_chosen_on_the_cli_and_reported(field_dir, tmp_path):
    from gags_viewer.cli import main

    write_cameras_json(field_dir, ["frame_00001"])
    labels = tmp_path / "labels"
    labels.mkdir()
    write_frame(labels, "frame_00001", [obj("plant", 0, 0, 31, 23)], h=24, w=32)
    out = tmp_path / "out"
    args = ["eval", str(field_dir), "--labels", str(labels), "--device", "cpu", "--out", str(out), "--no-images"]
    assert main([*args, "--decode-precision", "float16"]) == 0
    assert json.loads((out / f"{tmp_path.name}.json").read_text())["settings"]["decode_precision"] == "float16"


def test_gaussian_neighbours_below_one_is_one_line_from_the_cli(field_dir, tmp_path, capsys):
    from gags_viewer.cli import main

    write_cameras_json(field_dir, ["frame_00001"])
    labels = tmp_path / "labels"
    labels.mkdir()
    write_frame(labels, "frame_00001", [obj("plant", 0, 0, 31, 23)], h=24, w=32)
    code = main(
        [
            "eval",
            str(field_dir),
            "--labels",
            str(labels),
            "--mode",
            "gaussian",
            "--device",
            "cpu",
            "--gaussian-neighbours",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "neighbours must be at least 1" in err


def test_levels_in_the_labels_give_a_per_level_table(tmp_path):
    """Labels whose objects say their level (the demo's) get mIoU and localization per level."""
    import io

    from gags_viewer.eval.report import level_summary

    folder = tmp_path / "levels"
    folder.mkdir()
    write_frame(
        folder,
        "frame_00001",
        [dict(obj("mug", 5, 5, 20, 20), level="object"), dict(obj("mug handle", 30, 10, 50, 30), level="part")],
    )
    maps = [np.stack([block(5, 5, 20, 20), block(0, 0, 3, 3)])]  # the mug exactly; the handle missed
    text = io.StringIO()
    report = run_eval(
        EvalConfig(field=tmp_path / "nofield", labels=folder),
        relevancy_fn=make_fn(maps, []),
        cameras=fake_cameras(["frame_00001"]),
        console=Console(file=text, width=120),
    )
    assert [r.level for r in report.rows] == ["object", "part"]
    levels = level_summary(report.rows)
    assert list(levels) == ["object", "part"]
    assert levels["object"][0] == 1 and levels["object"][1] == report.rows[0].iou > 0.8 and levels["object"][2] == 1.0
    assert levels["part"] == (1, 0.0, 0.0)
    printed = text.getvalue()
    assert "per level" in printed
    (object_line,) = [text for text in printed.splitlines() if "object" in text and "100.0 %" in text]
    (part_line,) = [text for text in printed.splitlines() if " part " in text and "0.0 %" in text]
    assert f"{100 * report.rows[0].iou:.1f}" in object_line


def test_labels_without_levels_print_no_level_table(labels, tmp_path):
    import io

    text = io.StringIO()
    maps = [np.stack([block(5, 5, 20, 20)]), np.stack([block(30, 10, 50, 30)] * 3)]
    run_eval(
        EvalConfig(field=tmp_path / "nofield", labels=labels),
        relevancy_fn=make_fn(maps, []),
        cameras=fake_cameras(["frame_00001", "frame_00002"]),
        console=Console(file=text, width=120),
    )
    assert "per level" not in text.getvalue()
