"""The demo build end to end in its quick form (tiny scene, few steps): every stage runs and writes the
native field, the CLIP model, cameras, labels and the quality report."""

import json

import pytest

from gags_viewer.demo.build import BuildConfig, build, check_output
from gags_viewer.errors import GagsError


@pytest.mark.slow
def test_quick_build_writes_every_artifact(tmp_path):
    out, assets = tmp_path / "demo", tmp_path / "assets"
    result = build(BuildConfig(out=out, assets=assets, quick=True))
    assert (assets / "gags-demo-clip.json").is_file() and (assets / "gags-demo-clip.safetensors").is_file()
    assert (assets / "README.md").read_text().count("|") > 20
    for name in ("field.json", "point_cloud.ply", "decoders.safetensors", "cameras.json", "quality.json", "README.md"):
        assert (out / name).is_file(), name
    labels = sorted((out / "labels").glob("frame_*.json"))
    assert len(labels) == 2 and all(p.with_suffix(".jpg").is_file() for p in labels)
    meta = json.loads((out / "field.json").read_text())
    assert meta["clip"]["checkpoint_file"] == "../assets/gags-demo-clip.safetensors"
    assert meta["example_queries"][0] == "red cube" and meta["decoder_kind"] == "gags"
    quality = json.loads((out / "quality.json").read_text())
    assert set(quality) >= {"pixel", "gaussian", "build"}
    assert "object" in quality["pixel"]["levels"]
    assert set(result["timings"]) >= {"renders and masks", "demo CLIP model", "preprocessing", "distillation"}

    from gags_viewer.field.load import load_field

    field = load_field(out)
    assert field.has_language and field.metadata.up == (0.0, 0.0, 1.0)


def test_build_refuses_to_replace_other_directories(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(GagsError):
        check_output(tmp_path)
    check_output(tmp_path / "new")  # absent: fine
