"""The built-in synthetic taxonomy world: a seeded tree of animals and 32 px images of them.

It stands in for FishNet (docs/method.md §4) so the whole pipeline runs on a CPU in minutes.
Every taxonomic level adds visual traits that all of its descendants share, so a model that learns
coarse levels first (TaxaDiffusion's progressive training) has something real to learn at each step:

    class  -> body plan        (silhouette)
    order  -> palette          (main + secondary colour)
    family -> pattern          (stripes, bands, spots, ...)
    genus  -> tail shape
    species-> a small mark     (a 2-3 px dot of one colour at head / belly / back / tail, or the iris)

Siblings never share the trait their level adds; different branches may reuse traits lower down
(as real taxa converge). The tree is skewed like FishNet: one big class (~24 species), one class of
5 species (like Dipneusti), the rest in between, and a long tail of images per species.

The traits and the renderer live in ``animals.py``; this module builds the tree and writes the dataset.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from taxadiffusion.config import SynthesizeConfig
from taxadiffusion.core import files
from taxadiffusion.core.errors import UserError
from taxadiffusion.data.animals import BODIES, PALETTES, PATTERNS, TAILS, marks_for_palette, render

LEVELS = ["class", "order", "family", "genus", "species"]
CSV_COLUMNS = ["image", *LEVELS]

# --------------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------------

_ONSETS = ["b", "c", "d", "g", "l", "m", "n", "p", "r", "s", "t", "v", "x", "z",
           "ch", "ph", "th", "cr", "pl", "st", "tr", "gn", "rh"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "y", "io", "eu"]
_CODAS = ["", "", "", "n", "r", "s", "l", "nth", "x"]
_SUFFIX = {
    "class": ["i", "ia", "ii", "ia"],
    "order": ["iformes"],
    "family": ["idae"],
    "genus": ["us", "a", "ichthys", "odon", "ops", "ella", "ium"],
    "species": ["us", "a", "um", "is", "ensis", "i", "ae", "oides"],
}


class _Namer:
    """Pseudo-Latin names, unique per level (class ends -i/-ia, order -iformes, family -idae, ...)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: dict[str, set[str]] = {lv: set() for lv in LEVELS}

    def _stem(self) -> str:
        r = self.rng
        n = int(r.integers(2, 4))
        parts = [str(r.choice(_ONSETS)) + str(r.choice(_VOWELS)) for _ in range(n)]
        return "".join(parts) + str(r.choice(_CODAS))

    def __call__(self, level: str, genus: str = "") -> str:
        for _ in range(1000):
            stem = self._stem().rstrip("aeiouy")
            word = stem + str(self.rng.choice(_SUFFIX[level]))
            name = f"{genus} {word.lower()}" if level == "species" else word.capitalize()
            if len(stem) >= 2 and name not in self.used[level]:
                self.used[level].add(name)
                return name
        raise RuntimeError(f"could not find a new {level} name")  # pragma: no cover


@dataclass
class Taxon:
    """One species: its lineage (level -> name), all inherited traits, and how many images it gets."""

    lineage: dict
    traits: dict
    n_images: int = 0

    @property
    def name(self) -> str:
        return self.lineage["species"]


@dataclass
class World:
    seed: int
    species: list[Taxon] = field(default_factory=list)
    levels: list[str] = field(default_factory=lambda: list(LEVELS))

    def tree(self) -> list[dict]:
        """Nested ``[{name, level, trait, children}]`` with the trait each taxon adds."""
        level_trait = {"class": "body", "order": "palette", "family": "pattern", "genus": "tail", "species": "mark"}
        roots: list[dict] = []
        index: dict[tuple, dict] = {}
        for sp in self.species:
            siblings = roots
            path: tuple = ()
            for lv in LEVELS:
                path = (*path, sp.lineage[lv])
                node = index.get(path)
                if node is None:
                    key = level_trait[lv]
                    node = {"level": lv, "name": sp.lineage[lv], key: sp.traits[key]}
                    if lv == "species":
                        node["n_images"] = sp.n_images
                    else:
                        node["children"] = []
                    index[path] = node
                    siblings.append(node)
                siblings = node.get("children", [])
        return roots

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "levels": self.levels,
            "tree": self.tree(),
            "species": [asdict(sp) for sp in self.species],
        }


def _n_children(rng, n: int, cap: int, need: int = 1) -> int:
    """How many children a group of ``n`` species splits into (>=2 when it can, <= cap, >= need)."""
    hi = max(need, min(cap, n))
    lo = min(hi, max(need, 2 if n >= 3 else 1))
    return int(rng.integers(lo, hi + 1))


def _partition(rng, n: int, k: int, max_part: int | None = None) -> list[int]:
    """Split n into k positive parts uniformly at random (each part <= max_part when given)."""
    if k <= 1:
        return [n]
    for _ in range(100):
        cuts = np.sort(rng.choice(n - 1, size=k - 1, replace=False)) + 1
        parts = [int(v) for v in np.diff(np.concatenate([[0], cuts, [n]]))]
        if max_part is None or max(parts) <= max_part:
            return parts
    return [n // k + (i < n % k) for i in range(k)]  # even split: always fits when k * max_part >= n


def _class_sizes(rng, n_classes: int) -> list[int]:
    """FishNet-like skew: one class of ~24 species, one of exactly 5 (Dipneusti), the rest 7-14."""
    sizes = [24, 5] + [int(rng.integers(7, 15)) for _ in range(n_classes - 2)]
    return sizes[:n_classes]


def _images_per_species(rng, n_species: int, lo: int, hi: int) -> list[int]:
    """Long tail on [lo, hi]: evenly spaced quantiles through a convex curve, shuffled over species.

    Quantile spacing (not i.i.d. draws) guarantees a few species with 1-5 images for every seed.
    """
    q = (np.arange(n_species) + 0.5) / n_species
    counts = np.rint(lo + (hi - lo) * q**1.2).astype(int)
    return [int(c) for c in rng.permutation(counts)]


def _check_config(n_classes, images_per_species) -> tuple[int, int]:
    if not isinstance(n_classes, int) or not 1 <= n_classes <= len(BODIES):
        raise UserError(f"params.yaml: synthesize.n_classes must be an integer in 1..{len(BODIES)}, got {n_classes!r}")
    try:
        lo, hi = (int(v) for v in images_per_species)
    except (TypeError, ValueError):
        raise UserError(
            f"params.yaml: synthesize.images_per_species must be [min, max], got {images_per_species!r}"
        ) from None
    if not 1 <= lo <= hi:
        raise UserError(f"params.yaml: synthesize.images_per_species needs 1 <= min <= max, got [{lo}, {hi}]")
    return lo, hi


def build_world(seed: int, n_classes: int = 4, images_per_species=(1, 60)) -> World:
    """Generate the taxonomy tree, its traits and the number of images per species (deterministic)."""
    lo, hi = _check_config(n_classes, images_per_species)
    rng = np.random.default_rng([int(seed), 7919])
    namer = _Namer(rng)
    world = World(seed=int(seed))
    bodies = [str(v) for v in rng.choice(list(BODIES), size=n_classes, replace=False)]
    for c_size, body in zip(_class_sizes(rng, n_classes), bodies):
        cname = namer("class")
        n_ord = _n_children(rng, c_size, cap=4)
        palettes = rng.choice(list(PALETTES), size=n_ord, replace=False)
        for o_size, palette in zip(_partition(rng, c_size, n_ord), palettes):
            oname = namer("order")
            n_marks = len(marks_for_palette(str(palette)))
            n_fam = _n_children(rng, o_size, cap=3)
            patterns = rng.choice(PATTERNS, size=n_fam, replace=False)
            for f_size, pattern in zip(_partition(rng, o_size, n_fam), patterns):
                fname = namer("family")
                # Every genus needs a distinct mark per species: enough genera for the marks available.
                n_gen = _n_children(rng, f_size, cap=3, need=math.ceil(f_size / n_marks))
                tails = rng.choice(TAILS, size=n_gen, replace=False)
                for g_size, tail in zip(_partition(rng, f_size, n_gen, max_part=n_marks), tails):
                    gname = namer("genus")
                    marks = rng.choice(marks_for_palette(str(palette)), size=g_size, replace=False)
                    for mark in marks:
                        world.species.append(
                            Taxon(
                                lineage={
                                    "class": cname,
                                    "order": oname,
                                    "family": fname,
                                    "genus": gname,
                                    "species": namer("species", genus=gname),
                                },
                                traits={
                                    "body": body,
                                    "palette": str(palette),
                                    "pattern": str(pattern),
                                    "tail": str(tail),
                                    "mark": str(mark),
                                },
                            )
                        )
    for sp, n in zip(world.species, _images_per_species(rng, len(world.species), lo, hi)):
        sp.n_images = n
    return world


def image_rng(seed: int, species_index: int, image_index: int) -> np.random.Generator:
    """The pose/background stream of one image: depends only on (seed, species, image)."""
    return np.random.default_rng([int(seed), int(species_index), int(image_index)])


def image_name(taxon: Taxon, image_index: int) -> str:
    return f"{taxon.lineage['class']}/{taxon.name.replace(' ', '_')}_{image_index:03d}.png"


def write_dataset(cfg: SynthesizeConfig, out: str | Path) -> dict:
    """Write ``annotations.csv``, ``images/<class>/<name>.png`` and ``world.json`` under ``out``.

    The image folder is built next to the old one and swapped in, so stale images from a previous
    seed never survive and a killed run leaves the previous dataset intact.
    """
    world = build_world(cfg.seed, cfg.n_classes, cfg.images_per_species)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    total = sum(sp.n_images for sp in world.species)
    with files.atomic_dir(out / "images") as staging, tqdm(total=total, desc="synthesize", unit="img") as bar:
        for s_idx, sp in enumerate(world.species):
            for i in range(sp.n_images):
                img = render(sp.traits, image_rng(cfg.seed, s_idx, i), cfg.image_size)
                rel = image_name(sp, i)
                path = staging / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path, format="PNG")
                rows.append([rel, *(sp.lineage[lv] for lv in LEVELS)])
                bar.update(1)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    files.write_text(out / "annotations.csv", buf.getvalue())
    files.write_json(out / "world.json", world.to_json())

    per_class: dict[str, dict] = {}
    for sp in world.species:
        c = per_class.setdefault(sp.lineage["class"], {"species": 0, "images": 0})
        c["species"] += 1
        c["images"] += sp.n_images
    return {
        "classes": len(per_class),
        "orders": len({sp.lineage["order"] for sp in world.species}),
        "families": len({sp.lineage["family"] for sp in world.species}),
        "genera": len({sp.lineage["genus"] for sp in world.species}),
        "species": len(world.species),
        "images": len(rows),
        "per_class": per_class,
    }
