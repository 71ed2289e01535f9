"""The ``gags-viewer`` command: tyro subcommands, friendly one-line errors, nothing else."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import tyro
from tyro.conf import Positional

from gags_viewer.errors import GagsError
from gags_viewer.eval.runner import EvalConfig
from gags_viewer.preprocess.run import PreprocessConfig
from gags_viewer.train.config import TrainConfig
from gags_viewer.viewer.commands import demo, train_view, view
from gags_viewer.viewer.render_command import render
from gags_viewer.viewer.select_command import select


def info(field: Positional[Path], iteration: int | None = None, autoencoder: Path | None = None) -> None:
    """Print a summary of a field: Gaussians, SH degree, language features, decoders, CLIP model.

    Args:
        field: a field directory (native, official GAGS or LangSplat output), an Inria .ply or a .splat file.
        iteration: for an official GAGS or LangSplat output directory, the iteration to read (default: latest).
        autoencoder: for a LangSplat output, its autoencoder checkpoint (default: found where LangSplat writes it).
    """
    from gags_viewer.field.load import load_field

    loaded = load_field(field, iteration=iteration, autoencoder=autoencoder)
    low, high = loaded.bounds()
    meta = loaded.metadata
    print(f"field      {field}")
    print(f"source     {meta.source}")
    print(f"gaussians  {loaded.num_gaussians:,}  (SH degree {loaded.sh_degree})")
    print(f"bounds     {[round(v, 3) for v in low.tolist()]} .. {[round(v, 3) for v in high.tolist()]}")
    if loaded.has_language:
        clip = meta.clip.checkpoint_file or f"{meta.clip.model} / {meta.clip.pretrained}"
        print(
            f"language   {loaded.feature_dim}-D features, decoder: {meta.decoder_kind or 'none'}, "
            f"granularity decoder: {'yes' if loaded.granularity_decoder else 'no'}"
        )
        if loaded.level_count > 1:
            print(
                f"levels     {', '.join(meta.levels)} ({loaded.level_dim}-D each; "
                "each query keeps one level per image, by LangSplat's rule)"
            )
        print(f"clip       {clip}")
        print(f"negatives  {', '.join(meta.negatives)}")
    else:
        print("language   none (RGB only)")


def evaluate(config: Annotated[EvalConfig, tyro.conf.arg(name="")]) -> None:
    """Run the LERF-OVS evaluation protocol (mIoU, localization accuracy) on one scene."""
    from gags_viewer.eval.runner import run_eval

    run_eval(config)


def train(config: tyro.conf.OmitArgPrefixes[TrainConfig]) -> None:
    """Distill a GAGS language field from a preprocessed scene (headless, with a progress bar)."""
    from gags_viewer.train.run import run_training

    run_training(config)


def preprocess(config: tyro.conf.OmitArgPrefixes[PreprocessConfig]) -> None:
    """Granularity-aware SAM masks and CLIP features per image: photos + COLMAP + trained 3DGS -> language_features/."""
    from gags_viewer.preprocess.run import preprocess_scene

    report = preprocess_scene(config)
    print(
        f"preprocessed {len(report.images)} image(s) into {config.scene / 'language_features'}: "
        f"masks per level {report.masks_per_level}"
    )


SUBCOMMANDS = {
    "view": view,
    "demo": demo,
    "render": render,
    "preprocess": preprocess,
    "train": train,
    "train-view": train_view,
    "eval": evaluate,
    "select": select,
    "info": info,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; user mistakes print one line and exit with status 2."""
    try:
        tyro.extras.subcommand_cli_from_dict(SUBCOMMANDS, prog="gags-viewer", args=argv)
    except GagsError as exc:
        print(f"gags-viewer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gags-viewer: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())


if __name__ == "__main__":
    run()
