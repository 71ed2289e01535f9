"""``gags-viewer select`` and field editing: the official selection of a demo object and its exact
complement, edits return new fields, undo/redo, and a saved edited field reloads and renders the same."""

from __future__ import annotations

import pytest
import torch

from gags_viewer.cli import main
from gags_viewer.demo import DEMO_FIELD
from gags_viewer.errors import GagsError
from gags_viewer.field.edit import EditHistory, delete, keep_only, shown_only, tinted
from gags_viewer.field.load import load_field
from gags_viewer.render.api import render
from gags_viewer.render.camera import Camera, look_at

needs_demo = pytest.mark.skipif(not (DEMO_FIELD / "field.json").is_file(), reason="demo field not built")


def demo_camera(width=96, height=72):
    c2w = look_at([1.6, -1.6, 1.4], [0.0, 0.0, 0.05], [0.0, 0.0, 1.0])
    return Camera.from_fov(c2w, 50.0, width, height)


@pytest.fixture(scope="module")
def demo_selection():
    from gags_viewer.language.selection import GaussianSelector
    from gags_viewer.viewer.commands import build_engine

    field = load_field(DEMO_FIELD)
    return field, GaussianSelector(build_engine(field, DEMO_FIELD, torch.device("cpu"))).select("red cube").mask


@needs_demo
def test_select_and_invert_are_exact_complements_and_cover_the_object(demo_selection, tmp_path, capsys):
    from gags_viewer.demo.scene import NODE_INDEX, SceneConfig, make_scene

    field, mask = demo_selection
    kept, rest = tmp_path / "cube", tmp_path / "rest"
    assert main(["select", str(DEMO_FIELD), "--query", "red cube", "--out", str(kept), "--device", "cpu"]) == 0
    assert "official GAGS 3D query" in capsys.readouterr().out
    assert (
        main(["select", str(DEMO_FIELD), "--query", "red cube", "--out", str(rest), "--invert", "--device", "cpu"]) == 0
    )
    a, b = load_field(kept), load_field(rest)
    assert torch.equal(a.means, field.means[mask]) and torch.equal(b.means, field.means[~mask])
    assert a.num_gaussians + b.num_gaussians == field.num_gaussians
    assert a.decoder is not None and torch.equal(a.features, field.features[mask])
    assert "official GAGS 3D query" in a.metadata.source

    leaf = make_scene(SceneConfig(seed=0)).leaf
    cube = leaf == NODE_INDEX["red_cube"]
    assert (mask & cube).sum() >= 0.9 * cube.sum()
    assert (mask & cube).sum() >= 0.8 * mask.sum()

    # The saved selection is still queryable: its CLIP reference was rebased onto the new directory.
    from gags_viewer.language.selection import GaussianSelector
    from gags_viewer.viewer.commands import build_engine

    again = GaussianSelector(build_engine(a, kept, torch.device("cpu"))).relevancy(["red cube"])
    assert again.shape == (1, a.num_gaussians) and float(again.mean()) > 0.5


@needs_demo
def test_viewer_rule_and_plain_ply(tmp_path):
    out = tmp_path / "ply"
    assert (
        main(
            [
                "select",
                str(DEMO_FIELD),
                "--query",
                "green ball",
                "--out",
                str(out),
                "--format",
                "ply",
                "--rule",
                "viewer",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    plain = load_field(out / "point_cloud.ply")
    assert plain.features is None and 0 < plain.num_gaussians < 2000


def test_select_errors_are_one_line(tmp_path, capsys):
    from gags_viewer.field.ply import write_ply
    from tests.test_language_selection import clustered_field

    rgb = clustered_field(n=30)
    rgb.features = rgb.decoder = None
    write_ply(rgb, tmp_path / "rgb.ply")
    assert main(["select", str(tmp_path / "rgb.ply"), "--query", "mug", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no language features" in err


def small_field():
    from tests.test_language_selection import clustered_field

    return clustered_field(n=80)


def test_edits_return_new_fields_and_history_undoes_them():
    field = small_field()
    before = field.means.clone()
    selection = torch.zeros(field.num_gaussians, dtype=torch.bool)
    selection[:30] = True
    removed = delete(field, selection)
    kept = keep_only(field, selection)
    assert torch.equal(field.means, before), "the original is never changed"
    assert torch.equal(removed.means, before[30:]) and torch.equal(kept.means, before[:30])
    assert removed.decoder is field.decoder and "deleted" in removed.metadata.source
    with pytest.raises(GagsError, match="no Gaussian"):
        keep_only(field, torch.zeros(field.num_gaussians, dtype=torch.bool))
    with pytest.raises(GagsError, match="boolean mask"):
        delete(field, torch.zeros(3, dtype=torch.bool))

    history = EditHistory(field)
    assert not history.can_undo and not history.can_redo
    history.push(removed)
    history.push(keep_only(removed, torch.arange(removed.num_gaussians) < 10))
    assert history.current.num_gaussians == 10
    assert history.undo() is removed and history.undo() is field
    with pytest.raises(GagsError, match="nothing to undo"):
        history.undo()
    assert history.redo() is removed
    history.push(kept)  # a new edit drops the redo branch
    assert not history.can_redo and history.current is kept


def test_display_variants_keep_every_gaussian():
    field = small_field()
    visible = torch.arange(field.num_gaussians) % 2 == 0
    shown = shown_only(field, visible)
    assert shown.num_gaussians == field.num_gaussians
    assert torch.equal(shown.opacities()[~visible], torch.zeros(int((~visible).sum())))
    assert torch.equal(shown.opacity_logits[visible], field.opacity_logits[visible])
    channels = torch.zeros(field.num_gaussians, 4)
    channels[visible] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # red, fully tinted
    for strength in (1.0, 0.25):
        red = tinted(field, channels, strength)
        colour, before = red.sh[:, 0, :] * 0.28209479177387814 + 0.5, field.sh[:, 0, :] * 0.28209479177387814 + 0.5
        expected = (1 - strength) * before[visible] + strength * torch.tensor([1.0, 0.0, 0.0])
        assert torch.allclose(colour[visible], expected, atol=1e-6)
        assert torch.equal(red.sh[~visible], field.sh[~visible]) and not torch.equal(field.sh, red.sh)
    with pytest.raises(GagsError, match="tint channels"):
        tinted(field, channels[:, :3], 0.5)


@needs_demo
def test_saved_edited_field_reloads_and_renders_identically(demo_selection, tmp_path):
    from gags_viewer.viewer.select_command import save_edited

    field, mask = demo_selection
    edited = delete(field, mask)
    path = save_edited(edited, tmp_path / "edited", "native", DEMO_FIELD)
    reloaded = load_field(path)
    camera = demo_camera()
    for backend in ("torch", "auto"):
        a = render(edited, camera, rgb=True, features=edited.features, backend=backend)
        b = render(reloaded, camera, rgb=True, features=reloaded.features, backend=backend)
        assert torch.equal(a.rgb, b.rgb) and torch.equal(a.features, b.features) and torch.equal(a.alpha, b.alpha)
    # Deleting the cube changed the picture where the cube was seen.
    whole = render(field, camera, rgb=True, backend="torch")
    assert not torch.equal(whole.rgb, render(edited, camera, rgb=True, backend="torch").rgb)
