"""Image checks (``prepare``) and the paper's preprocessing (``shard``).

Preprocessing (docs/method.md §4): an optional bounding-box crop first (FishNet), then
one of

- ``center_crop``: square centre crop of side ``min(W, H)``, then resize (the official validation
  transform; iNat and FishNet),
- ``resize``: non-uniform resize of the whole image to a square (FishNet's other training branch),
- ``pad_white``: pad to a white square of side ``max(W, H)``, then resize (BIOSCAN microscope
  images on a white background keep the whole specimen).

Images whose pixels are not 8-bit (docs/datasets.md §3, "Images by meaning"): a PIL ``convert("RGB")`` clips
such values instead of rescaling them (a 16-bit micrograph becomes white, a float image black), so
:func:`to_rgb` maps them to 0..255 with their range kept: unsigned 16-bit modes (``I;16``, ``I;16B`` ...) by
bit depth (``v / 65535 * 255``); 32-bit integer (``I``) and float (``F``) images per image, from their own
minimum (0) to maximum (255), a flat image to 0; a NaN or infinite float pixel is
:class:`NonFinitePixels` (``prepare`` counts it as ``nonfinite_pixels`` with ``check_images: decode``).
16-bit RGB (TIFF, PNG) is read by Pillow as its high byte, which keeps the range.

All resizes use LANCZOS. The official code uses Lanczos4 when upsampling and INTER_AREA when
downsampling; Pillow's LANCZOS filter widens its support when downsampling, so it antialiases like
an area filter. JPEGs are decoded with :meth:`PIL.Image.Image.draft` at the smallest DCT scale that
still leaves at least twice the target resolution, which keeps 2880x2160 BIOSCAN originals cheap.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from taxadiffusion.config import PREPROCESS

WHITE = (255, 255, 255)
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_DRAFT_MARGIN = 2  # decode at >= 2x the target side before the LANCZOS resize
UNSIGNED_16 = ("I;16", "I;16L", "I;16B", "I;16N")  # 16-bit grayscale (microscopy, scientific cameras)
PER_IMAGE_RANGE = ("I", "F")  # 32-bit int and float: no fixed full scale, so each image's own min..max
HIGH_DEPTH = UNSIGNED_16 + PER_IMAGE_RANGE


class NonFinitePixels(ValueError):
    """A float image with NaN or infinite pixels: no brightness can be given to them, so the image is dropped."""


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """Size after EXIF rotation (what the pixels look like once :func:`ImageOps.exif_transpose` ran)."""
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112)
    except Exception:  # a broken EXIF block must not hide an otherwise good image
        orientation = None
    return (h, w) if orientation in _ROTATED else (w, h)


def check_image(path: str | Path, mode: str, need_size: bool = False) -> tuple[str, tuple[int, int] | None, str | None]:
    """``(status, size, error)`` with status ``ok`` | ``missing`` | ``corrupt`` | ``nonfinite``.

    ``header``: open + :meth:`~PIL.Image.Image.verify` (fast; catches files that are not images or
    have a broken header); ``decode``: full decode (also catches truncated data, and NaN / infinite pixels of
    a float image: ``nonfinite``). With ``need_size`` the EXIF-oriented size is returned too (used to validate
    bounding boxes).
    """
    path = Path(path)
    if not path.is_file():
        return "missing", None, None
    size = None
    try:
        with Image.open(path) as im:
            if mode == "decode":
                im.load()
                size = oriented_size(im) if need_size else None
                if im.mode in HIGH_DEPTH:  # what shard will do to it, so a NaN pixel is a counted drop here
                    high_depth_to_l(im)
            else:
                im.verify()  # must come straight after open; the image is unusable afterwards
        if need_size and size is None:
            with Image.open(path) as im:
                size = oriented_size(im)
    except NonFinitePixels as exc:
        return "nonfinite", None, str(exc)[:200]
    except Exception as exc:  # Pillow's plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        return "corrupt", None, f"{type(exc).__name__}: {exc}"[:200]
    return "ok", size, None


def high_depth_to_l(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit int or float grayscale image as 8-bit ``L``, its range kept (module docstring)."""
    a = np.asarray(im)
    if im.mode in UNSIGNED_16:
        scaled = a.astype(np.float64) * (255.0 / 65535.0)  # bit depth: 0 -> 0, 65535 -> 255
    else:
        a = a.astype(np.float64)
        bad = ~np.isfinite(a)
        if bad.any():
            raise NonFinitePixels(f"mode {im.mode}: {int(bad.sum())} of {a.size} pixels are NaN or infinite")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    # the clip only guards float rounding at the ends: the scaling above already maps the range onto 0..255
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB; transparent pixels become white (specimen photos are shot on light backgrounds); 16-bit, 32-bit
    and float grayscale rescaled, never clipped (:func:`high_depth_to_l`)."""
    if im.mode == "RGB":
        return im
    if im.mode in HIGH_DEPTH:
        return high_depth_to_l(im).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def bbox_box(bbox, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` -> integer crop box clamped to the image, or None when nothing is left."""
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    W, H = size
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(W, round(x + w)), min(H, round(y + h))
    if right - left < 1 or bottom - top < 1:
        return None
    return left, top, right, bottom


def _draft_scale(region: tuple[float, float], mode: str, resolution: int) -> float:
    """Largest useful down-scale factor k (<= 1) so the preprocessed region keeps >= 2x the target."""
    rw, rh = region
    need = _DRAFT_MARGIN * resolution
    if mode == "center_crop":
        k = need / min(rw, rh)
    elif mode == "pad_white":
        k = need / max(rw, rh)
    else:  # resize: both sides matter
        k = max(need / rw, need / rh)
    return min(1.0, k)


def preprocess(im: Image.Image, mode: str, resolution: int, bbox=None) -> Image.Image:
    """RGB image -> ``resolution``² RGB image (bbox crop, then ``mode``); see the module docstring."""
    if mode not in PREPROCESS:
        raise ValueError(f"unknown preprocess mode {mode!r}")
    im = to_rgb(im)
    if bbox is not None:
        box = bbox_box(bbox, im.size)
        if box is None:
            raise ValueError(f"bounding box {tuple(bbox)} lies outside the {im.size[0]}x{im.size[1]} image")
        im = im.crop(box)
    W, H = im.size
    if mode == "center_crop":
        side = min(W, H)
        left, top = (W - side) // 2, (H - side) // 2
        im = im.crop((left, top, left + side, top + side))
    elif mode == "pad_white":
        side = max(W, H)
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(im, ((side - W) // 2, (side - H) // 2))
        im = canvas
    if im.size != (resolution, resolution):
        im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return im


def load_preprocessed(path: str | Path, mode: str, resolution: int, bbox=None) -> Image.Image:
    """Open ``path`` (EXIF-rotated, JPEG draft-decoded when much larger than needed) and :func:`preprocess`."""
    with Image.open(path) as im:
        w0, h0 = oriented_size(im)
        if im.format == "JPEG":
            region = (w0, h0)
            if bbox is not None:
                box = bbox_box(bbox, (w0, h0))
                if box is not None:
                    region = (box[2] - box[0], box[3] - box[1])
            k = _draft_scale(region, mode, resolution)
            if k < 0.5:  # draft only reduces by 1/2, 1/4, 1/8; size requested in stored (unrotated) axes
                rw, rh = im.size
                im.draft("RGB", (math.ceil(rw * k), math.ceil(rh * k)))
        im = ImageOps.exif_transpose(im)
        im.load()
    w1, h1 = im.size
    if bbox is not None and (w1, h1) != (w0, h0):
        sx, sy = w1 / w0, h1 / h0
        x, y, w, h = (float(v) for v in bbox)
        bbox = (x * sx, y * sy, w * sx, h * sy)
    return preprocess(im, mode, resolution, bbox)


def encode_png(im: Image.Image) -> bytes:
    """Lossless PNG bytes (deterministic for identical pixels)."""
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
