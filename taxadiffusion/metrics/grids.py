"""Sample grids: per class, one row per species, generated images (left) next to real ones (right)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from taxadiffusion.core.files import atomic_path
from taxadiffusion.core.names import PathNames
from taxadiffusion.metrics.data import ImageSet

LABEL_W = 150
HEADER_H = 16
GAP = 10  # between the generated and the real block
PAD = 2  # between tiles
LINE_H = 11  # a line of the default bitmap font
LABEL_CHARS = 24  # characters of the default font that fit in LABEL_W


def _label_lines(label: str, max_lines: int) -> list[str]:
    """``label`` wrapped at word boundaries (long words broken) into at most ``max_lines`` lines; a name that still
    does not fit ends in an ellipsis, so a cut is visible."""
    lines = textwrap.wrap(str(label), width=LABEL_CHARS, break_long_words=True) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: LABEL_CHARS - 3] + "..."  # ASCII: the bitmap font draws no ellipsis
    return lines


def _tile_size(size: tuple[int, int]) -> int:
    """Small images are enlarged by an integer factor (nearest: pixels stay honest), large ones shrunk to 128."""
    w = size[0]
    return w * max(1, 64 // w) if w < 64 else min(w, 128)


def _tiles(images: np.ndarray, tile: int) -> list[Image.Image]:
    out = []
    for a in images:
        img = Image.fromarray(a)
        resample = Image.NEAREST if tile >= img.width else Image.LANCZOS
        out.append(img.resize((tile, tile), resample))
    return out


def make_grid(rows: list[tuple[str, np.ndarray, np.ndarray]], size: tuple[int, int], per_row: int = 4) -> Image.Image:
    tile = _tile_size(size)
    step = tile + PAD
    font = ImageFont.load_default()
    width = LABEL_W + 2 * per_row * step + GAP
    height = HEADER_H + len(rows) * step
    canvas = Image.new("RGB", (width, max(height, HEADER_H + 1)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((LABEL_W + 2, 2), "generated", fill="black", font=font)
    draw.text((LABEL_W + per_row * step + GAP + 2, 2), "real", fill="black", font=font)
    for r, (label, gen, real) in enumerate(rows):
        y = HEADER_H + r * step
        # the whole name, wrapped to the label column (it was cut at 24 characters: "Hydrolagus macrophthalmu")
        lines = _label_lines(label, max(1, tile // LINE_H))
        top = y + max(0, (tile - LINE_H * len(lines)) // 2)
        for i, line in enumerate(lines):
            draw.text((4, top + i * LINE_H), line, fill="black", font=font)
        for k, t in enumerate(_tiles(gen, tile)):
            canvas.paste(t, (LABEL_W + k * step, y))
        for k, t in enumerate(_tiles(real, tile)):
            canvas.paste(t, (LABEL_W + per_row * step + GAP + k * step, y))
    return canvas


def write_grids(picks: dict[str, list], gen: ImageSet, real: ImageSet, size: tuple[int, int],
                out_dir: str | Path) -> None:
    """``picks``: class -> [(species, [gen idx], [real idx])] (see ``evaluate._grid_picks``)."""
    out_dir = Path(out_dir)
    written = set()
    files = PathNames()
    for cls, rows in sorted(picks.items()):  # sorted: the name rule depends on order
        decoded = [(sp, gen.decode(g, size), real.decode(r, size)) for sp, g, r in rows]
        path = out_dir / f"{files(cls)}.png"
        with atomic_path(path) as tmp:
            make_grid(decoded, size).save(tmp, format="PNG")
        written.add(path.name)
    for stale in out_dir.glob("*.png"):  # grids of classes no longer generated would mislead the report
        if stale.name not in written:
            stale.unlink()
