"""Evaluation results: the report data, its console table, JSON/CSV files and composited images.

Everything written goes through :mod:`gags_viewer.fsutil` (temporary file, then rename), so an
interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gags_viewer.fsutil import atomic_write_bytes, atomic_write_text


@dataclass
class QueryRow:
    """Result of one (frame, query) pair.

    Attributes:
        frame: Label frame name ("frame_00041").
        query: The category text.
        iou: IoU of the predicted and GT masks.
        localized: Whether a box30 peak fell in a GT box.
        peaks: Every box30 argmax pixel as [x, y].
        pred_pixels, gt_pixels: Mask sizes.
        level: The query's level from the labels ("object", "part", ...), or "" when they have none.
        mask_level, localization_level: fields with several feature levels (LangSplat): the field level
            LangSplat's rules kept for the mask and for the localization, else "".
    """

    frame: str
    query: str
    iou: float
    localized: bool
    peaks: list[list[int]]
    pred_pixels: int
    gt_pixels: int
    level: str = ""
    mask_level: str = ""
    localization_level: str = ""


@dataclass
class FrameTiming:
    """Seconds spent on one frame: ``render`` (render + decode + relevancy in the query engine),
    ``protocol`` (smoothing, masks, IoU, localization), ``images`` (composites, if written)."""

    frame: str
    width: int
    height: int
    queries: int
    render: float
    protocol: float
    images: float = 0.0


@dataclass
class EvalReport:
    """Everything one evaluation of one scene produced.

    Attributes:
        scene: Name of the labels folder.
        rows: One row per (frame, query) pair, in frame then label order.
        miou: Mean IoU over all (frame, query) pairs (the official mIoU).
        localization_accuracy: Hits over all (frame, query) pairs.
        frame_cameras: Label frame -> camera name it was rendered from.
        mapping: "name" (explicit match) or "frame-number convention" (official fallback).
        timings: Per-frame timings.
        notes: Things the user should know (fallbacks, approximations), also printed.
        settings: Mode, threshold, negatives, CLIP model, device, inputs.
    """

    scene: str
    rows: list[QueryRow]
    miou: float
    localization_accuracy: float
    frame_cameras: dict[str, str]
    mapping: str
    timings: list[FrameTiming] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        return len(self.rows)

    @property
    def hits(self) -> int:
        return sum(row.localized for row in self.rows)

    def per_category(self) -> list[dict]:
        """Mean IoU and hits per query text over the frames where it is labelled, in first-seen order."""
        groups: dict[str, list[QueryRow]] = {}
        for row in self.rows:
            groups.setdefault(row.query, []).append(row)
        return [
            {
                "query": query,
                "frames": len(rows),
                "mean_iou": float(np.mean([r.iou for r in rows])),
                "hits": sum(r.localized for r in rows),
            }
            for query, rows in groups.items()
        ]

    def timing_summary(self) -> dict:
        """Mean seconds per frame for each stage, and the mean label resolution."""
        if not self.timings:
            return {}
        mean = lambda key: float(np.mean([getattr(t, key) for t in self.timings]))  # noqa: E731
        return {
            "frames": len(self.timings),
            "mean_width": mean("width"),
            "mean_height": mean("height"),
            "render_s_per_frame": mean("render"),
            "protocol_s_per_frame": mean("protocol"),
            "images_s_per_frame": mean("images"),
        }

    def to_json(self) -> dict:
        return {
            "scene": self.scene,
            "miou": self.miou,
            "localization_accuracy": self.localization_accuracy,
            "pairs": self.num_pairs,
            "hits": self.hits,
            "mapping": self.mapping,
            "frame_cameras": self.frame_cameras,
            "settings": self.settings,
            "notes": self.notes,
            "categories": self.per_category(),
            "rows": [asdict(row) for row in self.rows],
            "timing": self.timing_summary(),
            "frame_timings": [asdict(t) for t in self.timings],
        }


def level_summary(rows) -> dict[str, tuple[int, float, float]]:
    """Per level of the labels, in first-appearance order: (pairs, mIoU, localization accuracy); empty
    when no row has a level."""
    grouped: dict[str, list] = {}
    for row in rows:
        if row.level:
            grouped.setdefault(row.level, []).append(row)
    return {
        level: (len(group), sum(r.iou for r in group) / len(group), sum(r.localized for r in group) / len(group))
        for level, group in grouped.items()
    }


def print_report(report: EvalReport, console=None) -> None:
    """Print the per-pair table and the scene summary with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(
        title=f"LERF-OVS evaluation: {report.scene} ({report.settings.get('mode', '?')} mode)",
        caption=report.settings.get("rule"),
    )
    table.add_column("frame")
    table.add_column("query")
    table.add_column("IoU", justify="right")
    table.add_column("localized", justify="center")
    previous = None
    for row in report.rows:
        table.add_row(
            row.frame if row.frame != previous else "", row.query, f"{100 * row.iou:.1f}", "✓" if row.localized else "✗"
        )
        previous = row.frame
    table.add_section()
    table.add_row(
        "scene",
        f"{report.num_pairs} pairs, {len(report.frame_cameras)} frames",
        f"[bold]{100 * report.miou:.1f}[/bold]",
        f"[bold]{report.hits}/{report.num_pairs}[/bold]",
    )
    console.print(table)
    levels = level_summary(report.rows)
    if levels:
        by_level = Table(title=f"{report.scene}: per level")
        for name, justify in (("level", "left"), ("pairs", "right"), ("mIoU", "right"), ("localization", "right")):
            by_level.add_column(name, justify=justify)
        for level, (pairs, miou, localization) in levels.items():
            by_level.add_row(level, str(pairs), f"{100 * miou:.1f}", f"{100 * localization:.1f} %")
        console.print(by_level)
    console.print(
        f"[bold]{report.scene}[/bold]: mIoU {100 * report.miou:.2f} %, localization accuracy "
        f"{100 * report.localization_accuracy:.2f} % ({report.hits}/{report.num_pairs})"
    )
    timing = report.timing_summary()
    if timing:
        console.print(
            f"time per frame at ~{timing['mean_width']:.0f}x{timing['mean_height']:.0f}: render+decode+relevancy "
            f"{timing['render_s_per_frame']:.2f} s, protocol {timing['protocol_s_per_frame']:.2f} s"
            + (f", images {timing['images_s_per_frame']:.2f} s" if timing["images_s_per_frame"] else "")
        )


def write_report(report: EvalReport, out: Path) -> tuple[Path, Path]:
    """Write ``<out>/<scene>.json`` and ``<out>/<scene>.csv`` atomically; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(report.scene)
    json_path, csv_path = out / f"{stem}.json", out / f"{stem}.csv"
    atomic_write_text(json_path, json.dumps(report.to_json(), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["frame", "query", "iou", "localized", "peak_x", "peak_y", "num_peaks", "pred_pixels", "gt_pixels"])
    for row in report.rows:
        x, y = row.peaks[0] if row.peaks else ("", "")
        writer.writerow(
            [
                row.frame,
                row.query,
                f"{row.iou:.6f}",
                int(row.localized),
                x,
                y,
                len(row.peaks),
                row.pred_pixels,
                row.gt_pixels,
            ]
        )
    atomic_write_text(csv_path, buffer.getvalue())
    return json_path, csv_path


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` ("bear nose/2" -> "bear_nose_2")."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned[:100] or "query"


# ---------------------------------------------------------------------------------------- images

TP_COLOR = np.array([40, 200, 80], np.float32)
FP_COLOR = np.array([230, 50, 50], np.float32)
FN_COLOR = np.array([60, 110, 255], np.float32)
BOX_COLOR = np.array([255, 220, 0], np.uint8)


def composite(
    photo: np.ndarray | None,
    score: np.ndarray,
    prediction: np.ndarray,
    ground_truth: np.ndarray,
    boxes: np.ndarray,
    peaks: np.ndarray,
) -> np.ndarray:
    """Side-by-side comparison for one (frame, query) pair.

    Left: the prediction, the normalised smoothed relevancy in the turbo colormap inside the predicted
    mask over the dimmed photo (as the official ``mask_composited``). Right: agreement with the ground
    truth: true positives green, false positives red, false negatives blue; GT boxes yellow. Both
    panels mark the localization peaks with a cross.

    Args:
        photo: the frame's photo or RGB render, or None for grey. [H, W, 3] uint8
        score: the clipped, normalised smoothed relevancy in [0, 1]. [H, W]
        prediction, ground_truth: [H, W] bool
        boxes: GT boxes (x1, y1, x2, y2). [B, 4]
        peaks: localization peaks (x, y). [P, 2]
    Returns:
        [H, 2W + 8, 3] uint8
    """
    from matplotlib import colormaps

    height, width = score.shape
    base = np.full((height, width, 3), 128, np.float32) if photo is None else photo.astype(np.float32)
    dim = 0.4 * base + 0.1 * 255

    heat = colormaps["turbo"](np.clip(score, 0, 1))[..., :3].astype(np.float32) * 255
    left = np.where(prediction[..., None], heat, dim)

    right = 0.55 * base
    tp, fp, fn = prediction & ground_truth, prediction & ~ground_truth, ~prediction & ground_truth
    for mask, color in ((tp, TP_COLOR), (fp, FP_COLOR), (fn, FN_COLOR)):
        right[mask] = 0.35 * right[mask] + 0.65 * color
    left, right = left.clip(0, 255).astype(np.uint8), right.clip(0, 255).astype(np.uint8)
    for box in np.asarray(boxes).reshape(-1, 4):
        _draw_box(right, box)
    for panel in (left, right):
        for x, y in np.asarray(peaks).reshape(-1, 2)[:16]:
            _draw_cross(panel, int(x), int(y))
    gap = np.full((height, 8, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def write_png(path: Path, image: np.ndarray) -> None:
    """Encode ``image`` [H, W, 3] uint8 as PNG and write it atomically."""
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, iio.imwrite("<bytes>", image, extension=".png"))


def _draw_box(image: np.ndarray, box: np.ndarray, thickness: int = 2) -> None:
    height, width = image.shape[:2]
    x0, x1 = sorted((int(round(box[0])), int(round(box[2]))))
    y0, y1 = sorted((int(round(box[1])), int(round(box[3]))))
    x0, x1 = max(x0, 0), min(x1, width - 1)
    y0, y1 = max(y0, 0), min(y1, height - 1)
    if x0 > x1 or y0 > y1:
        return
    image[y0 : min(y0 + thickness, y1 + 1), x0 : x1 + 1] = BOX_COLOR
    image[max(y1 - thickness + 1, y0) : y1 + 1, x0 : x1 + 1] = BOX_COLOR
    image[y0 : y1 + 1, x0 : min(x0 + thickness, x1 + 1)] = BOX_COLOR
    image[y0 : y1 + 1, max(x1 - thickness + 1, x0) : x1 + 1] = BOX_COLOR


def _draw_cross(image: np.ndarray, x: int, y: int, size: int = 7) -> None:
    height, width = image.shape[:2]
    for color, half in (((0, 0, 0), 2), ((255, 255, 255), 1)):
        x0, x1 = max(x - size, 0), min(x + size + 1, width)
        y0, y1 = max(y - size, 0), min(y + size + 1, height)
        if 0 <= y < height:
            image[max(y - half + 1, 0) : min(y + half, height), x0:x1] = color
        if 0 <= x < width:
            image[y0:y1, max(x - half + 1, 0) : min(x + half, width)] = color
