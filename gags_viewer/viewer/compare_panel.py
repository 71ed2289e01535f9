"""The "Compare" panel of one browser (``gags-viewer view A B``): which field is which, the layout, the
split column. It writes the browser's ``compare_layout`` / ``compare_split`` settings
(:mod:`gags_viewer.viewer.compare` reads them)."""

from __future__ import annotations

from gags_viewer.viewer.compare import LAYOUT_LABELS
from gags_viewer.viewer.session import ClientSession

_LABEL_TO_LAYOUT = {label: layout for layout, label in LAYOUT_LABELS.items()}


def add_compare_panel(client, session: ClientSession, labels: tuple[str, str], order: float = 1.5) -> dict:
    """Build the panel on ``client.gui``; returns its handles ("layout", "split")."""
    gui = client.gui
    settings = session.settings
    with gui.add_folder("Compare", order=order):
        gui.add_markdown(f"**A** (left) = `{labels[0]}`  \n**B** (right) = `{labels[1]}`")
        layout = gui.add_dropdown(
            "Layout",
            list(LAYOUT_LABELS.values()),
            initial_value=LAYOUT_LABELS[settings.compare_layout],
            hint="Side by side: each half shows the middle of the view. Split screen: A left of the split, "
            "B right of it, both at full size. A or B only: flip between them in place.",
        )
        split = gui.add_slider(
            "Split",
            0.0,
            1.0,
            0.01,
            float(settings.compare_split),
            visible=settings.compare_layout == "split",
            hint="Where the split screen changes from A to B (fraction of the width).",
        )

    @layout.on_update
    def _(_) -> None:
        chosen = _LABEL_TO_LAYOUT.get(layout.value)
        if chosen is not None:
            split.visible = chosen == "split"
            session.update(compare_layout=chosen)

    @split.on_update
    def _(_) -> None:
        session.update(compare_split=float(split.value))

    return {"layout": layout, "split": split}
