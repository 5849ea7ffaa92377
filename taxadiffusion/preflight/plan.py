"""The data as ``prepare`` would read it, the generation plan it implies, and the disk the pipeline will fill.

The annotation file is read through ``prepare``'s own code (:func:`taxadiffusion.data.prepare.table_without_images`:
the reader, whose first check is the header against the columns ``levels`` need, canonical names, the row filters and
the per-species split), without opening an image, so a missing column, a ``levels`` list the data contradicts or a
class that can have no test image is known before the image root is walked. The built-in synthetic world is written
by ``synthesize`` after this stage and is not read here (``prepare`` checks it).

Disk, an upper bound (every row's image kept, PNG taken as raw RGB), counted twice because DVC keeps a copy of every
cached output (``.dvc/cache``, unless its cache links files): shards ``images x resolution^2 x 3`` bytes; SD1.5
latents (``model.cache_latents``) ``train images x 4 x (resolution / vae factor)^2 x 2 bytes x 2`` (fp16 mean and
std); generated images ``plan images x resolution^2 x 3`` for ``generate`` and each comparison method that draws
its own (``methods`` other than ``taxadiffusion``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from taxadiffusion.config import Params
from taxadiffusion.core.errors import UserError
from taxadiffusion.data.prepare import table_without_images
from taxadiffusion.sampling.plan import PlanRule, make_plan

DVC_COPIES = 2  # the workspace file and its copy in .dvc/cache


@dataclass
class DataFacts:
    """What reading the annotation file found; counts are None when it was not read (synthetic, or a problem)."""

    problems: list = field(default_factory=list)
    images: Optional[int] = None  # rows kept before the image checks
    train: Optional[int] = None
    generated: Optional[int] = None  # images the generation plan draws (one method)


def data_facts(params: Params) -> DataFacts:
    ds = params.dataset
    if ds.name == "synthetic":
        return DataFacts()
    facts = DataFacts()
    if not Path(ds.images).is_dir():
        facts.problems.append(f"dataset.images={str(ds.images)!r}: image folder not found (set dataset.images to "
                              "your image root)")
    try:
        table = table_without_images(ds, params.prepare, params.level_names)
    except UserError as exc:
        facts.problems.append(str(exc))
        return facts
    facts.images, facts.train = len(table), int((table["split"] == "train").sum())
    try:
        plan = make_plan(table[table["split"] == "test"], params.level_names, PlanRule.of(params.generate),
                         params.seed, where=str(ds.metadata))
        facts.generated = int(plan["n_images"].sum())
    except UserError as exc:
        facts.problems.append(str(exc))
    return facts


@dataclass(frozen=True)
class DiskPlan:
    """Bytes each kind of output needs in the workspace (one copy; :attr:`total` counts DVC's too)."""

    shards: int
    latents: int
    generated: int

    @property
    def total(self) -> int:
        return DVC_COPIES * (self.shards + self.latents + self.generated)


def disk_plan(params: Params, facts: DataFacts, vae_scale: Optional[int]) -> Optional[DiskPlan]:
    """The estimate of the module docstring; None when the data could not be counted."""
    if facts.images is None:
        return None
    res = params.dataset.resolution
    image = res * res * 3
    latents = 0
    if params.model.preset == "sd15" and params.model.cache_latents and vae_scale:
        latents = facts.train * 4 * (res // vae_scale) ** 2 * 2 * 2
    drawing = 1 + len([m for m in params.methods if m != "taxadiffusion"])
    return DiskPlan(facts.images * image, latents, (facts.generated or 0) * image * drawing)


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def disk_lines(plan: Optional[DiskPlan], where: str | Path = ".") -> tuple[str, Optional[str]]:
    """(the estimate as one log line, a problem when it exceeds the free space of ``where``'s file system)."""
    free = shutil.disk_usage(where).free
    if plan is None:
        return f"disk: {gb(free)} free (nothing to estimate before the data is read)", None
    line = (f"disk: shards <= {gb(plan.shards)}, latents {gb(plan.latents)}, generated images <= {gb(plan.generated)}"
            f"; x{DVC_COPIES} with the DVC cache: {gb(plan.total)} needed, {gb(free)} free on {Path(where).resolve()}")
    if plan.total <= free:
        return line, None
    return line, (f"disk: the planned outputs need up to {gb(plan.total)} (shards {gb(plan.shards)}, latents "
                  f"{gb(plan.latents)}, generated images {gb(plan.generated)}, x{DVC_COPIES} with the DVC cache) but "
                  f"only {gb(free)} are free on {Path(where).resolve()}; free some space, or lower "
                  "generate.images_per_species / dataset.resolution")
