"""Exports: PNG stills with a legend, MP4/GIF videos; atomic writes and safe file names.

Everything is written under an output directory the user chose, as a temporary sibling first and then
renamed into place (a reader never sees half a file; a failure leaves nothing behind). File names are
built from user text (queries, trajectory names) only through :func:`sanitize_filename`.
"""

from __future__ import annotations

import io
import math
import os
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gags_viewer.errors import GagsError
from gags_viewer.fsutil import atomic_path, atomic_write_bytes

RGB = tuple[int, int, int]

VIDEO_FORMATS = ("mp4", "gif")
MAX_NAME_LENGTH = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


class ExportError(GagsError):
    """An export cannot be written (bad name, unwritable directory, encoder failure)."""


# --------------------------------------------------------------------------------------------------
# Names


def sanitize_filename(text: str, default: str = "export", max_length: int = MAX_NAME_LENGTH) -> str:
    """A file-name stem made from user text: ASCII letters, digits, ``.``, ``_`` and ``-`` only.

    Accents are folded ("café" -> "cafe"), any other run of characters becomes one ``_``, path
    separators and leading dots cannot survive (no ``..``, no hidden files, no directories), reserved
    device names get a ``_`` suffix, and the result is at most ``max_length`` characters. Empty
    results give ``default``.
    """
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    name = _UNSAFE.sub("_", folded)
    name = re.sub(r"\.{2,}", ".", name).strip("._-")
    name = name[:max_length].rstrip("._-")
    if not name:
        name = default
    head, dot, tail = name.partition(".")
    if head.lower() in _WINDOWS_RESERVED:  # "LPT1.txt" is the device on Windows too: suffix the head
        name = f"{head}_{dot}{tail}"
    return name


def export_stem(kind: str, hint: str = "") -> str:
    """``<kind>-<hint>-<YYYYmmdd-HHMMSS>`` with the hint sanitised (e.g. ``view-mug_plant-20261126-101500``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    hint = sanitize_filename(hint, default="") if hint else ""
    parts = [sanitize_filename(kind, default="export")] + ([hint] if hint else []) + [stamp]
    return "-".join(parts)


def unique_path(directory: str | os.PathLike, stem: str, suffix: str) -> Path:
    """``directory/stem+suffix``, or ``stem-2``, ``stem-3``... if taken (an empty suffix names a
    directory). The stem is sanitised again."""
    directory = Path(directory)
    stem = sanitize_filename(stem)
    suffix = "." + sanitize_filename(suffix.lstrip("."), default="bin") if suffix else ""
    candidate = directory / f"{stem}{suffix}"
    n = 2
    while candidate.exists():
        candidate = directory / f"{stem}-{n}{suffix}"
        n += 1
    return candidate


def ensure_directory(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{directory}: cannot create the output directory ({exc.strerror or exc})") from None
    if not os.access(directory, os.W_OK):
        raise ExportError(f"{directory}: the output directory is not writable")
    return directory


# --------------------------------------------------------------------------------------------------
# Legend


@dataclass(eq=False)
class Legend:
    """What the colours of a frame mean.

    Attributes:
        title: one line, e.g. "relevancy > 0.50 (gaussian)".
        swatches: discrete entries (label, colour): one per query, or granularity classes.
        colorbar: a continuous scale: 256 colours [256, 3] uint8 and the labels of its two ends.
        notes: extra lines (e.g. "encoding 'mug'...").
    """

    title: str = ""
    swatches: list[tuple[str, RGB]] = field(default_factory=list)
    colorbar: tuple[np.ndarray, str, str] | None = None
    notes: list[str] = field(default_factory=list)

    def signature(self) -> tuple:
        """A hashable summary: equal for legends that look the same."""
        bar = None
        if self.colorbar is not None:
            bar = (np.asarray(self.colorbar[0], dtype=np.uint8).tobytes(), self.colorbar[1], self.colorbar[2])
        return (
            self.title,
            tuple((label, tuple(int(c) for c in rgb)) for label, rgb in self.swatches),
            bar,
            tuple(self.notes),
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, Legend) and self.signature() == other.signature()

    __hash__ = None  # type: ignore[assignment]

    @property
    def empty(self) -> bool:
        return not (self.title or self.swatches or self.colorbar is not None or self.notes)

    def html(self) -> str:
        """The legend as a small HTML fragment for the viewer's panel."""
        import html as _html

        rows = []
        if self.title:
            rows.append(f"<div style='font-weight:600;margin-bottom:2px'>{_html.escape(self.title)}</div>")
        for label, rgb in self.swatches:
            color = "#{:02x}{:02x}{:02x}".format(*rgb)
            rows.append(
                "<div style='display:flex;align-items:center;gap:6px'>"
                f"<span style='display:inline-block;width:14px;height:14px;border-radius:3px;background:{color}'></span>"
                f"<span>{_html.escape(label)}</span></div>"
            )
        if self.colorbar is not None:
            colors, low, high = self.colorbar
            stops = ",".join(
                "#{:02x}{:02x}{:02x}".format(*colors[i]) for i in np.linspace(0, len(colors) - 1, 8).astype(int)
            )
            rows.append(
                "<div style='display:flex;align-items:center;gap:4px'>"
                f"<span>{_html.escape(low)}</span>"
                f"<span style='flex:1;height:10px;border-radius:2px;background:linear-gradient(to right,{stops})'></span>"
                f"<span>{_html.escape(high)}</span></div>"
            )
        for note in self.notes:
            rows.append(f"<div style='opacity:0.8;font-style:italic'>{_html.escape(note)}</div>")
        return "<div style='font-size:0.8em;line-height:1.5'>" + "".join(rows) + "</div>"


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "LiberationSans-Regular.ttf"):
        with suppress(OSError):
            return ImageFont.truetype(name, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_legend(image: np.ndarray, legend: Legend | None) -> np.ndarray:
    """``image`` [H, W, 3] uint8 with ``legend`` drawn in a translucent box in its bottom-left corner.

    The text size follows the image height (readable from 240 to 4K lines). Returns a new array.
    """
    if legend is None or legend.empty:
        return image
    from PIL import Image, ImageDraw

    height, width = image.shape[:2]
    size = int(np.clip(round(height / 32), 9, 48))
    font = _font(size)
    pad, gap = size // 2, max(2, size // 4)
    lines: list[tuple[str, RGB | None, bool]] = []  # (text, swatch colour, is colorbar)
    if legend.title:
        lines.append((legend.title, None, False))
    lines += [(label, rgb, False) for label, rgb in legend.swatches]
    if legend.colorbar is not None:
        lines.append(("", None, True))
    lines += [(note, None, False) for note in legend.notes]

    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3])).convert("RGBA")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)

    def text_width(text: str) -> int:
        box = draw.textbbox((0, 0), text, font=font)
        return box[2] - box[0]

    bar_width = size * 8
    widths = []
    for text, rgb, is_bar in lines:
        if is_bar:
            low, high = legend.colorbar[1], legend.colorbar[2]
            widths.append(text_width(low) + bar_width + text_width(high) + 2 * gap)
        else:
            widths.append(text_width(text) + (size + gap if rgb is not None else 0))
    box_w = min(width - 2, max(widths) + 2 * pad)
    line_h = size + gap
    box_h = min(height - 2, len(lines) * line_h + 2 * pad - gap)
    x0, y0 = 1 + pad // 2, height - box_h - 1 - pad // 2
    x0, y0 = max(0, x0), max(0, y0)
    draw.rounded_rectangle((x0, y0, x0 + box_w, y0 + box_h), radius=max(2, size // 3), fill=(0, 0, 0, 150))
    y = y0 + pad
    for text, rgb, is_bar in lines:
        x = x0 + pad
        if is_bar:
            colors, low, high = legend.colorbar
            draw.text((x, y), low, font=font, fill=(255, 255, 255, 255))
            bx = x + text_width(low) + gap
            steps = np.linspace(0, len(colors) - 1, bar_width).astype(int)
            for i, idx in enumerate(steps):
                c = tuple(int(v) for v in colors[idx])
                draw.line((bx + i, y + size // 5, bx + i, y + size - size // 5), fill=c + (255,))
            draw.text((bx + bar_width + gap, y), high, font=font, fill=(255, 255, 255, 255))
        else:
            if rgb is not None:
                draw.rectangle((x, y + 1, x + size - 2, y + size - 1), fill=tuple(int(c) for c in rgb) + (255,))
                x += size + gap
            draw.text((x, y), text, font=font, fill=(255, 255, 255, 255))
        y += line_h
    return np.asarray(Image.alpha_composite(canvas, overlay).convert("RGB"))


def draw_error(message: str, width: int, height: int, previous: np.ndarray | None = None) -> np.ndarray:
    """The image shown when a frame fails: ``previous`` (if it has this size) darkened, or black, with
    "Render failed" and ``message`` in red, wrapped to the width. [height, width, 3] uint8"""
    import textwrap

    from PIL import Image, ImageDraw

    if previous is not None and previous.shape[:2] == (height, width):
        base = (previous[..., :3].astype(np.float32) * 0.25).astype(np.uint8)
    else:
        base = np.zeros((height, width, 3), dtype=np.uint8)
    size = int(np.clip(round(height / 24), 9, 40))
    font = _font(size)
    canvas = Image.fromarray(np.ascontiguousarray(base))
    draw = ImageDraw.Draw(canvas)
    columns = max(10, int(width / (0.55 * size)) - 2)
    lines = ["Render failed"] + textwrap.wrap(message, columns)[:8]
    y = max(0, (height - len(lines) * (size + size // 3)) // 2)
    for i, line in enumerate(lines):
        draw.text((size // 2, y), line, font=font, fill=(255, 90, 90) if i == 0 else (255, 200, 200))
        y += size + size // 3
    return np.asarray(canvas)


# --------------------------------------------------------------------------------------------------
# Writers


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an [H, W, 3] (or [H, W]) uint8 image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write ``image`` as a PNG at ``path``, atomically. Returns the path."""
    path = Path(path)
    try:
        atomic_write_bytes(path, encode_png(image))
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    """Crop a frame to even width and height (H.264 in yuv420p needs them)."""
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


GIF_MAX_SIDE = 480
"""A GIF export's longest side in pixels (larger frames are scaled down)."""
GIF_MAX_FPS = 12.5
"""A GIF export keeps every k-th frame so that its frame rate is at most this."""
GIF_COLORS = 128
"""Colours of each GIF frame's own palette (median cut, no dithering: smaller files)."""


def _gif_frame(frame: np.ndarray):
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
    scale = GIF_MAX_SIDE / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    return image.quantize(colors=GIF_COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write frames ([H, W, 3] uint8) as an MP4 (H.264) or GIF, chosen by the suffix, atomically.

    Frames are streamed to the encoder (an MP4 never holds them all in memory). MP4 frames with an odd
    width or height lose their last column / row. A GIF is made small for sharing: at most
    :data:`GIF_MAX_SIDE` pixels on its long side, at most :data:`GIF_MAX_FPS` frames per second (every
    k-th frame, same duration) and a :data:`GIF_COLORS`-colour palette per frame. ``progress(i)`` is
    called after each frame.
    """
    import imageio.v2 as imageio

    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in VIDEO_FORMATS:
        raise ExportError(f"{path}: video format must be one of {', '.join(VIDEO_FORMATS)}")
    if not fps > 0:
        raise ExportError(f"video frame rate must be positive, got {fps}")
    count = 0
    try:
        with atomic_path(path) as tmp:
            if kind == "mp4":
                writer = imageio.get_writer(
                    tmp,
                    format="FFMPEG",
                    mode="I",
                    fps=fps,
                    codec="libx264",
                    quality=8,
                    macro_block_size=1,
                    pixelformat="yuv420p",
                )
                try:
                    for frame in frames:
                        writer.append_data(_even(frame))
                        count += 1
                        if progress is not None:
                            progress(count)
                finally:
                    writer.close()
            else:
                step = max(1, math.ceil(fps / GIF_MAX_FPS - 1e-9))
                images = []
                for frame in frames:
                    if count % step == 0:
                        images.append(_gif_frame(frame))
                    count += 1
                    if progress is not None:
                        progress(count)
                if images:
                    images[0].save(
                        tmp,
                        format="GIF",
                        save_all=True,
                        append_images=images[1:],
                        duration=round(1000.0 * step / fps),
                        loop=0,
                    )
            if count == 0:
                raise ExportError(f"{path}: no frames to write")
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def zip_directory(directory: str | os.PathLike) -> bytes:
    """The files of ``directory`` as a zip archive (in memory), under a top folder of the same name."""
    import zipfile

    directory = Path(directory)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            archive.write(path, f"{directory.name}/{path.relative_to(directory).as_posix()}")
    return buffer.getvalue()


def write_png_sequence(
    directory: str | os.PathLike, frames: Sequence[np.ndarray] | Iterable[np.ndarray], stem: str = "frame"
) -> list[Path]:
    """Write ``stem_00000.png``... into ``directory`` (each file atomically). Returns the paths."""
    directory = ensure_directory(directory)
    stem = sanitize_filename(stem, default="frame")
    return [write_png(directory / f"{stem}_{i:05d}.png", frame) for i, frame in enumerate(frames)]
