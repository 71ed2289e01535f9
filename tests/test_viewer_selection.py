"""The viewer's 3D selection on the demo field: shown alone / hidden / tinted in every display mode,
following the text and threshold live; and edits (delete, keep only, undo, redo, save)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gags_viewer.demo import DEMO_FIELD
from gags_viewer.errors import GagsError
from gags_viewer.field.edit import delete, keep_only
from gags_viewer.field.load import load_field
from gags_viewer.render.api import render
from gags_viewer.viewer.editing import FieldEditor
from gags_viewer.viewer.frame import FrameSource, to_uint8
from gags_viewer.viewer.settings import DISPLAY_MODES, ViewSettings
from tests.test_select_command import demo_camera

pytestmark = pytest.mark.skipif(not (DEMO_FIELD / "field.json").is_file(), reason="demo field not built")
BACKEND = "torch"


@pytest.fixture()
def source():
    from gags_viewer.viewer.commands import build_engine

    field = load_field(DEMO_FIELD)
    return FrameSource(field, build_engine(field, DEMO_FIELD, torch.device("cpu")), backend=BACKEND)


def settings(**changes) -> ViewSettings:
    base = dict(queries_text="red cube", display="rgb", background=(0, 0, 0), selection_show="alone")
    base.update(changes)
    return ViewSettings(**base).checked()


def rgb_of(field, camera):
    return to_uint8(render(field, camera, rgb=True, background=(0.0, 0.0, 0.0), backend=BACKEND).rgb)


def test_alone_and_hidden_render_the_selection_and_the_rest(source):
    camera = demo_camera()
    mask = source.selections.select(source.engine, settings()).mask
    assert 0 < int(mask.sum()) < source.field.num_gaussians
    alone = source.compose(camera, settings(selection_show="alone")).image
    hidden = source.compose(camera, settings(selection_show="hidden")).image
    # A transparent Gaussian renders as if it were not there (at most one 8-bit level of rounding).
    assert np.abs(alone.astype(int) - rgb_of(keep_only(source.field, mask), camera).astype(int)).max() <= 1
    assert np.abs(hidden.astype(int) - rgb_of(delete(source.field, mask), camera).astype(int)).max() <= 1
    frame = source.compose(camera, settings(selection_show="alone"))
    assert any("selection alone" in note for note in frame.legend.notes)


def test_tint_changes_only_the_selection(source):
    camera = demo_camera()
    plain = source.compose(camera, settings(selection_show="off")).image.astype(int)
    tinted = source.compose(camera, settings(selection_show="tinted", colors={"red cube": (0, 255, 0)})).image.astype(
        int
    )
    cube = rgb_of(keep_only(source.field, source.selections.select(source.engine, settings()).mask), camera).sum(-1) > 0
    changed = np.abs(tinted - plain).sum(-1) > 12
    assert changed[cube].mean() > 0.5
    assert changed[~cube].mean() < 0.02
    assert (tinted[changed][:, 1] > plain[changed][:, 1]).mean() > 0.9, "tinted towards the query's green"


@pytest.mark.parametrize("display", DISPLAY_MODES)
def test_every_display_mode_shows_the_selection(source, display):
    camera = demo_camera(64, 48)
    green = {"red cube": (0, 255, 0)}
    frames = {
        show: source.compose(camera, settings(display=display, selection_show=show, colors=green)).image.astype(int)
        for show in ("off", "tinted", "alone", "hidden")
    }
    for show in ("tinted", "alone", "hidden"):
        assert frames[show].shape == frames["off"].shape
        assert not np.array_equal(frames[show], frames["off"]), f"'{show}' shows nothing in {display} mode"
    # The tint blends in only where the selected Gaussians are seen: where they cover under
    # 0.5 / (255 · strength) of a pixel, the blend moves it by under half a level (one after rounding).
    from gags_viewer.viewer.selection_view import TINT_STRENGTH

    mask = source.selections.select(source.engine, settings()).mask
    seen = render(keep_only(source.field, mask), camera, rgb=False, backend=BACKEND).alpha.numpy()
    unseen = seen < 0.5 / (255.0 * TINT_STRENGTH)
    assert unseen.any() and (~unseen).any()
    assert np.abs(frames["tinted"] - frames["off"])[unseen].max() <= 1
    # Tinted towards pure green: no pixel loses green or gains red or blue (beyond one level of rounding).
    change = frames["tinted"] - frames["off"]
    assert change[..., 1].min() >= -1 and change[..., 0].max() <= 1 and change[..., 2].max() <= 1
    assert change[..., 1].max() > 12


def test_selection_follows_text_and_threshold(source):
    select = source.selections.select
    default = select(source.engine, settings()).mask
    counts = [int(select(source.engine, settings(selection_threshold=t)).mask.sum()) for t in (0.0, 0.4, 0.9, 0.99)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert counts[1] == int(default.sum())
    from_box = select(source.engine, settings(selection_text="green ball")).mask
    assert not torch.equal(from_box, default), "a non-empty selection box overrides the queries"
    both = select(source.engine, settings(queries_text="red cube; green ball")).mask
    assert torch.equal(both, default | from_box)
    lamp = select(source.engine, settings(selection_text="lamp")).mask
    no_shade = select(source.engine, settings(selection_text="lamp; -lamp shade")).mask
    assert int(no_shade.sum()) < int(lamp.sum()) and not (no_shade & ~lamp).any()


def test_delete_undo_redo_and_save(source, tmp_path):
    editor = FieldEditor(source, field_dir=DEMO_FIELD)
    original_field, original_engine = source.field, source.engine
    n = original_field.num_gaussians
    camera = demo_camera()
    deleted = editor.edit("delete", settings(selection_show="off"))
    assert source.field is deleted.field and source.engine is deleted.engine
    assert source.engine.field is source.field and source.field.num_gaussians < n
    assert original_field.num_gaussians == n, "the loaded field is never changed"
    image = source.compose(camera, settings(selection_show="off")).image
    assert np.array_equal(image, rgb_of(deleted.field, camera))

    assert editor.undo().field is original_field and source.engine is original_engine
    assert editor.redo().field is deleted.field
    with pytest.raises(GagsError, match="nothing to redo"):
        editor.redo()

    path = editor.save(tmp_path / "edited")
    reloaded = load_field(path)
    assert torch.equal(reloaded.means, deleted.field.means) and reloaded.decoder is not None
    assert "'red cube' by the official GAGS 3D query" in reloaded.metadata.source, "the saved field names the rule"
    assert np.array_equal(rgb_of(reloaded, camera), image)
    ply = editor.save(tmp_path / "plain", "ply")
    plain = load_field(ply)
    assert plain.features is None and plain.num_gaussians == deleted.field.num_gaussians
    assert np.array_equal(rgb_of(plain, camera), image), "the Inria PLY renders the same"

    kept = editor.edit("keep", settings(selection_text="green ball", selection_show="off"))
    assert kept.field.num_gaussians < deleted.field.num_gaussians
    with pytest.raises(GagsError, match="selects no Gaussian"):
        editor.edit("delete", settings(selection_text="red cube", selection_threshold=1.0))
