"""Readers and writers of every on-disk form of a field.

Input files are built here in the exact on-disk layout of their producers (plyfile for Inria PLYs,
``torch.save`` of Conv2d modules for official decoders, numpy for ``.splat``), independently of our
writers, so that the tests do not just check our writer against our reader.
"""

import json
import math
import os
import pickle

import numpy as np
import plyfile
import pytest
import safetensors.torch
import torch
from torch import nn

from gags_viewer.errors import FieldError, FormatError
from gags_viewer.field.language_field import ClipSpec, FieldMetadata, LanguageField
from gags_viewer.field.load import load_field, save_field
from gags_viewer.field.ply import read_ply, write_ply
from gags_viewer.field.splat import read_splat, write_splat

C0 = 0.28209479177387814
FEATURES = 16


# ----------------------------------------------------------------------------------------------------
# Builders of files in their producers' layouts


def _truth(n, degree, feature_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "log_scales": torch.randn(n, 3, generator=g) - 4,
        "opacity_logits": torch.randn(n, generator=g),
        "sh": torch.randn(n, k, 3, generator=g),
        "features": torch.randn(n, feature_dim, generator=g) if feature_dim else None,
    }


def _write_inria_ply(path, truth, normals=True, text=False, byte_order="<", shuffle=False):
    """Write ``truth`` the way the Inria / GAGS ``save_ply`` does, with plyfile directly."""
    n, k, _ = truth["sh"].shape
    columns = {}
    for axis, name in enumerate("xyz"):
        columns[name] = truth["means"][:, axis]
    if normals:
        for name in ("nx", "ny", "nz"):
            columns[name] = torch.zeros(n)
    for c in range(3):
        columns[f"f_dc_{c}"] = truth["sh"][:, 0, c]
    for c in range(3):  # channel-major: all of R's higher coefficients, then G's, then B's
        for j in range(1, k):
            columns[f"f_rest_{c * (k - 1) + j - 1}"] = truth["sh"][:, j, c]
    columns["opacity"] = truth["opacity_logits"]
    for i in range(3):
        columns[f"scale_{i}"] = truth["log_scales"][:, i]
    for i in range(4):
        columns[f"rot_{i}"] = truth["quats"][:, i]
    if truth["features"] is not None:
        for i in range(truth["features"].shape[1]):
            columns[f"semantic_{i}"] = truth["features"][:, i]
    names = list(columns)
    if shuffle:
        names = sorted(names)  # f_rest_10 before f_rest_2, semantic_* before x, ...
    records = np.empty(n, dtype=[(name, "f4") for name in names])
    for name in names:
        records[name] = columns[name].numpy()
    element = plyfile.PlyElement.describe(records, "vertex")
    plyfile.PlyData([element], text=text, byte_order=byte_order).write(str(path))
    return path


class CNNDecoder(nn.Module):
    """Same module layout as the official ``CNN_decoder``: 1x1 convs at even ModuleList indices."""

    def __init__(self, dims):
        super().__init__()
        layers = []
        for i in range(len(dims) - 1):
            layers.append(nn.Conv2d(dims[i], dims[i + 1], kernel_size=1))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.decoder = nn.ModuleList(layers)


def _clip_decoder(in_dim=FEATURES):
    torch.manual_seed(1)
    return CNNDecoder([in_dim] + [256] * 8 + [512])


def _scale_decoder(in_dim=FEATURES):
    torch.manual_seed(2)
    return CNNDecoder([in_dim, 64, 128, 64, 32, 16, 3])


def _save_official_checkpoint(module, path):
    """``torch.save`` exactly as the official train.py does (module + Adam optimizer state)."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # gives the optimizer a real state (exp_avg, step, ...)
    torch.save({"module_state_dict": module.state_dict(), "optimizer_state_dict": optimizer.state_dict()}, path)
    return {k: v.clone() for k, v in module.state_dict().items()}


def _make_official_dir(root, iterations=(7000, 30000), decoder_iterations=(30000,), n=40, feature_dim=FEATURES):
    truths = {}
    for it in iterations:
        cloud = root / "point_cloud" / f"iteration_{it}"
        cloud.mkdir(parents=True)
        truths[it] = _truth(n, 3, feature_dim, seed=it)
        _write_inria_ply(cloud / "point_cloud.ply", truths[it])
    states = {}
    for it in decoder_iterations:
        states[it] = (
            _save_official_checkpoint(_clip_decoder(), root / f"decoder_chkpnt{it}.pth"),
            _save_official_checkpoint(_scale_decoder(), root / f"scale_decoder_chkpnt{it}.pth"),
        )
    return truths, states


def _assert_field_matches(field, truth):
    for name, value in truth.items():
        got = getattr(field, name)
        if value is None:
            assert got is None, name
        else:
            assert got.dtype == torch.float32, name
            assert torch.equal(got, value), name


def _message(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def _field(n=30, degree=3, feature_dim=FEATURES, decoders=True, metadata=None):
    truth = _truth(n, degree, feature_dim)
    field = LanguageField(**truth, metadata=metadata or FieldMetadata())
    if decoders:
        field.decoder = _clip_decoder(feature_dim).state_dict()
        field.granularity_decoder = _scale_decoder(feature_dim).state_dict()
    return field


# ----------------------------------------------------------------------------------------------------
# Inria PLY


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("feature_dim", [0, FEATURES])
def test_ply_reads_inria_layout(tmp_path, degree, feature_dim):
    truth = _truth(25, degree, feature_dim)
    field = load_field(_write_inria_ply(tmp_path / "a.ply", truth))
    _assert_field_matches(field, truth)
    assert field.sh_degree == degree
    assert field.feature_dim == feature_dim
    assert field.decoder is None and field.metadata.decoder_kind is None
    assert str(tmp_path / "a.ply") in field.metadata.source


def test_ply_f_rest_is_channel_major(tmp_path):
    # Degree 1, one Gaussian: f_rest_0..2 are red's 3 coefficients, 3..5 green's, 6..8 blue's.
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    values = [0, 0, 0, 100, 200, 300] + list(range(9)) + [0, 0, 0, 0, 1, 0, 0, 0]
    records = np.array([tuple(values)], dtype=[(name, "f4") for name in names])
    plyfile.PlyData([plyfile.PlyElement.describe(records, "vertex")]).write(str(tmp_path / "a.ply"))
    sh = load_field(tmp_path / "a.ply").sh
    expected = torch.tensor([[100, 200, 300], [0, 3, 6], [1, 4, 7], [2, 5, 8]], dtype=torch.float32)
    assert torch.equal(sh[0], expected)


def test_ply_property_order_does_not_matter(tmp_path):
    truth = _truth(10, 3, FEATURES)
    field = load_field(_write_inria_ply(tmp_path / "a.ply", truth, normals=False, shuffle=True))
    _assert_field_matches(field, truth)


@pytest.mark.parametrize("text,byte_order", [(True, "="), (False, ">")])
def test_ply_ascii_and_big_endian(tmp_path, text, byte_order):
    truth = _truth(12, 1, 4)
    field = load_field(_write_inria_ply(tmp_path / "a.ply", truth, text=text, byte_order=byte_order))
    for name, value in truth.items():
        assert torch.allclose(getattr(field, name), value, rtol=1e-6, atol=0), name


def test_ply_writer_uses_official_layout(tmp_path):
    field = _field(20, degree=3, decoders=False)
    write_ply(field, tmp_path / "out.ply")
    ply = plyfile.PlyData.read(str(tmp_path / "out.ply"))
    assert ply.text is False and ply.byte_order == "<"
    vertex = ply["vertex"]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(45)]
    expected += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    expected += [f"semantic_{i}" for i in range(16)]
    assert [p.name for p in vertex.properties] == expected
    assert all(vertex.data.dtype[name] == np.dtype("<f4") for name in expected)
    assert not vertex["nx"].any()
    # channel-major f_rest: f_rest_(15 c + j - 1) holds coefficient j of channel c
    assert np.array_equal(vertex["f_rest_16"], field.sh[:, 2, 1].numpy())
    reread = read_ply(tmp_path / "out.ply")
    names = ("means", "quats", "log_scales", "opacity_logits", "sh", "features")
    _assert_field_matches(reread, {k: getattr(field, k) for k in names})


def test_ply_writer_without_features(tmp_path):
    field = _field(5, degree=0, feature_dim=0, decoders=False)
    write_ply(field, tmp_path / "out.ply")
    names = [p.name for p in plyfile.PlyData.read(str(tmp_path / "out.ply"))["vertex"].properties]
    assert not any(name.startswith(("semantic_", "f_rest_")) for name in names)
    assert read_ply(tmp_path / "out.ply").features is None


def test_ply_missing_properties_are_named(tmp_path):
    records = np.zeros(3, dtype=[(name, "f4") for name in ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]])
    plyfile.PlyData([plyfile.PlyElement.describe(records, "vertex")]).write(str(tmp_path / "a.ply"))
    with pytest.raises(FormatError) as excinfo:
        load_field(tmp_path / "a.ply")
    message = _message(excinfo)
    assert "scale_0, scale_1, scale_2, rot_0, rot_1, rot_2, rot_3" in message
    assert str(tmp_path / "a.ply") in message


def _drop_properties(path, truth, drop):
    _write_inria_ply(path, truth)
    vertex = plyfile.PlyData.read(str(path))["vertex"].data
    keep = [name for name in vertex.dtype.names if name not in drop]
    records = np.empty(len(vertex), dtype=[(name, "f4") for name in keep])
    for name in keep:
        records[name] = vertex[name]
    plyfile.PlyData([plyfile.PlyElement.describe(records, "vertex")]).write(str(path))


def test_ply_unknown_sh_count(tmp_path):
    _drop_properties(tmp_path / "a.ply", _truth(4, 2, 0), {f"f_rest_{i}" for i in range(10, 24)})
    with pytest.raises(FormatError, match=r"has 10 f_rest_\* properties; expected 0, 9, 24 or 45") as excinfo:
        load_field(tmp_path / "a.ply")
    _message(excinfo)


def test_ply_gap_in_feature_numbering(tmp_path):
    _drop_properties(tmp_path / "a.ply", _truth(4, 0, 8), {"semantic_3"})
    with pytest.raises(FormatError, match="missing semantic_3") as excinfo:
        load_field(tmp_path / "a.ply")
    _message(excinfo)


def test_ply_without_vertex_element(tmp_path):
    records = np.zeros(2, dtype=[("a", "f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(records, "face")]).write(str(tmp_path / "a.ply"))
    with pytest.raises(FormatError, match="no 'vertex' element"):
        load_field(tmp_path / "a.ply")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:-7], id="body-cut"),
        pytest.param(lambda b: b[: b.index(b"end_header") - 20], id="header-cut"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"\x89PNG\r\n\x1a\n" + b[8:], id="not-ply"),
        pytest.param(lambda b: b.replace(b"property float x", b"property float \xff"), id="binary-header"),
        pytest.param(lambda b: b.replace(b"element vertex 10", b"element vertex 99999999999"), id="huge-count"),
        pytest.param(lambda b: b.replace(b"element vertex 10", b"element vertex -1"), id="negative-count"),
    ],
)
def test_damaged_ply_is_one_line_format_error(tmp_path, damage):
    path = _write_inria_ply(tmp_path / "a.ply", _truth(10, 1, 4))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(FormatError) as excinfo:
        load_field(path)
    assert str(path) in _message(excinfo)


def test_ascii_ply_cut_short(tmp_path):
    path = _write_inria_ply(tmp_path / "a.ply", _truth(10, 0, 0), text=True)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(FormatError) as excinfo:
        load_field(path)
    _message(excinfo)


def test_nan_in_ply_reported_by_validate(tmp_path):
    truth = _truth(10, 0, 4)
    truth["means"][3, 1] = float("nan")
    path = _write_inria_ply(tmp_path / "a.ply", truth)
    assert read_ply(path).means.isnan().any()  # the reader itself does not validate
    with pytest.raises(FormatError, match=r"positions \(means\) contain NaN or Inf") as excinfo:
        load_field(path)
    assert str(path) in _message(excinfo)


# ----------------------------------------------------------------------------------------------------
# antimatter15 .splat

SPLAT = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def _splat_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=SPLAT)
    rows["pos"] = rng.normal(size=(n, 3))
    rows["scale"] = rng.uniform(0.001, 0.1, size=(n, 3))
    rows["rgba"] = rng.integers(0, 256, size=(n, 4))
    rows["rot"] = rng.integers(0, 256, size=(n, 4))
    return rows


def test_splat_reader_converts_to_pre_activation(tmp_path):
    rows = _splat_rows(64)
    rows["rgba"][0, 3], rows["rgba"][1, 3] = 0, 255
    path = tmp_path / "a.splat"
    path.write_bytes(rows.tobytes())
    field = load_field(path)
    assert field.num_gaussians == 64 and field.sh.shape == (64, 1, 3) and field.features is None
    assert torch.equal(field.means, torch.from_numpy(rows["pos"].copy()))
    assert torch.allclose(field.scales(), torch.from_numpy(rows["scale"].copy()), rtol=1e-6)
    rgba = torch.from_numpy(rows["rgba"].astype(np.float64) / 255)
    assert torch.allclose(0.5 + C0 * field.sh[:, 0, :].double(), rgba[:, :3], atol=1e-6)
    assert torch.allclose(field.opacities().double(), rgba[:, 3], atol=1e-5)
    assert torch.isfinite(field.opacity_logits).all()
    assert field.opacities()[0] < 1e-5 and field.opacities()[1] > 1 - 1e-5
    expected_q = (torch.from_numpy(rows["rot"].astype(np.float32)) - 128) / 128  # w, x, y, z
    assert torch.equal(field.quats, expected_q)


def test_splat_writer_round_trip(tmp_path):
    original = _splat_rows(50, seed=3)
    original["rot"] = np.array([200, 100, 128, 150], dtype=np.uint8)
    original["rot"] = np.rint(_unit(original["rot"].astype(np.float64) - 128) * 128 + 128).astype(np.uint8)
    path = tmp_path / "a.splat"
    path.write_bytes(original.tobytes())
    field = read_splat(path)
    write_splat(field, tmp_path / "b.splat")
    again = np.frombuffer((tmp_path / "b.splat").read_bytes(), dtype=SPLAT)
    assert np.array_equal(again["pos"], original["pos"])
    np.testing.assert_allclose(again["scale"], original["scale"], rtol=1e-6)
    assert np.array_equal(again["rgba"], original["rgba"])
    assert np.abs(again["rot"].astype(int) - original["rot"].astype(int)).max() <= 1


def _unit(q):
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def test_splat_writer_from_ply_field(tmp_path):
    field = _field(20, degree=2, decoders=False)
    write_splat(field, tmp_path / "a.splat")
    assert (tmp_path / "a.splat").stat().st_size == 20 * 32
    back = load_field(tmp_path / "a.splat")
    assert torch.equal(back.means, field.means)
    assert torch.allclose(back.log_scales, field.log_scales, atol=1e-5)
    assert torch.allclose(back.opacities(), field.opacities(), atol=1 / 255)
    dots = (back.unit_quats() * field.unit_quats()).sum(-1).abs()
    assert (dots > 0.999).all()


@pytest.mark.parametrize("size", [0, 31, 65])
def test_splat_bad_size(tmp_path, size):
    path = tmp_path / "a.splat"
    path.write_bytes(_splat_rows(3).tobytes()[:size])
    with pytest.raises(FormatError) as excinfo:
        load_field(path)
    message = _message(excinfo)
    assert ("empty" in message) if size == 0 else ("not a multiple of 32" in message)


def test_splat_non_positive_scale(tmp_path):
    rows = _splat_rows(5)
    rows["scale"][2, 1] = 0.0
    rows["scale"][4, 0] = -1.0
    (tmp_path / "a.splat").write_bytes(rows.tobytes())
    with pytest.raises(FormatError, match="2 Gaussians have a scale") as excinfo:
        load_field(tmp_path / "a.splat")
    _message(excinfo)


# ----------------------------------------------------------------------------------------------------
# Official GAGS output directory


def test_official_directory(tmp_path):
    truths, states = _make_official_dir(tmp_path)
    cameras = [
        {
            "id": 0,
            "img_name": "frame_00001",
            "width": 800,
            "height": 600,
            "position": [1.0, 2.0, 3.0],
            "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "fy": 300.0,
            "fx": 300.0,
        },
        {
            "id": 1,
            "img_name": "frame_00002",
            "width": 800,
            "height": 600,
            "position": [0, 0, 0],
            "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "fy": 1.0,
            "fx": 1.0,
        },
    ]
    (tmp_path / "cameras.json").write_text(json.dumps(cameras))
    field = load_field(tmp_path)
    _assert_field_matches(field, truths[30000])
    clip_state, scale_state = states[30000]
    assert list(field.decoder) == list(clip_state)
    for key, value in clip_state.items():
        assert torch.equal(field.decoder[key], value), key
    assert field.decoder["decoder.0.weight"].shape == (256, 16, 1, 1)
    assert field.decoder["decoder.16.weight"].shape == (512, 256, 1, 1)
    for key, value in scale_state.items():
        assert torch.equal(field.granularity_decoder[key], value), key
    meta = field.metadata
    assert meta.decoder_kind == "gags"
    assert meta.clip == ClipSpec(model="ViT-B-16", pretrained="laion2b_s34b_b88k")
    assert str(tmp_path) in meta.source and "30000" in meta.source
    camera = meta.default_camera
    assert camera["c2w"] == [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]
    assert camera["fov_y_deg"] == pytest.approx(math.degrees(2 * math.atan(600 / (2 * 300))))  # 90 degrees


def test_official_iteration_choice(tmp_path):
    truths, _ = _make_official_dir(tmp_path, iterations=(7000, 30000), decoder_iterations=(30000,))
    early = load_field(tmp_path, iteration=7000)
    _assert_field_matches(early, truths[7000])
    assert early.decoder is None and early.metadata.decoder_kind is None  # no decoder_chkpnt7000.pth
    assert "7000" in early.metadata.source
    with pytest.raises(FormatError, match="no iteration 15000; available iterations: 7000, 30000") as excinfo:
        load_field(tmp_path, iteration=15000)
    _message(excinfo)


def test_official_point_cloud_only(tmp_path):
    truths, _ = _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    field = load_field(tmp_path)
    assert field.has_language and field.decoder is None and field.granularity_decoder is None
    _assert_field_matches(field, truths[30000])


def test_official_bare_state_dict(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    state = _clip_decoder().state_dict()
    torch.save(state, tmp_path / "decoder_chkpnt30000.pth")
    field = load_field(tmp_path)
    assert all(torch.equal(field.decoder[k], v) for k, v in state.items())
    assert field.granularity_decoder is None


def _write_marker(path):
    with open(path, "w") as handle:
        handle.write("code ran")
    return {}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_write_marker, (self.marker,))


@pytest.mark.parametrize("wrapped", [True, False])
def test_malicious_pth_is_refused_without_running_code(tmp_path, wrapped):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    marker = tmp_path / "marker.txt"
    payload = {"module_state_dict": _Payload(str(marker))} if wrapped else _Payload(str(marker))
    torch.save(payload, tmp_path / "decoder_chkpnt30000.pth")
    with pytest.raises(FormatError, match="refusing to unpickle") as excinfo:
        load_field(tmp_path)
    assert "decoder_chkpnt30000.pth" in _message(excinfo)
    assert not marker.exists()
    # Positive control: the payload is live, an unrestricted unpickler does run it.
    torch.load(tmp_path / "decoder_chkpnt30000.pth", weights_only=False)
    assert marker.read_text() == "code ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_legacy_pickle_is_refused(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    marker = tmp_path / "marker.txt"
    with open(tmp_path / "scale_decoder_chkpnt30000.pth", "wb") as handle:
        pickle.dump({"module_state_dict": _Payload(str(marker))}, handle)
    with pytest.raises(FormatError) as excinfo:
        load_field(tmp_path)
    _message(excinfo)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"epoch": 3, "note": "hello"}, id="no-state-dict"),
        pytest.param({"module_state_dict": {"decoder.0.weight": [1, 2]}}, id="not-tensors"),
        pytest.param([torch.ones(2)], id="list"),
        pytest.param({}, id="empty-dict"),
    ],
)
def test_pth_that_is_not_a_state_dict(tmp_path, content):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    torch.save(content, tmp_path / "decoder_chkpnt30000.pth")
    with pytest.raises(FormatError, match="nor a bare state dict") as excinfo:
        load_field(tmp_path)
    _message(excinfo)


@pytest.mark.parametrize("cut", [0, 100, -100])
def test_damaged_pth(tmp_path, cut):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=(30000,))
    path = tmp_path / "decoder_chkpnt30000.pth"
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(FormatError) as excinfo:
        load_field(tmp_path)
    assert str(path) in _message(excinfo)


def test_garbage_pth(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    (tmp_path / "decoder_chkpnt30000.pth").write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(FormatError, match="not a readable PyTorch checkpoint") as excinfo:
        load_field(tmp_path)
    _message(excinfo)


def test_decoder_with_missing_layer(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    state = _clip_decoder().state_dict()
    del state["decoder.8.bias"]
    torch.save({"module_state_dict": state}, tmp_path / "decoder_chkpnt30000.pth")
    with pytest.raises(FormatError, match="missing keys: decoder.8.bias") as excinfo:
        load_field(tmp_path)
    _message(excinfo)


def test_decoder_with_wrong_kernel(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    state = _clip_decoder().state_dict()
    state["decoder.4.weight"] = torch.zeros(256, 256, 3, 3)
    torch.save({"module_state_dict": state}, tmp_path / "decoder_chkpnt30000.pth")
    with pytest.raises(FormatError, match=r"decoder.4.weight has shape \[256, 256, 3, 3\]") as excinfo:
        load_field(tmp_path)
    _message(excinfo)


def test_granularity_decoder_must_output_three(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    _save_official_checkpoint(CNNDecoder([16, 64, 128, 64, 32, 16, 4]), tmp_path / "scale_decoder_chkpnt30000.pth")
    with pytest.raises(FormatError, match="outputs 4 channels; expected 3") as excinfo:
        load_field(tmp_path)
    assert "scale_decoder_chkpnt30000.pth" in _message(excinfo)


def test_decoder_input_must_match_features(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=(), feature_dim=8)
    _save_official_checkpoint(_clip_decoder(16), tmp_path / "decoder_chkpnt30000.pth")
    with pytest.raises(FormatError, match="feature dimension 8 does not match") as excinfo:
        load_field(tmp_path)
    _message(excinfo)


def test_decoder_without_features(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=(30000,), feature_dim=0)
    with pytest.raises(FormatError, match="no language features"):
        load_field(tmp_path)


def test_bad_cameras_json_is_ignored(tmp_path):
    _make_official_dir(tmp_path, iterations=(30000,), decoder_iterations=())
    (tmp_path / "cameras.json").write_text("[{broken")
    assert load_field(tmp_path).metadata.default_camera is None


# ----------------------------------------------------------------------------------------------------
# Native directory


def _assert_same_field(a, b):
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh", "features"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        assert x is None or (x.dtype == y.dtype and torch.equal(x, y)), name
    for name in ("decoder", "granularity_decoder"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert sorted(x) == sorted(y), name
            for key in x:
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), (name, key)
    assert a.metadata == b.metadata


def test_native_round_trip_is_exact(tmp_path):
    metadata = FieldMetadata(
        clip=ClipSpec(model="ViT-L-14", pretrained=None, config_file="clip.json", checkpoint_file="clip.bin"),
        negatives=("object", "floor"),
        up=(0.0, 0.0, 1.0),
        default_camera={"c2w": [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1]], "fov_y_deg": 50.0},
        decoder_kind="gags",
        example_queries=("mug", "plant"),
        source="unit test",
    )
    field = _field(33, degree=3, metadata=metadata)
    save_field(field, tmp_path / "field")
    assert sorted(os.listdir(tmp_path / "field")) == ["decoders.safetensors", "field.json", "point_cloud.ply"]
    assert os.listdir(tmp_path) == ["field"]
    loaded = load_field(tmp_path / "field")
    _assert_same_field(field, loaded)
    # The files stay readable by other tools, with documented names.
    keys = set(safetensors.torch.load_file(str(tmp_path / "field" / "decoders.safetensors")))
    assert "clip_decoder.decoder.0.weight" in keys and "granularity_decoder.decoder.10.bias" in keys
    assert len(keys) == 18 + 12
    on_disk = json.loads((tmp_path / "field" / "field.json").read_text())
    assert on_disk["format_version"] == 1 and on_disk["clip"]["model"] == "ViT-L-14"
    assert "semantic_15" in plyfile.PlyData.read(str(tmp_path / "field" / "point_cloud.ply"))["vertex"].data.dtype.names


def test_native_round_trip_rgb_only(tmp_path):
    field = _field(7, degree=1, feature_dim=0, decoders=False, metadata=FieldMetadata(source="rgb"))
    save_field(field, tmp_path / "f")
    assert not (tmp_path / "f" / "decoders.safetensors").exists()
    _assert_same_field(field, load_field(tmp_path / "f"))


def test_official_to_native(tmp_path):
    _make_official_dir(tmp_path / "gags")
    official = load_field(tmp_path / "gags")
    save_field(official, tmp_path / "native")
    _assert_same_field(official, load_field(tmp_path / "native"))


def test_save_replaces_existing_field(tmp_path):
    save_field(_field(10, metadata=FieldMetadata(decoder_kind="gags", source="one")), tmp_path / "f")
    second = _field(5, degree=0, feature_dim=0, decoders=False, metadata=FieldMetadata(source="two"))
    save_field(second, tmp_path / "f")
    assert sorted(os.listdir(tmp_path / "f")) == ["field.json", "point_cloud.ply"]  # stale decoders gone
    _assert_same_field(second, load_field(tmp_path / "f"))
    assert os.listdir(tmp_path) == ["f"]


def test_save_refuses_foreign_directory_and_file(tmp_path):
    field = _field(5, decoders=False)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(FieldError, match="refusing") as excinfo:
        save_field(field, tmp_path / "photos")
    _message(excinfo)
    assert os.listdir(tmp_path / "photos") == ["cat.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FieldError, match="not a directory"):
        save_field(field, tmp_path / "file")
    (tmp_path / "empty").mkdir()
    save_field(field, tmp_path / "empty")  # an empty directory is fine


def test_save_validates_first(tmp_path):
    field = _field(5, decoders=False)
    field.features[0, 0] = float("inf")
    with pytest.raises(FieldError, match="language features contain NaN or Inf"):
        save_field(field, tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_save_rejects_unserialisable_metadata(tmp_path):
    field = _field(5, decoders=False, metadata=FieldMetadata(default_camera={"fov_y_deg": float("nan")}))
    with pytest.raises(FieldError, match="cannot be written as JSON"):
        save_field(field, tmp_path / "f")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def native_dir(tmp_path):
    save_field(_field(6, metadata=FieldMetadata(decoder_kind="gags")), tmp_path / "f")
    return tmp_path / "f"


def test_corrupt_safetensors(native_dir):
    path = native_dir / "decoders.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FormatError, match="not a valid safetensors file") as excinfo:
        load_field(native_dir)
    assert str(path) in _message(excinfo)


def test_safetensors_with_unknown_prefix(native_dir):
    path = native_dir / "decoders.safetensors"
    tensors = safetensors.torch.load_file(str(path))
    tensors["autoencoder.decoder.0.weight"] = torch.ones(2)
    safetensors.torch.save_file(tensors, str(path))
    with pytest.raises(FormatError, match="unexpected tensor 'autoencoder.decoder.0.weight'") as excinfo:
        load_field(native_dir)
    _message(excinfo)


def test_missing_decoders_file(native_dir):
    (native_dir / "decoders.safetensors").unlink()
    with pytest.raises(FormatError, match="decoder_kind 'gags' but there is no clip decoder"):
        load_field(native_dir)


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"format_version": 1, "clip": ', "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"format_version": 1, "colour": "red"}', "unknown metadata keys: colour"),
        ('{"format_version": 1, "clip": {"model": "x", "size": 3}}', "metadata 'clip' must be an object"),
        ('{"source": "x"}', "has no 'format_version'"),
        ('{"format_version": 2}', "format_version 2; this gags-viewer reads versions 1..1"),
        ('{"format_version": "1"}', "format_version '1'"),
    ],
)
def test_bad_field_json(native_dir, text, match):
    (native_dir / "field.json").write_text(text)
    with pytest.raises(FormatError, match=match) as excinfo:
        load_field(native_dir)
    assert "field.json" in _message(excinfo)


def test_native_without_point_cloud(native_dir):
    (native_dir / "point_cloud.ply").unlink()
    with pytest.raises(FormatError, match="no point_cloud.ply"):
        load_field(native_dir)


# ----------------------------------------------------------------------------------------------------
# Dispatch


def test_dispatch_errors(tmp_path):
    cases = {
        tmp_path / "missing.ply": "no such file or directory",
        tmp_path / "model.obj": "unknown file type '.obj'",
        tmp_path / "noext": "unknown file type '(no extension)'",
        tmp_path / "emptydir": "has no field.json and no point_cloud/iteration_<N>/;",
    }
    (tmp_path / "model.obj").write_text("v 0 0 0")
    (tmp_path / "noext").write_text("x")
    (tmp_path / "emptydir").mkdir()
    for path, expected in cases.items():
        with pytest.raises(FieldError) as excinfo:
            load_field(path)
        message = _message(excinfo)
        assert expected in message and str(path) in message, message
        assert ".splat" in message or "no such" in message


def test_dispatch_hints_at_bare_point_cloud(tmp_path):
    _write_inria_ply(tmp_path / "point_cloud.ply", _truth(3, 0, 0))
    with pytest.raises(FormatError, match="pass that file"):
        load_field(tmp_path)


def test_iteration_only_for_official(tmp_path):
    path = _write_inria_ply(tmp_path / "a.ply", _truth(3, 0, 0))
    with pytest.raises(FormatError, match="iteration= only applies"):
        load_field(path, iteration=30000)


def test_dispatch_uppercase_suffix(tmp_path):
    truth = _truth(3, 0, 0)
    _assert_field_matches(load_field(_write_inria_ply(tmp_path / "A.PLY", truth)), truth)
