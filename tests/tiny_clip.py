"""A tiny open_clip model for tests: a config JSON plus random-weight safetensors checkpoint.

Tests load it through open_clip's real loading path (``add_model_config`` + ``create_model`` with
``pretrained=<file>``), so no real weights are ever downloaded. Building and saving takes well under
a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gags_viewer.field.language_field import ClipSpec

TINY_CLIP_NAME = "tiny-clip-test"


def tiny_clip_config(embed_dim: int = 512) -> dict:
    """The open_clip model config of the tiny model (text width 32, one layer; 32-px, one-layer ViT)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


def make_tiny_clip(
    tmp_dir: str | os.PathLike, embed_dim: int = 512, seed: int = 0, name: str = TINY_CLIP_NAME
) -> ClipSpec:
    """Write ``<name>.json`` and ``<name>.safetensors`` into ``tmp_dir``; return a ClipSpec for them.

    Args:
        tmp_dir: an existing directory (e.g. pytest's ``tmp_path``).
        embed_dim: CLIP embedding width E (512 matches the GAGS decoder output).
        seed: weights are random but deterministic per seed.
        name: model name; also the stem of both files.

    Returns:
        ClipSpec(model=name, pretrained=None, config_file=<json>, checkpoint_file=<safetensors>).
    """
    import open_clip
    from safetensors.torch import save_file

    folder = Path(tmp_dir)
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps(tiny_clip_config(embed_dim)))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    checkpoint_path = folder / f"{name}.safetensors"
    save_file(state, str(checkpoint_path))
    return ClipSpec(model=name, pretrained=None, config_file=str(config_path), checkpoint_file=str(checkpoint_path))
