"""The demo build end to end in its quick form (tiny scene, few steps): every stage runs and writes the
native field, the CLIP model, cameras, labels and the quality report."""

import json

import pytest

from gags_viewer.demo.build import BuildConfig, build, check_output
from gags_viewer.errors import GagsError


def quick_build(root):
    out, assets = root / "demo", root / "assets"
    return out, assets, build(BuildConfig(out=out, assets=assets, quick=True))


PREPROCESS_CALLS: list = []


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The quick build, recording its calls of the ``gags-viewer preprocess`` entry point."""
    import gags_viewer.preprocess.run as run

    real = run.preprocess_scene

    def recording(config, mask_source=None, encoder=None):
        PREPROCESS_CALLS.append((config, mask_source))
        return real(config, mask_source, encoder)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "preprocess_scene", recording)
        return quick_build(tmp_path_factory.mktemp("quick_build"))


@pytest.mark.slow
def test_quick_build_writes_every_artifact(built):
    out, assets, result = built
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
    # the features came through the CLI's preprocessing entry point, with the ground-truth mask source
    from gags_viewer.preprocess import GroundTruthMaskSource

    assert len(PREPROCESS_CALLS) == 1 and isinstance(PREPROCESS_CALLS[0][1], GroundTruthMaskSource)

    from gags_viewer.field.load import load_field

    field = load_field(out)
    assert field.has_language and field.metadata.up == (0.0, 0.0, 1.0)


@pytest.mark.slow
def test_the_build_reproduces_its_artifacts_byte_for_byte(built, tmp_path):
    out, assets, _ = built
    again, again_assets, _ = quick_build(tmp_path)
    produced = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "quality.json")
    assert len(produced) >= 9 and produced == sorted(
        p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "quality.json"
    )
    for name in produced:  # quality.json differs only by the timings it records
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    for name in ("gags-demo-clip.json", "gags-demo-clip.safetensors", "README.md"):
        assert (assets / name).read_bytes() == (again_assets / name).read_bytes(), name
    first, second = (json.loads((d / "quality.json").read_text()) for d in (out, again))
    assert first["pixel"]["levels"] == second["pixel"]["levels"]


def test_build_refuses_to_replace_other_directories(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(GagsError):
        check_output(tmp_path)
    check_output(tmp_path / "new")  # absent: fine
