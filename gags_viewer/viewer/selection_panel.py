"""The "Select & edit" panel of one browser: the 3D selection, how it is shown, and the field edits.

The selection follows the query box (or its own box, where ``-phrase`` subtracts) and its threshold
live; it is the official GAGS per-Gaussian query (:mod:`gags_viewer.language.selection`). Edits (delete,
keep only, undo, redo) change the field every browser sees (:class:`~gags_viewer.viewer.editing.FieldEditor`);
saving writes the shown field under the output directory. Slow work runs on a thread and reports
through notifications.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import viser

from gags_viewer.errors import GagsError
from gags_viewer.viewer import export_actions
from gags_viewer.viewer.session import ClientSession
from gags_viewer.viewer.settings import SELECTION_SHOWS

log = logging.getLogger(__name__)

SHOW_LABELS = {"off": "Not marked", "tinted": "Tinted", "alone": "Alone", "hidden": "Hidden"}
_LABEL_TO_SHOW = {label: show for show, label in SHOW_LABELS.items()}
SAVE_FORMATS = ("native field", "Inria PLY")


class SelectionPanel:
    """The selection and editing controls of one browser (built inside ``client.gui``)."""

    def __init__(
        self,
        client: viser.ClientHandle,
        session: ClientSession,
        viewer: export_actions.ExportHost,
        file_name: Callable[[], str],
        order: float = 1.5,
    ):
        self.client = client
        self.session = session
        self.viewer = viewer
        self.app = viewer.app
        self._file_name = file_name
        self._busy = threading.Lock()
        settings = session.settings
        gui = client.gui
        enabled = self.app.field.has_language
        with gui.add_folder("Select & edit", order=order, expand_by_default=False):
            self.text = gui.add_text(
                "Selection",
                settings.selection_text,
                disabled=not enabled,
                hint="Phrases separated by ';'; a '-' prefix subtracts (table; -mug). Empty: the queries above.",
            )
            self.threshold = gui.add_slider(
                "Sel. threshold",
                0.0,
                1.0,
                0.01,
                settings.selection_threshold,
                disabled=not enabled,
                hint="Official GAGS 3D query: min-max normalised relevancy per Gaussian above this (0.4 in GAGS).",
            )
            self.radius = gui.add_number(
                "Vote radius",
                settings.selection_radius,
                min=0.0,
                step=0.005,
                disabled=not enabled,
                hint="Neighbours within this distance vote (fill > 20, clear < 10); 0.05 in GAGS, in scene units.",
            )
            self.show = gui.add_dropdown(
                "Show",
                [SHOW_LABELS[s] for s in SELECTION_SHOWS],
                initial_value=SHOW_LABELS[settings.selection_show],
                disabled=not enabled,
                hint="Mark the selected Gaussians in every display mode.",
            )
            self.count = gui.add_markdown("")
            self.delete_button = gui.add_button("Delete selection", icon=viser.Icon.TRASH, disabled=not enabled)
            self.keep_button = gui.add_button("Keep only selection", icon=viser.Icon.FILTER, disabled=not enabled)
            self.undo_button = gui.add_button(
                "Undo",
                icon=viser.Icon.ARROW_BACK_UP,
                disabled=not enabled,
                hint="Edits are shared by every browser, and so is undo.",
            )
            self.redo_button = gui.add_button("Redo", icon=viser.Icon.ARROW_FORWARD_UP, disabled=not enabled)
            self.save_format = gui.add_dropdown("Save as", SAVE_FORMATS, initial_value=SAVE_FORMATS[0])
            self.save_button = gui.add_button(
                "Save field",
                icon=viser.Icon.DEVICE_FLOPPY,
                hint="Write the shown (edited) field under the output directory: a native field directory "
                "(opens in gags-viewer view) or a plain Inria PLY (downloaded).",
            )
        self._wire()

    # -- settings --------------------------------------------------------------------------------------

    def _apply(self, **changes) -> None:
        try:
            self.session.update(**changes)
        except GagsError as exc:
            self.session.notify("Invalid setting", str(exc), color="yellow")
            return
        self.refresh_count()

    def _wire(self) -> None:
        @self.text.on_update
        def _(_) -> None:
            self._apply(selection_text=self.text.value)

        @self.threshold.on_update
        def _(_) -> None:
            self._apply(selection_threshold=float(self.threshold.value))

        @self.radius.on_update
        def _(_) -> None:
            self._apply(selection_radius=float(self.radius.value))

        @self.show.on_update
        def _(_) -> None:
            self._apply(selection_show=_LABEL_TO_SHOW.get(self.show.value, "off"))

        for button, action in (
            (self.delete_button, "delete"),
            (self.keep_button, "keep"),
            (self.undo_button, "undo"),
            (self.redo_button, "redo"),
            (self.save_button, "save"),
        ):
            self._wire_button(button, action)

    def _wire_button(self, button, action: str) -> None:
        @button.on_click
        def _(_) -> None:
            self._run(action)

    # -- background work ---------------------------------------------------------------------------------

    def refresh_count(self) -> None:
        """Recompute "N of M selected" in the background (the selection of the current settings)."""
        threading.Thread(target=self._count, name="gags-selection-count", daemon=True).start()

    def _count(self) -> None:
        settings = self.session.settings
        engine = self.app.engine
        try:
            if engine is None or not settings.selection_source.strip():
                self.count.content = "Type a query to select Gaussians."
                return
            selection = self.app.selections.select(engine, settings)
            self.count.content = (
                f"**{selection.count:,}** of {engine.field.num_gaussians:,} Gaussians selected "
                f"({', '.join(('-' if t.subtract else '') + t.phrase for t in selection.terms)})"
            )
        except Exception as exc:  # noqa: BLE001 - a label must not break the panel
            self.count.content = f"Selection failed: {exc}"

    def _run(self, action: str) -> None:
        if not self._busy.acquire(blocking=False):
            self.session.notify("Busy", "Wait for the current edit to finish.", color="yellow")
            return
        threading.Thread(target=self._act, args=(action,), name=f"gags-edit-{action}", daemon=True).start()

    def _act(self, action: str) -> None:
        editor = self.app.editor
        try:
            if action == "save":
                fmt = "ply" if self.save_format.value == SAVE_FORMATS[1] else "native"
                path = export_actions.save_edited_field(self.viewer, self.session, fmt, self._file_name())
                message = f"Saved {editor.current.field.num_gaussians:,} Gaussians to {path}"
            else:
                if action in ("delete", "keep"):
                    state = editor.edit(action, self.session.settings)
                else:
                    state = editor.undo() if action == "undo" else editor.redo()
                message = f"{state.description}: {state.field.num_gaussians:,} Gaussians shown"
            self.session.notify("Done" if action == "save" else "Edited", message, color="green")
        except GagsError as exc:
            self.session.notify("Edit failed", str(exc), color="red")
        except Exception as exc:  # noqa: BLE001 - an edit failure must not take the server down
            log.exception("edit failed")
            self.session.notify("Edit failed", f"{type(exc).__name__}: {exc}", color="red")
        finally:
            self._busy.release()
        self.refresh_count()
