"""Image tables for the figures: enlarged tiles, column headers, row labels, heat-map overlays (PIL)."""

from __future__ import annotations

import textwrap
import unicodedata
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 3  # between tiles
GAP = 12  # before a column listed in ``gap_before``
LINE_H = 13  # text line height of the default font


def font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def ascii_label(text: str) -> str:
    """Taxon names as the default bitmap font can draw them (accents dropped, other characters ``?``)."""
    flat = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    return "".join(c if c.isprintable() else "?" for c in flat) or ("?" if str(text) else "")


def wrap(text: str, width: int, lines: int) -> list[str]:
    out = textwrap.wrap(ascii_label(text), width=max(4, width), break_long_words=True)[:lines]
    return out or [""]


def tile(pixels: np.ndarray, size: int) -> Image.Image:
    """uint8 ``[H, W, 3]`` as a ``size`` square: enlarged nearest-neighbour (pixels stay honest), or shrunk."""
    img = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    resample = Image.NEAREST if size >= img.width else Image.LANCZOS
    return img.resize((size, size), resample)


def overlay(pixels: np.ndarray, heat: np.ndarray, size: int, alpha: float = 0.55) -> Image.Image:
    """``heat`` (``[h, w]``, any range) min-max scaled to [0, 1], bilinear to ``size``, coloured with
    matplotlib's ``jet`` and blended over the enlarged image (docs/figures.md, Fig. S6)."""
    import matplotlib

    base = np.asarray(tile(pixels, size), dtype=np.float64) / 255.0
    h = np.asarray(heat, dtype=np.float64)
    span = h.max() - h.min()
    h = (h - h.min()) / span if span > 0 else np.zeros_like(h)
    h = np.asarray(Image.fromarray((h * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)) / 255.0
    colour = matplotlib.colormaps["jet"](h)[..., :3]
    out = (1 - alpha) * base + alpha * colour
    return Image.fromarray((out * 255).round().astype(np.uint8))


def table(rows: Sequence[tuple[str, Sequence[Image.Image]]], headers: Sequence[str], size: int,
          label_chars: int = 22, gap_before: Sequence[int] = (), title: str | None = None) -> Image.Image:
    """A grid of ``size`` tiles: one row per ``(label, tiles)``, ``headers`` over the columns (``\\n`` splits
    a header into lines), an extra gap before the columns in ``gap_before``."""
    fnt = font()
    label_w = 6 * label_chars + 8
    head_lines = max([len(h.split("\n")) for h in headers] + [1])
    header_chars = max(4, size // 6)
    head_h = LINE_H * min(head_lines * 2, 4) + 4
    title_h = LINE_H + 6 if title else 0
    n_cols = max([len(t) for _, t in rows] + [len(headers), 1])
    xs, x = [], label_w
    for c in range(n_cols):
        x += GAP if c in gap_before else 0
        xs.append(x)
        x += size + PAD
    width, height = x + PAD, title_h + head_h + len(rows) * (size + PAD) + PAD
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), ascii_label(title), fill="black", font=fnt)
    for c, text in enumerate(headers):
        lines = [piece for part in text.split("\n") for piece in wrap(part, header_chars, 2)][:4]
        for i, line in enumerate(lines):
            draw.text((xs[c] + 1, title_h + 2 + i * LINE_H), line, fill="black", font=fnt)
    for r, (label, tiles) in enumerate(rows):
        y = title_h + head_h + r * (size + PAD)
        lines = wrap(label, label_chars, max(1, size // LINE_H))
        top = y + max(0, (size - LINE_H * len(lines)) // 2)
        for i, line in enumerate(lines):
            draw.text((4, top + i * LINE_H), line, fill="black", font=fnt)
        for c, img in enumerate(tiles):
            canvas.paste(img, (xs[c], y))
    return canvas
