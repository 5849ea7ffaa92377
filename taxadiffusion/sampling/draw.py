"""Person-facing CLI: one lineage -> a grid PNG drawn with a trained TaxaDiffusion level::

    taxadiffusion draw --lineage "Class/Order/Family/Genus/Genus epithet" -n 8 --out grid.png

A lineage may stop early (3 names = family, cut_off 2); a name not in the trained taxonomy is a one-line
error with the closest known names. Image ``i`` uses the same seed as image ``i`` of that taxon in mass
generation (``plan.image_seed``), so tile ``i`` equals ``data/generated/<class>/<taxon>/000i.png`` when the
settings match.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import math
from pathlib import Path

import torch

from taxadiffusion.cli import run_tool
from taxadiffusion.config import Experiment, SamplingConfig, load_params
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_path, read_json
from taxadiffusion.core.lineage import NONE, image_seed, lineage_key
from taxadiffusion.models.level import check_level_dir
from taxadiffusion.sampling.level_sampler import NonFiniteSamples, load_sampler

log = logging.getLogger(__name__)


def load_known_lineages(path: str | Path, levels: list[str]) -> list[tuple]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found (run the prepare stage, or pass --taxonomy)")
    data = read_json(path)
    if list(data.get("levels", [])) != list(levels):
        raise UserError(f"{path}: levels {data.get('levels')} differ from the model's levels {list(levels)}")
    return [tuple(str(n) for n in lin) for lin in data.get("lineages", [])]


def _no_match(text: str, wanted: str, names: list[str], children: list[str], level: str, parent: str | None,
              where: str) -> UserError:
    epithet_only = level == "species" and names and " " not in wanted
    close = difflib.get_close_matches(f"{names[-1]} {wanted}" if epithet_only else wanted, children, n=5, cutoff=0.5)
    under = f" under {parent} '{names[-1]}'" if names else ""
    hint = f"closest: {', '.join(close)}" if close else (
        f"known: {', '.join(children[:8])}" + (f" (+{len(children) - 8} more)" if len(children) > 8 else ""))
    return UserError(f"--lineage {text!r}: no {level} '{wanted}'{under} in {where}; {hint}")


def parse_lineage(text: str, known: list[tuple], levels: list[str], where: str) -> list[str]:
    """``"A/B/C"`` -> known names ``[A, B, C]``, matched level by level against the taxonomy.

    Names may contain ``/`` themselves (FishNet: ``Perciformes/Scorpaenoidei``): at each level the longest
    run of pieces that is a known child wins. At species level the epithet alone is accepted too.
    """
    pieces = [p.strip() for p in text.split("/")]
    if not text.strip() or any(not p for p in pieces):
        raise UserError(f"--lineage {text!r}: expected names separated by '/', coarse to fine (e.g. "
                        f"'{'/'.join(levels[:3])}')")
    names: list[str] = []
    pos = 0
    while pos < len(pieces):
        level = len(names)
        if level >= len(levels):
            raise UserError(f"--lineage {text!r}: more names than levels ({', '.join(levels)})")
        children = sorted({lin[level] for lin in known if list(lin[:level]) == names})
        match = None
        for end in range(len(pieces), pos, -1):
            cand = "/".join(pieces[pos:end])
            if cand in children:
                match = (cand, end)
                break
            if levels[level] == "species" and names and f"{names[-1]} {cand}" in children:
                match = (f"{names[-1]} {cand}", end)
                break
        if match is None:
            parent = levels[level - 1] if level else None
            raise _no_match(text, pieces[pos], names, children, levels[level], parent, where)
        names.append(match[0])
        pos = match[1]
    return names


def draw_grid(names: list[str], n: int, model_dir: str | Path, exp: Experiment, sampling: SamplingConfig,
              device=None, zoom: int = 0):
    """``n`` images of one lineage (seeds as in mass generation, from ``exp.seed``) as a PIL grid."""
    levels, seed = exp.levels, exp.seed
    cut_off = len(names) - 1
    check_level_dir(model_dir, levels, cut_off)
    sampler = load_sampler(model_dir, exp.model, sampling, cut_off, device)
    lineage = {lv: (names[i] if i <= cut_off else NONE) for i, lv in enumerate(levels)}
    key = lineage_key(names)
    seeds = [image_seed(seed, key, i) for i in range(n)]
    pixels = sampler.draw([lineage] * n, seeds)
    image = grid(pixels, rows=max(1, math.isqrt(n)))
    zoom = zoom or max(1, 128 // pixels.shape[1])
    if zoom > 1:
        image = image.resize((image.width * zoom, image.height * zoom), 0)  # nearest: keep the pixels
    return image


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taxadiffusion draw",
        description="Draw a grid of images of one lineage with a trained TaxaDiffusion level.",
    )
    p.add_argument("--lineage", required=True, help="names coarse to fine, '/'-separated; may stop early")
    p.add_argument("-n", type=int, default=8, help="number of images (default 8)")
    p.add_argument("--out", default="grid.png", help="grid PNG to write (default grid.png)")
    p.add_argument("--model", default=None, help="trained level folder (default models/<level of the lineage>)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--taxonomy", default=None,
                   help="known lineages (default <model>/taxonomy.json, else data/prepared/taxonomy.json)")
    p.add_argument("--seed", type=int, default=None, help="default: params.yaml seed")
    p.add_argument("--steps", type=int, default=None, help="default num_inference_steps")
    p.add_argument("--scale", type=float, default=None, help="guidance scale (default guidance_scale)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--zoom", type=int, default=0, help="nearest-neighbour upscale (default: tiles >= 128 px)")
    return p


def run(args: argparse.Namespace) -> None:
    for flag, value, low in (("-n", args.n, 1), ("--steps", args.steps, 1), ("--scale", args.scale, 0)):
        if value is not None and value < low:
            raise UserError(f"{flag} {value}: must be >= {low}")
    params = load_params(args.params)
    levels = params.level_names
    given = Path(args.model) / "taxonomy.json" if args.model else None
    taxonomy = Path(args.taxonomy) if args.taxonomy else (
        given if given is not None and given.exists() else Path("data/prepared/taxonomy.json"))
    names = parse_lineage(args.lineage, load_known_lineages(taxonomy, levels), levels, str(taxonomy))
    model_dir = Path(args.model or f"models/{levels[len(names) - 1]}")
    seed = params.seed if args.seed is None else args.seed
    overrides = {k: v for k, v in (("steps", args.steps), ("scale", args.scale)) if v is not None}
    sampling = dataclasses.replace(params.sampling, **overrides)  # re-validated
    exp = Experiment(params.model, levels, seed)
    try:
        image = draw_grid(names, args.n, model_dir, exp, sampling, args.device, args.zoom)
    except NonFiniteSamples as exc:
        given = f" (--scale {args.scale:g} stands for guidance_scale)" if args.scale is not None else ""
        raise UserError(f"{exc}{given}") from None
    with atomic_path(args.out) as tmp:
        image.save(tmp, format="PNG")
    log.info("wrote %s: %d image(s) of %s (%s, %d steps, %s scale %g, seed %d, model %s)", args.out, args.n,
             "/".join(names), sampling.sampler, sampling.steps, sampling.guidance, sampling.scale, seed, model_dir)


def main(argv: list[str] | None = None) -> None:
    run_tool(run, parser(), argv)

def grid(images_uint8: torch.Tensor, rows: int):
    """uint8 ``[N, H, W, 3]`` -> a PIL grid with ``rows`` rows."""
    from PIL import Image

    n, h, w, _ = images_uint8.shape
    cols = (n + rows - 1) // rows
    canvas = torch.full((rows * h, cols * w, 3), 255, dtype=torch.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = images_uint8[k]
    return Image.fromarray(canvas.numpy())


if __name__ == "__main__":
    main()
