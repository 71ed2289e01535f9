"""The bundled demo: a synthetic tabletop scene, a small CLIP model trained on it, and the field distilled
from both through the real pipeline (``python -m gags_viewer.demo.build`` rebuilds everything)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_FIELD = REPO_ROOT / "scenes" / "demo"
"""The committed demo field (native format)."""
