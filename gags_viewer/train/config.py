"""Settings of a distillation run (no torch import here, so the CLI can build its parser cheaply)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tyro.conf import Positional

from gags_viewer.errors import GagsError

SingleScale = Literal["s", "m", "l", "mix"]
LEVELS = ("s", "m", "l")


@dataclass
class TrainConfig:
    """Settings of a distillation run. Defaults are those of the official GAGS code (``GAD.sh``)."""

    scene: Positional[Path]
    """Preprocessed scene: sparse/0, images/, language_features/<stem>_f.npy and _s.npy."""
    init: Path
    """Pretrained 3DGS: Inria point_cloud.ply, an output directory or a gsplat checkpoint (.pt). Never modified."""
    out: Path
    """Output directory: resume/, field/ (native), point_cloud/iteration_<it>/ + decoder .pth files (official)."""
    iterations: int = 30_000
    """Total training iterations (one view each)."""
    resolution: int = 2
    """Render-resolution rule as the official -r: 1/2/4/8 divide the image size, -1 caps width at 1600, >8 is a width."""
    checkpoint_every: int = 15_000
    """Write a checkpoint every this many iterations (and always at the end); 0 = only at the end."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (bit-for-bit on CPU)."""
    seed: int = 0
    """Seed of the view order (Python random) and of the decoder initialisation (torch)."""
    variant: Literal["official", "paper"] = "official"
    """official: L1 to the α-mixed target + variance consistency on F16; paper: α-weighted per-level L2 +
    mean-deviation consistency (as summarised from the paper; not the released code)."""
    single_scale: SingleScale | None = None
    """Ablation: replace the learned granularity α by one level (s, m, l) or equal thirds (mix)."""
    feature_dim: int = 16
    """Per-Gaussian feature dimension."""
    decoder_width: int = 256
    """Hidden width of the CLIP decoder (official 256; smaller only for quick experiments and tests)."""
    feature_lr: float = 1e-3
    """Adam learning rate of the per-Gaussian features."""
    feature_adam_eps: float = 1e-15
    """Adam epsilon of the per-Gaussian features."""
    decoder_lr: float = 1e-4
    """Adam learning rate of each decoder (CLIP and granularity)."""
    entropy_weight: float = 0.001
    """Weight of the granularity entropy before ``switch_iteration``."""
    entropy_weight_late: float = 0.002
    """Weight of the granularity entropy from ``switch_iteration`` on."""
    consistency_weight: float = 0.0
    """Weight of the region-consistency term before ``switch_iteration``."""
    consistency_weight_late: float = 0.1
    """Weight of the region-consistency term from ``switch_iteration`` on."""
    switch_iteration: int = 15_001
    """First (1-based) iteration that uses the late weights."""
    region_smoothing: int = 5
    """Box-filter size applied to α before the per-pixel argmax that picks each pixel's region."""
    center_principal_point: bool = True
    """Principal point at the image centre, as the official renderer; False uses COLMAP's cx, cy."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA (gsplat) when available, else CPU (torch backend)."""
    region_loss: Literal["vectorised", "loop"] = "vectorised"
    """Region reductions: vectorised (default) or the official per-region Python loop (for benchmarks)."""
    progress: bool = True
    """Show a progress bar (headless runs)."""

    def weights(self, iteration: int) -> tuple[float, float]:
        """(entropy weight, consistency weight) at 1-based ``iteration``."""
        if iteration < self.switch_iteration:
            return self.entropy_weight, self.consistency_weight
        return self.entropy_weight_late, self.consistency_weight_late

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @staticmethod
    def from_json(data: dict) -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("scene", "init", "out"):
            if key in values:
                values[key] = Path(values[key])
        return TrainConfig(**values)

    def check(self) -> None:
        """Raise :class:`GagsError` on impossible values."""
        if self.iterations < 1:
            raise GagsError(f"--iterations must be at least 1, got {self.iterations}")
        if self.checkpoint_every < 0:
            raise GagsError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.decoder_width < 1:
            raise GagsError(f"--decoder-width must be positive, got {self.decoder_width}")
        if self.feature_dim < 1:
            raise GagsError(f"--feature-dim must be positive, got {self.feature_dim}")
        if self.region_smoothing < 1 or self.region_smoothing % 2 == 0:
            raise GagsError(f"--region-smoothing must be an odd size >= 1, got {self.region_smoothing}")
        if self.variant not in ("official", "paper"):
            raise GagsError(f"--variant must be official or paper, got {self.variant!r}")
        if self.single_scale not in (None, "s", "m", "l", "mix"):
            raise GagsError(f"--single-scale must be s, m, l or mix, got {self.single_scale!r}")


RESUME_FIXED = (
    "variant",
    "single_scale",
    "feature_dim",
    "decoder_width",
    "feature_lr",
    "feature_adam_eps",
    "decoder_lr",
    "entropy_weight",
    "entropy_weight_late",
    "consistency_weight",
    "consistency_weight_late",
    "switch_iteration",
    "region_smoothing",
    "resolution",
    "center_principal_point",
    "seed",
    "region_loss",
)
"""Settings a resumed run takes from its checkpoint (changing them would break the continuation)."""
