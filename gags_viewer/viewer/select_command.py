"""The ``select`` subcommand: keep (or, with ``--invert``, delete) the Gaussians a query selects, headless.

``gags-viewer select FIELD --query "table; -mug" --out DIR`` writes the selected Gaussians as a native
field (language features, decoders and CLIP reference kept: it opens in ``view`` and can be queried) or,
with ``--format ply``, as a plain Inria 3DGS PLY. Selection is the official GAGS per-Gaussian query
(:mod:`gags_viewer.language.selection`) unless ``--rule viewer``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.viewer.commands import (
    ClipOptions,
    ClipOverrides,
    Device,
    FieldPath,
    build_engine,
    load_for_viewing,
    resolve_device,
)

SaveFormat = Literal["native", "ply"]
PLY_NAME = "point_cloud.ply"


def save_edited(
    field: LanguageField, out: Path, save_format: SaveFormat = "native", field_dir: Path | None = None
) -> Path:
    """Write an edited field: ``native`` as a field directory ``out`` (its CLIP reference made to point at
    the same files from ``out`` when they were relative to ``field_dir``), ``ply`` as ``out`` if it ends
    in .ply, else ``out/point_cloud.ply``, plain Inria (no language features). Returns the written path."""
    from gags_viewer.field.load import save_field
    from gags_viewer.field.ply import write_ply
    from gags_viewer.viewer.export import ensure_directory

    if save_format == "ply":
        path = out if out.suffix.lower() == ".ply" else out / PLY_NAME
        ensure_directory(path.parent)
        write_ply(dataclasses.replace(field, features=None, decoder=None, granularity_decoder=None), path)
        return path
    if save_format != "native":
        raise GagsError(f"unknown format '{save_format}'; choose native or ply")
    return save_field(rebased_clip(field, field_dir, out), out)


def rebased_clip(field: LanguageField, field_dir: Path | None, out: Path) -> LanguageField:
    """``field`` with the relative CLIP config / checkpoint paths of its metadata (relative to ``field_dir``)
    rewritten relative to ``out``, so the saved copy still finds its text model (bundled references,
    ``gags-viewer:...``, resolve anywhere and are kept)."""
    import os

    from gags_viewer.language.clip_weights import BUNDLED_PREFIX

    clip = field.metadata.clip
    if field_dir is None:
        return field
    changes = {}
    for name in ("config_file", "checkpoint_file"):
        value = getattr(clip, name)
        if value and not Path(value).is_absolute() and not value.startswith(BUNDLED_PREFIX):
            target = (Path(field_dir) / value).resolve()
            changes[name] = os.path.relpath(target, Path(out).resolve())
    if not changes:
        return field
    metadata = dataclasses.replace(field.metadata, clip=dataclasses.replace(clip, **changes))
    return dataclasses.replace(field, metadata=metadata)


def select(
    field: FieldPath,
    query: str,
    out: Path,
    invert: bool = False,
    rule: Literal["official", "viewer"] = "official",
    threshold: float | None = None,
    radius: float = 0.05,
    fill_above: int = 20,
    clear_below: int = 10,
    negatives: str | None = None,
    format: SaveFormat = "native",
    device: Device = "auto",
    iteration: int | None = None,
    clip: ClipOptions = ClipOverrides(),  # noqa: B008 - a frozen dataclass
    autoencoder: Path | None = None,
) -> None:
    """Select Gaussians by a text query and save them (or everything else, with --invert) as a new field.

    Args:
        field: a field with language features (native directory, official GAGS output, .ply with semantics).
        query: phrases separated by ';'; a '-' prefix subtracts ("table; -mug").
        out: output directory (native) or .ply path / directory (ply).
        invert: keep everything except the selection (delete it).
        rule: official (GAGS §4.7: normalised relevancy > 0.4 plus a radius vote) or viewer (raw relevancy
            of the viewer's gaussian mode above the threshold, no vote).
        threshold: official: on the normalised relevancy (default 0.4); viewer: on raw relevancy (default 0.5).
        radius: official rule: radius of the neighbour vote, in the field's world units.
        fill_above: official rule: more selected neighbours than this selects a Gaussian.
        clear_below: official rule: fewer selected neighbours than this clears it.
        negatives: negative phrases separated by ';' (default: the field's).
        format: native (a field directory: features, decoders, CLIP reference) or ply (plain Inria PLY).
        device: auto, cpu or cuda.
        iteration: for an official GAGS output directory, the iteration to read (default: latest).
        clip: the ``--clip-*`` overrides of the field's text model.
        autoencoder: for a LangSplat output, its autoencoder checkpoint (default: found where LangSplat
            writes it).
    """
    from gags_viewer.field.edit import delete, keep_only
    from gags_viewer.language.selection import GaussianSelector, OfficialRule
    from gags_viewer.viewer.settings import split_phrases

    dev = resolve_device(device)
    loaded = load_for_viewing(field, iteration, dev, autoencoder)
    engine = build_engine(loaded, field, dev, clip)
    if engine is None:
        raise GagsError(f"{field}: this field has no language features, so it cannot be selected by text")
    official = OfficialRule(
        threshold=0.4 if threshold is None else threshold, radius=radius, fill_above=fill_above, clear_below=clear_below
    )
    viewer_threshold = 0.5 if threshold is None else threshold
    negative_phrases = None if negatives is None else split_phrases(negatives)
    with torch.no_grad():
        selection = GaussianSelector(engine).select(
            query, negative_phrases, rule=rule, official=official, threshold=viewer_threshold
        )
    if selection.count == 0 and not invert:
        raise GagsError(
            f"'{query}' selects no Gaussian ({selection.description}); try another phrase or a lower --threshold"
        )
    edit = delete if invert else keep_only
    edited = edit(loaded, selection.mask, reason=f"'{query}' by the {selection.description}")
    field_dir = field if field.is_dir() else field.parent
    path = save_edited(edited.to("cpu"), out, format, field_dir)
    print(f"selected {selection.count:,} of {loaded.num_gaussians:,} Gaussians by the {selection.description}")
    print(f"wrote {edited.num_gaussians:,} Gaussians ({'complement' if invert else 'selection'}, {format}) to {path}")
