"""The demo's small CLIP model: an open_clip architecture trained on the demo scene's masked crops.

Real CLIP weights cannot be downloaded where the demo must work (no network), so the demo carries its
own model. It is a standard open_clip ``CLIP`` built from a small custom config (a 3-layer ViT on 48-px
inputs and a 3-layer text transformer, both projecting to 512-D like ViT-B-16) and is loaded through
open_clip's own path: ``add_model_config(<config json>)`` then
``create_model(<name>, pretrained=<safetensors file>)``. It knows only the demo's vocabulary
(:func:`vocabulary`); it is **not** a general CLIP model.

Training (:func:`train_demo_clip`) is contrastive on masked, zero-padded square crops of the scene's
renders (the same crops the preprocessing makes, gags-method.md §2.7), with captions from templates over
the vocabulary. Every crop shows one region (a part, an object, the tower group, or the background);
a phrase is

- a **positive** for a crop when it names the region or a region that encloses it ("lamp" for a crop of
  the lamp shade, "tower" for a crop of the red cube),
- **ignored** when it names something inside the region (a crop of the whole lamp against "lamp shade"),
- a **negative** otherwise.

Three losses: image -> text and text -> image softmax contrast with several positives, and a relevancy
loss that trains exactly what the query engine computes: for positives
``min_j softmax(10 s_phrase, 10 s_neg_j)`` should be high against the default negatives ("object",
"things", "stuff", "texture"), for negatives low. So the default negatives behave: they sit between what
a crop is and what it is not.

The token embedding table (49408 x 64) stays at its seeded random initialisation (only the rows of the
vocabulary's tokens matter; random rows are distinct) and the weights are stored in fp16, which keeps
the file under 10 MB.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gags_viewer.demo.scene import CATALOG, NODE_INDEX
from gags_viewer.field.language_field import DEFAULT_NEGATIVES, ClipSpec

DEMO_CLIP_NAME = "gags-demo-clip"
"""The model's name: the stem of its config and checkpoint files."""
REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = REPO_ROOT / "assets" / "demo_clip"
CONFIG_FILE = f"{DEMO_CLIP_NAME}.json"
CHECKPOINT_FILE = f"{DEMO_CLIP_NAME}.safetensors"
VOCABULARY_FILE = f"{DEMO_CLIP_NAME}.vocabulary.json"
"""The phrases the model was trained on (see :mod:`gags_viewer.language.vocabulary`)."""
TEMPERATURE = 10.0
"""The LERF relevancy temperature the query engine uses."""

DEMO_CLIP_CONFIG = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 48, "layers": 3, "width": 128, "head_width": 32, "mlp_ratio": 2.0, "patch_size": 8},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3, "mlp_ratio": 4.0},
}
"""open_clip model config of the demo model (image tower: 48-px input, 8-px patches; text: 20 tokens)."""

TEMPLATES = (
    "{}",
    "a {}",
    "the {}",
    "a photo of a {}",
    "a photo of the {}",
    "a picture of a {}",
    "an image of the {}",
    "a rendering of a {}",
    "a {} on a table",
    "this is a {}",
    "a close-up of the {}",
    "there is a {}",
)
"""Caption templates; the bare phrase (first) is drawn half of the time, since queries are typed bare."""

COLOUR_TEMPLATES = ("{}", "{} object", "{} thing", "something {}", "the {} one", "{} part")


# ------------------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Phrase:
    """A phrase of the vocabulary and the regions (node ids) it names."""

    text: str
    refers: frozenset


def vocabulary() -> list[Phrase]:
    """Every phrase the demo model is trained on: region names and colour phrases (see README)."""
    phrases: dict[str, set] = {}
    for index, node in enumerate(CATALOG):
        for name in node.names:
            phrases.setdefault(name, set()).add(index)
    colours = sorted({node.colour for node in CATALOG if node.colour})
    for colour in colours:
        ids = {i for i, node in enumerate(CATALOG) if node.colour == colour}
        for template in COLOUR_TEMPLATES:
            phrases.setdefault(template.format(colour), set()).update(ids)
    return [Phrase(text, frozenset(ids)) for text, ids in phrases.items()]


def _ancestor_ids(index: int) -> set:
    out, node = {index}, CATALOG[index]
    while node.parent is not None:
        index = NODE_INDEX[node.parent]
        out.add(index)
        node = CATALOG[index]
    return out


def _descendant_ids(index: int) -> set:
    return {i for i in range(len(CATALOG)) if index in _ancestor_ids(i) and i != index}


def target_matrix(phrases: Sequence[Phrase]) -> Tensor:
    """Targets of every (region, phrase) pair: 1 positive, 0 negative, -1 ignored. [len(CATALOG), P] int8"""
    targets = torch.zeros(len(CATALOG), len(phrases), dtype=torch.int8)
    for node in range(len(CATALOG)):
        up, down = _ancestor_ids(node), _descendant_ids(node)
        for j, phrase in enumerate(phrases):
            if phrase.refers & up:
                targets[node, j] = 1
            elif phrase.refers & down:
                targets[node, j] = -1
    return targets


# -------------------------------------------------------------------------------------- model I/O


def write_config(folder: str | Path = ASSETS_DIR) -> Path:
    """Write the model config JSON into ``folder``. -> its path"""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    path.write_text(json.dumps(DEMO_CLIP_CONFIG, indent=2) + "\n", encoding="utf-8")
    return path


def clip_spec(folder: str | Path = ASSETS_DIR, relative_to: str | Path | None = None) -> ClipSpec:
    """The :class:`ClipSpec` of the demo model in ``folder``.

    With ``relative_to`` (the field directory that will refer to the model), a model inside the project
    (the bundled ``assets/demo_clip``) is named by a bundled reference (``gags-viewer:assets/...``), so a
    copied field still finds it; a model elsewhere by a path relative to ``relative_to``.
    """
    import os

    from gags_viewer.language.clip_weights import bundled_reference

    config, checkpoint = Path(folder) / CONFIG_FILE, Path(folder) / CHECKPOINT_FILE
    if relative_to is not None:
        bundled = bundled_reference(config), bundled_reference(checkpoint)
        if None not in bundled:
            return ClipSpec(model=DEMO_CLIP_NAME, pretrained=None, config_file=bundled[0], checkpoint_file=bundled[1])
        config = Path(os.path.relpath(config, relative_to))
        checkpoint = Path(os.path.relpath(checkpoint, relative_to))
    return ClipSpec(model=DEMO_CLIP_NAME, pretrained=None, config_file=str(config), checkpoint_file=str(checkpoint))


def build_model(seed: int = 0):
    """A freshly initialised demo model (random weights from ``seed``), through open_clip's factory."""
    import open_clip

    from gags_viewer.language.clip_text import register_config

    with tempfile.TemporaryDirectory(prefix="gags_demo_clip_") as folder:
        name = register_config(write_config(folder))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
    return model, name


def save_model(model, folder: str | Path = ASSETS_DIR) -> tuple[Path, Path]:
    """Write config JSON, fp16 safetensors weights, README and vocabulary file into ``folder`` (atomically)."""
    from safetensors.torch import save

    from gags_viewer.fsutil import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    config = write_config(folder)
    atomic_write_text(folder / "README.md", vocabulary_markdown())
    write_vocabulary(folder)
    state = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in model.state_dict().items()}
    checkpoint = folder / CHECKPOINT_FILE
    atomic_write_bytes(checkpoint, save(state, metadata={"format": "pt"}))
    return config, checkpoint


def write_vocabulary(folder: str | Path = ASSETS_DIR) -> Path:
    """Write the vocabulary file next to the model config (read by the viewer to warn about phrases the
    model never saw). -> its path"""
    from gags_viewer.fsutil import atomic_write_text
    from gags_viewer.language.vocabulary import vocabulary_json

    path = Path(folder) / VOCABULARY_FILE
    atomic_write_text(path, vocabulary_json([p.text for p in vocabulary()], "the demo CLIP model"))
    return path


def load_model(folder: str | Path = ASSETS_DIR):
    """The saved demo model, loaded through open_clip (config registered, ``pretrained=<file>``), eval mode."""
    from gags_viewer.preprocess.clip_features import load_clip_model

    return load_clip_model(clip_spec(folder))


# -------------------------------------------------------------------------------------- training


@dataclass
class ClipTrainConfig:
    """Settings of the demo model's training."""

    steps: int = 1500
    """Optimiser steps."""
    batch_size: int = 64
    """Crops per step (drawn region-balanced: every region equally often)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay)."""
    weight_decay: float = 0.05
    warmup: int = 100
    relevancy_weight: float = 1.0
    """Weight of the relevancy loss against the default negatives."""
    seed: int = 0


def _augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Flips, ±4 px shifts and ±10 % brightness of a batch of crops in [0, 1]. [B, 3, S, S]"""
    b, _, s, _ = images.shape
    flip = torch.rand(b, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = F.pad(images, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (b,), generator=generator)
    dy = torch.randint(0, 9, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(s)[None]).clamp(max=s + 7)
    cols = (dx[:, None] + torch.arange(s)[None]).clamp(max=s + 7)
    shifted = padded[
        torch.arange(b)[:, None, None, None],
        torch.arange(3)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    gain = 0.9 + 0.2 * torch.rand(b, 1, 1, 1, generator=generator)
    return (shifted * gain).clamp(0, 1)


def _multi_positive_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows with a positive of -log(sum of softmax over positives); ignored entries (-1) are
    left out of the softmax. logits, targets: [R, C]"""
    masked = logits.masked_fill(targets < 0, float("-inf"))
    positives = masked.masked_fill(targets != 1, float("-inf"))
    has = (targets == 1).any(dim=1)
    if not has.any():
        return logits.sum() * 0.0
    return (torch.logsumexp(masked[has], dim=1) - torch.logsumexp(positives[has], dim=1)).mean()


def train_demo_clip(
    crops: Tensor,
    regions: Tensor,
    config: ClipTrainConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
):
    """Train the demo model on crops of the scene.

    Args:
        crops: masked square crops at the model's input size, uint8. [M, 3, 48, 48]
        regions: the region (node id of :data:`CATALOG`) each crop shows. [M] int64
        config: training settings.
        progress: show a progress bar.
        log: receives a one-line summary at the end.

    Returns:
        The trained open_clip model (eval mode).
    """
    import open_clip
    from tqdm.auto import tqdm

    from gags_viewer.preprocess.clip_features import preprocess_config

    config = config or ClipTrainConfig()
    model, name = build_model(config.seed)
    tokenizer = open_clip.get_tokenizer(name)
    model.token_embedding.requires_grad_(False)
    size, mean, std = preprocess_config(model)
    if crops.shape[-1] != size:
        raise ValueError(f"crops must be {size}x{size}, got {list(crops.shape)}")

    phrases = vocabulary()
    targets_all = target_matrix(phrases)  # [nodes, P]
    negatives = list(DEFAULT_NEGATIVES)
    negative_tokens = tokenizer(negatives)
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    present = sorted(set(regions.tolist()))
    by_region = {r: (regions == r).nonzero().squeeze(1) for r in present}

    decay, no_decay = [], []
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "embedding" in pname or "logit" in pname else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress_ = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress_))

    model.train()
    started = time.perf_counter()
    bar = tqdm(range(config.steps), desc="training the demo CLIP", unit="step", disable=not progress, mininterval=1.0)
    history = []
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        chosen = [rng.choice(present) for _ in range(config.batch_size)]
        index = torch.stack(
            [by_region[r][torch.randint(len(by_region[r]), (1,), generator=generator)[0]] for r in chosen]
        )
        images = _augment(crops[index].float() / 255.0, generator)
        images = (images - mean[None, :, None, None]) / std[None, :, None, None]
        captions = [(TEMPLATES[0] if rng.random() < 0.5 else rng.choice(TEMPLATES)).format(p.text) for p in phrases]
        tokens = torch.cat([tokenizer(captions), negative_tokens])
        image_emb = F.normalize(model.encode_image(images), dim=-1)
        text_emb = F.normalize(model.encode_text(tokens), dim=-1)
        sims = image_emb @ text_emb.T  # [B, P + 4]
        phrase_sims, negative_sims = sims[:, : len(phrases)], sims[:, len(phrases) :]
        targets = targets_all[torch.tensor(chosen)].long()  # [B, P]
        scale = model.logit_scale.exp().clamp(max=100.0)
        loss_i2t = _multi_positive_nll(scale * phrase_sims, targets)
        loss_t2i = _multi_positive_nll(scale * phrase_sims.T, targets.T)
        relevancy_logit = TEMPERATURE * (phrase_sims - negative_sims.max(dim=1, keepdim=True).values)
        known = targets >= 0
        weights = torch.where(targets == 1, 4.0, 1.0)[known]
        loss_rel = F.binary_cross_entropy_with_logits(relevancy_logit[known], targets[known].float(), weight=weights)
        loss = 0.5 * (loss_i2t + loss_t2i) + config.relevancy_weight * loss_rel
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append((loss_i2t.item(), loss_t2i.item(), loss_rel.item()))
        if step % 20 == 0 or step == config.steps - 1:
            recent = np.mean(history[-20:], axis=0)
            bar.set_postfix(i2t=f"{recent[0]:.3f}", t2i=f"{recent[1]:.3f}", rel=f"{recent[2]:.3f}", refresh=False)
    bar.close()
    model.eval()
    if log is not None:
        recent = np.mean(history[-50:], axis=0)
        log(
            f"demo CLIP: {config.steps} steps in {time.perf_counter() - started:.0f} s, final losses "
            f"i2t {recent[0]:.3f}, t2i {recent[1]:.3f}, relevancy {recent[2]:.3f}"
        )
    return model


def relevancy_table(
    model, crops: Tensor, regions: Tensor, phrases: Sequence[str], negatives: Sequence[str] = DEFAULT_NEGATIVES
) -> Tensor:
    """Mean LERF relevancy of each phrase on the crops of each region (a sanity check of the model).

    Returns:
        [len(CATALOG), len(phrases)] (NaN for regions without crops)
    """
    import open_clip

    from gags_viewer.preprocess.clip_features import ClipImageEncoder

    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=DEMO_CLIP_CONFIG["text_cfg"]["context_length"])
    encoder = ClipImageEncoder(model)
    with torch.no_grad():
        image = encoder.encode_crops(crops.float() / 255.0)
        text = F.normalize(model.encode_text(tokenizer(list(phrases) + list(negatives))).float(), dim=-1)
    sims = image @ text.T
    k = len(phrases)
    rel = torch.sigmoid(TEMPERATURE * (sims[:, :k] - sims[:, k:].max(dim=1, keepdim=True).values))
    table = torch.full((len(CATALOG), k), float("nan"))
    for region in torch.unique(regions):
        table[region] = rel[regions == region].mean(dim=0)
    return table


def vocabulary_markdown() -> str:
    """The README of ``assets/demo_clip/``: what the model is and the vocabulary it knows."""
    lines = [
        "# The demo CLIP model (not a general CLIP)",
        "",
        f"`{CONFIG_FILE}` (open_clip model config) and `{CHECKPOINT_FILE}` (fp16 weights) are a small",
        "open_clip `CLIP` model that the project trains on its own synthetic demo scene, so that the bundled",
        "demo (`scenes/demo/`) answers text queries offline, without downloading real CLIP weights. It was made",
        "by `python -m gags_viewer.demo.build` (seed 0) and is loaded like any open_clip model:",
        "",
        "```python",
        "import open_clip",
        f"open_clip.add_model_config('assets/demo_clip/{CONFIG_FILE}')",
        f"model = open_clip.create_model('{DEMO_CLIP_NAME}', pretrained='assets/demo_clip/{CHECKPOINT_FILE}')",
        f"tokenizer = open_clip.get_tokenizer('{DEMO_CLIP_NAME}')",
        "```",
        "",
        "Architecture: image tower a 3-layer ViT (width 128, 8-px patches) on 48x48 inputs; text tower a",
        "3-layer transformer (width 64, 20 tokens, the standard CLIP BPE vocabulary); both project to 512-D,",
        "like ViT-B-16, so the demo's `_f.npy` files have the official width. It was trained contrastively on",
        "masked, zero-padded square crops of the demo scene's renders, with captions from templates",
        "(" + ", ".join(f'"{t}"' for t in TEMPLATES[1:5]) + ", ...) over the phrases below, and a relevancy loss",
        "against the default negatives (" + ", ".join(DEFAULT_NEGATIVES) + ").",
        "",
        "It knows **only** these phrases (any other text gives arbitrary results):",
        "",
        "| region | level | phrases |",
        "|---|---|---|",
    ]
    for node in CATALOG:
        lines.append(f"| {node.name} | {node.kind} | " + ", ".join(f'"{n}"' for n in node.names) + " |")
    colours = sorted({node.colour for node in CATALOG if node.colour})
    lines += [
        "",
        "Colour phrases, for the region of that colour: "
        + ", ".join(f'"{c}"' for c in colours)
        + ", each also as "
        + ", ".join(f'"{t.format("red")}"' for t in COLOUR_TEMPLATES[1:])
        + " and so on.",
        "",
        'A phrase matches its region and every part of it ("lamp" matches the shade and the base, "tower"',
        "matches the red cube, the blue cylinder and the yellow cone).",
        "",
    ]
    return "\n".join(lines)
