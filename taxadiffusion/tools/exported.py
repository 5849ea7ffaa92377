"""An exported model folder (``taxadiffusion export``) loaded anywhere, by the code ``generate`` samples with.

The folder carries what drawing needs besides this package: the trained level (LoRA, condition module,
``train_config.json``), the known lineages (``taxonomy.json``), ``export.json`` (levels, seed, sampling settings,
the base model, file hashes) and, for the ``tiny`` preset, the base itself (``base/``; SD1.5 is named by its hub id
or folder). Image ``i`` of a lineage uses the seed of image ``i`` of that taxon in ``generate``, so with the recorded
settings the pixels are those of ``data/generated/`` (``load_sampler``, the same sampler as ``generate``)::

    from taxadiffusion.tools.exported import draw_export
    draw_export("path/to/export", "Class/Order/Family/Genus/Genus epithet", n=4).save("grid.png")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from taxadiffusion.config import Experiment, ModelConfig, SamplingConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import read_json, sha256_file

EXPORT_FILE = "export.json"
FORMAT = "taxadiffusion-export/1"
BASE_DIR = "base"  # the bundled base model (tiny preset), relative to the folder


@dataclass(frozen=True)
class Exported:
    """What ``export.json`` says, with the base resolved to a location on this machine."""

    folder: Path
    experiment: Experiment
    sampling: SamplingConfig
    lineages: list


def load_export(folder: str | Path, base: Optional[str] = None) -> Exported:
    """Read and check an exported folder: its format, and every file against the hash recorded at export.
    ``base`` replaces the recorded base model (an SD1.5 hub id or local folder of your own)."""
    folder = Path(folder)
    path = folder / EXPORT_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; {folder} is not a folder written by `taxadiffusion export`")
    info = read_json(path)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"{path}: format {info.get('format') if isinstance(info, dict) else None!r}; expected {FORMAT}")
    for name, digest in info["files"].items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            raise UserError(f"{folder / name}: missing or changed since export (sha256 differs from {path})")
    model = dict(info["model"])
    if base is not None:
        model["pretrained"] = base
    elif info["base_bundled"]:
        model["pretrained"] = str((folder / BASE_DIR).resolve())
    experiment = Experiment(ModelConfig(**model), list(info["levels"]), int(info["seed"]))
    taxonomy = read_json(folder / "taxonomy.json")
    return Exported(folder, experiment, SamplingConfig(**info["sampling"]), taxonomy["lineages"])


def draw_export(folder: str | Path, lineage: str | list, n: int = 4, *, seed: Optional[int] = None,
                base: Optional[str] = None, device=None, zoom: int = 1):
    """A PIL grid of ``n`` images of ``lineage`` ("Class/Order/..." or a list of names, coarse to fine; it may
    stop early), drawn as ``generate`` draws them (its seeds and settings; ``seed`` replaces the recorded one)."""
    from taxadiffusion.sampling.draw import draw_grid, parse_lineage

    model = load_export(folder, base)
    exp = model.experiment if seed is None else dataclasses.replace(model.experiment, seed=seed)
    text = lineage if isinstance(lineage, str) else "/".join(lineage)
    known = [tuple(str(x) for x in lin) for lin in model.lineages]
    names = parse_lineage(text, known, exp.levels, str(Path(folder) / "taxonomy.json"))
    return draw_grid(names, n, model.folder, exp, model.sampling, device=device, zoom=zoom)
