"""Drawing the synthetic animals: the trait vocabularies, captions and the renderer (``synthesize`` builds the
tree that assigns traits to taxa; ``pretrain`` draws independent trait combinations with captions).

``sample_pretraining_batch`` draws *independent* random trait combinations with captions: the
analogue of captioned web images the base model is pretrained on, not tied to the fine-tuning tree.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageChops, ImageDraw

# --------------------------------------------------------------------------------------------------
# Trait vocabularies. Geometry is in units of a 128-unit canvas, origin at the centre, head at +x.
# --------------------------------------------------------------------------------------------------

# name -> (half length a, half height b, superellipse exponent, tail size, dorsal fin height)
BODIES: dict[str, tuple[float, float, float, float, float]] = {
    "sleek": (38, 15, 2.0, 20, 9),  # fish-like ellipse
    "long": (45, 7, 2.4, 13, 0),  # eel
    "round": (26, 24, 2.0, 18, 7),  # disc
    "tall": (24, 34, 1.15, 18, 14),  # diamond / angelfish
    "boxy": (31, 19, 5.0, 18, 6),  # boxfish
    "snouted": (32, 11, 2.0, 16, 6),  # needlefish with a long snout
    "humped": (35, 15, 2.0, 20, 5),  # big dorsal hump
}

# name -> (main colour, secondary colour); the name is the main colour word used in captions.
PALETTES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "red": ((205, 35, 35), (250, 232, 200)),
    "orange": ((245, 130, 20), (45, 30, 30)),
    "yellow": ((245, 210, 35), (30, 55, 165)),
    "green": ((45, 150, 60), (235, 235, 120)),
    "blue": ((35, 75, 205), (250, 250, 250)),
    "purple": ((125, 45, 170), (250, 200, 60)),
    "pink": ((245, 120, 185), (95, 20, 60)),
    "brown": ((120, 72, 38), (232, 200, 150)),
    "black": ((35, 35, 42), (240, 240, 240)),
    "teal": ((15, 160, 160), (20, 35, 70)),
    "grey": ((128, 128, 134), (215, 50, 35)),
}

PATTERNS = ["plain", "striped", "banded", "spotted", "checkered", "pale-bellied", "dark-backed"]
TAILS = ["forked", "rounded", "pointed", "fan", "tiny"]

MARK_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (252, 252, 252),
    "black": (15, 15, 15),
    "yellow": (255, 228, 0),
    "red": (235, 20, 30),
    "blue": (25, 85, 255),
    "green": (40, 205, 60),
    "cyan": (0, 225, 235),
    "magenta": (235, 0, 205),
}
MARK_PLACES = ["head", "belly", "back", "tail", "eye"]
_MIN_CONTRAST = 130.0  # RGB distance a mark needs from both palette colours to stay visible at 32 px


def _dist(c1, c2) -> float:
    return float(np.linalg.norm(np.subtract(c1, c2, dtype=float)))


def marks_for_palette(palette: str) -> list[str]:
    """Species marks ("<colour> <place>") that stay visible on a palette (sorted, deterministic)."""
    main, second = PALETTES[palette]
    out = []
    for place in MARK_PLACES:
        for cname, rgb in MARK_COLOURS.items():
            if place == "eye" and cname in ("white", "black"):  # the default eye is white + black
                continue
            if _dist(rgb, main) >= _MIN_CONTRAST and _dist(rgb, second) >= _MIN_CONTRAST:
                out.append(f"{cname} {place}")
    return out


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


def _mark_phrase(mark: str) -> str:
    colour, place = mark.split()
    return f"{colour} eyes" if place == "eye" else f"a {colour} {place} spot"


def caption(traits: dict, rng: np.random.Generator | None = None, drop_prob: float = 0.0) -> str:
    """Plain-words caption, e.g. "a long red striped animal with a forked tail and a white head spot".

    Each attribute phrase is dropped independently with ``drop_prob``; word order never changes.
    """
    keep = {k: True for k in ("body", "palette", "pattern", "tail", "mark")}
    if drop_prob > 0:
        if rng is None:
            raise ValueError("caption: drop_prob > 0 needs an rng")
        for k in keep:  # fixed order: same rng stream -> same caption
            keep[k] = bool(rng.random() >= drop_prob)
    adjectives = [traits[k] for k in ("body", "palette", "pattern") if keep[k] and k in traits]
    head = " ".join([*adjectives, "animal"])
    article = "an" if head[0] in "aeiou" else "a"
    extras = []
    if keep["tail"] and "tail" in traits:
        extras.append(f"a {traits['tail']} tail")
    if keep["mark"] and "mark" in traits:
        extras.append(_mark_phrase(traits["mark"]))
    text = f"{article} {head}"
    if extras:
        text += " with " + " and ".join(extras)
    return text


def pretraining_vocabulary() -> list[str]:
    """Every word any caption can contain (sorted)."""
    words = {"a", "an", "animal", "with", "and", "tail", "spot", "eyes"}
    words |= set(BODIES) | set(PALETTES) | set(PATTERNS) | set(TAILS)
    words |= set(MARK_COLOURS) | {p for p in MARK_PLACES if p != "eye"}
    return sorted(words)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

_THETA = np.linspace(0.0, 2.0 * math.pi, 56, endpoint=False)


def _body_outline(body: str) -> np.ndarray:
    """Body polygon (N, 2) in canvas units around the origin, head at +x, y pointing down."""
    a, b, n, _, _ = BODIES[body]
    c, s = np.cos(_THETA), np.sin(_THETA)
    x = a * np.sign(c) * np.abs(c) ** (2.0 / n)
    y = b * np.sign(s) * np.abs(s) ** (2.0 / n)
    if body == "humped":
        top = y < 0
        y[top] *= 1.0 + 0.95 * np.exp(-(((x[top] + 0.15 * a) / (0.45 * a)) ** 2))
    return np.stack([x, y], axis=1)


_OUTLINES = {name: _body_outline(name) for name in BODIES}


def _tail_polygon(tail: str, x0: float, t: float) -> list[tuple[float, float]]:
    """Tail attached at the rear point (x0, 0), pointing to -x, size t."""
    o = 4.0  # overlap with the body so no gap shows after anti-aliasing
    if tail == "forked":
        return [(x0 + o, -3), (x0 - t, -t), (x0 - 0.45 * t, 0), (x0 - t, t), (x0 + o, 3)]
    if tail == "rounded":
        pts = [(x0 + o, -0.35 * t)]
        for ang in np.linspace(-0.5 * math.pi, 0.5 * math.pi, 11):
            pts.append((x0 - 0.35 * t - 0.65 * t * math.cos(ang), 0.8 * t * math.sin(ang)))
        return [*pts, (x0 + o, 0.35 * t)]
    if tail == "pointed":
        return [(x0 + o, -0.45 * t), (x0 - 1.35 * t, 0), (x0 + o, 0.45 * t)]
    if tail == "fan":
        return [(x0 + o, -3), (x0 - 0.9 * t, -1.15 * t), (x0 - 0.9 * t, 1.15 * t), (x0 + o, 3)]
    if tail == "tiny":
        return [(x0 + o, -0.25 * t), (x0 - 0.4 * t, -0.3 * t), (x0 - 0.4 * t, 0.3 * t), (x0 + o, 0.25 * t)]
    raise KeyError(tail)


def _pattern_mask(pattern: str, a: float, b: float, draw: ImageDraw.ImageDraw, P) -> None:
    """Draw the pattern (255 = secondary colour) in the body's box; the body mask clips it."""
    top = b * 2.0  # generous: the hump and the diamond reach above b
    if pattern == "plain":
        return
    if pattern == "striped":
        th = max(5.0, 0.3 * b)
        centres = [-0.5 * b, 0.15 * b] if b >= 12 else [0.0]
        for yc in centres:
            draw.rectangle([P(-a - 2, yc - th / 2), P(a + 2, yc + th / 2)], fill=255)
    elif pattern == "banded":
        w = max(7.0, 0.2 * a)
        for xc in (-0.5 * a, 0.05 * a):
            draw.rectangle([P(xc - w / 2, -top), P(xc + w / 2, top)], fill=255)
    elif pattern == "spotted":
        r, step = 4.5, 14.0
        for j, yc in enumerate(np.arange(-top, top + 1, step)):
            shift = step / 2 if j % 2 else 0.0
            for xc in np.arange(-a + shift, a + 1, step):
                draw.ellipse([P(xc - r, yc - r), P(xc + r, yc + r)], fill=255)
    elif pattern == "checkered":
        sq = 11.0
        for j, yc in enumerate(np.arange(-top, top, sq)):
            for i, xc in enumerate(np.arange(-a, a, sq)):
                if (i + j) % 2 == 0:
                    draw.rectangle([P(xc, yc), P(xc + sq, yc + sq)], fill=255)
    elif pattern == "pale-bellied":
        draw.rectangle([P(-a - 2, 0.15 * b), P(a + 2, top)], fill=255)
    elif pattern == "dark-backed":
        draw.rectangle([P(-a - 2, -top), P(a + 2, -0.3 * b)], fill=255)
    else:
        raise KeyError(pattern)


def _gradient(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth light, desaturated two-colour gradient (uint8 [size, size, 3]); never per-pixel noise."""
    cols = []
    for _ in range(2):
        h, s, v = rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.78, 0.97)
        cols.append(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0)
    ang = rng.uniform(0.0, 2.0 * math.pi)
    g = (np.arange(size) + 0.5) / size - 0.5
    t = np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None]
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = cols[0][None, None, :] * (1.0 - t[..., None]) + cols[1][None, None, :] * t[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


_FILL = 1.12  # overall animal size on the 128-unit canvas (the longest plan still fits at ±20 deg)


def _darker(rgb, f: float = 0.5) -> tuple[int, int, int]:
    return tuple(int(c * f) for c in rgb)


# structure: one drawing; the layers share the canvas and transform, and every seed's bytes depend on their order
def render(traits: dict, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """Draw one animal with ``traits`` at a random pose on a gradient background (RGB, ``size`` px).

    Drawn at 4x with ImageDraw and downsampled with LANCZOS for smooth, anti-aliased edges. One long function on
    purpose (the structure test's opt-out above): the layers (body, pattern, fins, tail, mark, pose, background)
    share the same canvas and transform, and the byte-identical images of every seed depend on their exact order.
    """
    body, tail, pattern, mark = traits["body"], traits["tail"], traits["pattern"], traits["mark"]
    main, second = PALETTES[traits["palette"]]
    a, b, _, t_size, fin = BODIES[body]
    # Pose (drawn before the background so the stream order is fixed).
    flip = bool(rng.random() < 0.5)
    angle = float(rng.uniform(-20.0, 20.0))
    scale = float(rng.uniform(0.7, 1.0))
    reach = 4.0 + (1.0 - scale) * 40.0  # smaller animals may wander further without leaving the frame
    tx, ty = (float(v) for v in rng.uniform(-reach, reach, size=2))
    bg = _gradient(size, rng)

    canvas = 4 * size
    k = canvas / 128.0
    f = scale * k * _FILL
    half = canvas / 2.0
    # Centre the whole animal (tail behind, snout in front), not just the body.
    shift = 0.5 * t_size - (11.0 if body == "snouted" else 0.0)

    def P(x, y):
        return (half + (x + shift) * f, half + y * f)

    def poly(pts):
        return [P(x, y) for x, y in pts]

    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    outline = _OUTLINES[body]
    top_b = float(-outline[:, 1].min())
    line = _darker(main, 0.45)

    # Fins and tail behind the body, in the secondary colour (so both palette colours always show).
    x0 = -a
    if fin > 0:
        fin_pts = [(-0.45 * a, -0.55 * top_b), (-0.25 * a, -top_b - fin), (0.2 * a, -0.6 * top_b)]
        draw.polygon(poly(fin_pts), fill=second, outline=line)
        if body == "tall":  # angelfish: matching ventral fin
            draw.polygon(poly([(x, -y) for x, y in fin_pts]), fill=second, outline=line)
    draw.polygon(poly(_tail_polygon(tail, x0, t_size)), fill=second, outline=line)
    if body == "snouted":
        draw.polygon(poly([(a - 6, -3.5), (a + 22, -1), (a + 22, 1), (a - 6, 3.5)]), fill=main)

    # Body: fill, then the pattern clipped to the body mask, then a dark outline for the silhouette.
    body_pts = [P(x, y) for x, y in outline]
    draw.polygon(body_pts, fill=main)
    if pattern != "plain":
        bmask = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(bmask).polygon(body_pts, fill=255)
        pmask = Image.new("L", (canvas, canvas), 0)
        _pattern_mask(pattern, a, b, ImageDraw.Draw(pmask), P)
        layer.paste(second, mask=ImageChops.multiply(bmask, pmask))
    draw.polygon(body_pts, outline=line, width=max(1, round(2.5 * f)))

    # Eye, then the species mark (a 2-3 px dot at 32 px).
    if body == "long":
        ex, ey = 0.82 * a, -0.15 * b
    else:
        ex, ey = 0.6 * a, -0.3 * b
    colour, place = mark.split()
    mrgb = MARK_COLOURS[colour]
    er = 5.0
    draw.ellipse([P(ex - er, ey - er), P(ex + er, ey + er)], fill=mrgb if place == "eye" else (255, 255, 255))
    pr = 2.6
    draw.ellipse([P(ex + 0.5 - pr, ey - pr), P(ex + 0.5 + pr, ey + pr)], fill=(10, 10, 10))
    if place != "eye":
        mx, my = {
            "head": (0.3 * a, 0.35 * b),
            "belly": (-0.1 * a, 0.55 * b),
            "back": (-0.05 * a, -0.55 * top_b),
            "tail": (x0 - 0.45 * t_size, 0.0),
        }[place]
        mr = 5.0
        draw.ellipse([P(mx - mr, my - mr), P(mx + mr, my + mr)], fill=mrgb)

    if flip:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, translate=(tx * k, ty * k))
    small = layer.resize((size, size), Image.Resampling.LANCZOS)  # RGBA: Pillow premultiplies alpha
    out = Image.alpha_composite(Image.fromarray(bg).convert("RGBA"), small)
    return out.convert("RGB")


def random_traits(rng: np.random.Generator) -> dict:
    """One independent draw from the full trait vocabulary (the pretraining world)."""
    palette = str(rng.choice(list(PALETTES)))
    marks = marks_for_palette(palette)
    return {
        "body": str(rng.choice(list(BODIES))),
        "palette": palette,
        "pattern": str(rng.choice(PATTERNS)),
        "tail": str(rng.choice(TAILS)),
        "mark": marks[int(rng.integers(len(marks)))],
    }


def sample_pretraining_batch(n: int, rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, list[str]]:
    """``n`` captioned images of random trait combinations (not tied to any tree).

    Captions drop each phrase with p=0.3 and 10% are empty, so the base model also learns the
    unconditional score needed by classifier-free / Taxa guidance (docs/method.md §3).
    """
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        traits = random_traits(rng)
        images[i] = np.asarray(render(traits, rng, size))
        captions.append("" if rng.random() < 0.1 else caption(traits, rng, drop_prob=0.3))
    return images, captions
