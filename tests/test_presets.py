"""The paper presets (presets/*.yaml): complete, valid params files with the paper's settings."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.params import REPO

from taxadiffusion.config import load_params, read_params_dict

PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def _keys(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("levels", "synonyms", "columns"):
            out |= _keys(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def test_there_is_a_preset_per_paper_dataset():
    assert [p.stem for p in PRESETS] == ["bioscan1m", "fishnet", "inat2021"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_is_valid_and_has_the_papers_settings(path):
    assert _keys(read_params_dict(path)) == _keys(read_params_dict(REPO / "params.yaml")), \
        "keys drifted from params.yaml"
    p = load_params(path)
    assert p.dataset.name == path.stem and p.dataset.resolution == 512
    assert p.model.preset == "sd15" and (p.model.cond_layers, p.model.cond_heads, p.model.cond_ff) == (2, 8, 2048)
    assert (p.train.steps, p.train.lr_first, p.train.lr) == (250_000, 1e-4, 1e-5)
    assert (p.sampling.steps, p.sampling.scale, p.sampling.sampler, p.sampling.guidance) == \
        (250, 6.0, "pndm", "taxaguide")
    assert (p.generate.max_species_per_class, p.generate.images_per_species_capped, p.generate.images_per_species) == \
        (400, 15, 50)
    assert len(p.level_names) == (7 if path.stem == "inat2021" else 5)


@pytest.mark.slow
def test_fishnet_preset_parameter_count_is_table_s1():
    out = subprocess.run([sys.executable, "-m", "taxadiffusion", "paramcount",
                          "--params", str(REPO / "presets" / "fishnet.yaml")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("TaxaDiffusion"))
    assert "915,457,988" in row and "55,937,024" in row and row.rstrip().endswith("yes")
