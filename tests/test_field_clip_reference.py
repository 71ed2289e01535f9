"""A field's reference to its CLIP text model: a copied demo still finds the bundled model, and a field
whose text model cannot be built is refused when it is loaded (``view``, ``demo``, ``eval``), or opened
without queries on request (``view --rgb-only``), saying why."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from gags_viewer.cli import main
from gags_viewer.demo import clip_model as dclip

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEMO = Path(__file__).resolve().parents[1] / "scenes" / "demo"
needs_demo = pytest.mark.skipif(
    not (DEMO / "field.json").is_file() or not (dclip.ASSETS_DIR / dclip.CHECKPOINT_FILE).is_file(),
    reason="the demo field or its CLIP model is not in this checkout",
)


def _copy_demo(target: Path) -> Path:
    shutil.copytree(DEMO, target, ignore=shutil.ignore_patterns("labels"))
    return target


def test_resolve_reference_forms(tmp_path):
    from gags_viewer.language.clip_weights import BUNDLED_ROOT, bundled_reference, resolve_reference

    assert resolve_reference("gags-viewer:assets/x.json", tmp_path) == str(BUNDLED_ROOT / "assets" / "x.json")
    assert resolve_reference("clip/x.json", tmp_path) == str(tmp_path / "clip" / "x.json")
    assert resolve_reference("/abs/x.json", tmp_path) == "/abs/x.json"
    assert bundled_reference(BUNDLED_ROOT / "assets" / "demo_clip" / "a.json") == "gags-viewer:assets/demo_clip/a.json"
    assert bundled_reference(tmp_path / "a.json") is None


def test_demo_build_names_the_bundled_model_by_a_bundled_reference(tmp_path):
    """What the demo build writes for the bundled model: not a path out of the field's directory."""
    spec = dclip.clip_spec(dclip.ASSETS_DIR, relative_to=tmp_path / "anywhere" / "demo")
    assert spec.config_file == "gags-viewer:assets/demo_clip/gags-demo-clip.json"
    assert spec.checkpoint_file == "gags-viewer:assets/demo_clip/gags-demo-clip.safetensors"
    # a model outside the project keeps its relative path (the quick build in tests writes one)
    other = dclip.clip_spec(tmp_path / "assets", relative_to=tmp_path / "demo")
    assert other.checkpoint_file == "../assets/gags-demo-clip.safetensors"


@needs_demo
def test_committed_demo_field_json_is_what_the_build_writes():
    import dataclasses

    committed = json.loads((DEMO / "field.json").read_text())["clip"]
    assert committed == dataclasses.asdict(dclip.clip_spec(dclip.ASSETS_DIR, relative_to=DEMO))


@needs_demo
def test_a_copied_demo_answers_queries(tmp_path):
    from gags_viewer.viewer.commands import build_engine, check_text_model, load_for_viewing
    from gags_viewer.viewer.frame import compose_frame
    from gags_viewer.viewer.settings import ViewSettings

    copy = _copy_demo(tmp_path / "elsewhere" / "demo")
    field = load_for_viewing(copy, None, torch.device("cpu"))
    engine = build_engine(field, copy, torch.device("cpu"))
    assert check_text_model(engine) is None
    import math

    from gags_viewer.viewer.camera_path import camera_from_fov, default_framing

    framing = default_framing(field)
    camera = camera_from_fov(framing.c2w(), math.radians(framing.fov_y_deg), 96, 72)
    frame = compose_frame(field, camera, ViewSettings(queries_text="red cube"), engine, wait_for_text=True)
    assert not frame.pending and frame.legend.swatches
    assert engine.gaussian_relevancy(["red cube"]).max() > 0.5


def _broken_copy(tmp_path: Path) -> Path:
    copy = _copy_demo(tmp_path / "broken")
    meta = json.loads((copy / "field.json").read_text())
    meta["clip"]["config_file"] = "../../nowhere/gags-demo-clip.json"
    (copy / "field.json").write_text(json.dumps(meta))
    return copy


@needs_demo
def test_view_refuses_a_field_whose_text_model_cannot_be_built(tmp_path, monkeypatch, capsys):
    import gags_viewer.viewer.commands as commands

    served = []
    monkeypatch.setattr(commands, "serve", lambda *a, **k: served.append(k))
    assert main(["view", str(_broken_copy(tmp_path)), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CLIP model config not found" in err[0] and "--rgb-only" in err[0]
    assert not served


@needs_demo
def test_view_rgb_only_opens_it_without_queries_and_says_why(tmp_path, monkeypatch):
    import gags_viewer.viewer.commands as commands

    served = []
    monkeypatch.setattr(commands, "serve", lambda *a, **k: served.append((a, k)))
    assert main(["view", str(_broken_copy(tmp_path)), "--device", "cpu", "--rgb-only"]) == 0
    ((args, kwargs),) = served
    assert args[1] is None and "CLIP model config not found" in kwargs["queries_off"]


@needs_demo
def test_eval_refuses_a_field_whose_text_model_cannot_be_built(tmp_path, capsys):
    broken = _broken_copy(tmp_path)
    shutil.copytree(DEMO / "labels", broken / "labels")
    code = main(
        ["eval", str(broken), "--labels", str(broken / "labels"), "--out", str(tmp_path / "ev"), "--device", "cpu"]
    )
    assert code == 2
    assert "CLIP model config not found" in capsys.readouterr().err
    assert not (tmp_path / "ev" / "frames").exists()


@needs_demo
def test_render_with_a_query_refuses_a_field_whose_text_model_cannot_be_built(tmp_path, capsys):
    code = main(
        [
            "render",
            str(_broken_copy(tmp_path)),
            "--out",
            str(tmp_path / "out"),
            "--query",
            "lamp",
            "--device",
            "cpu",
            "--frames",
            "2",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CLIP model config not found" in err[0]
    assert not list(tmp_path.glob("out/frames/*.png"))  # refused before any frame
