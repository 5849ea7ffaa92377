"""Every generated batch is checked finite before it is written: a sampling run that diverges (``guidance_scale:
1e308``, a half-precision overflow) is a one-line error naming the taxa, the images and the likely cause, and
nothing of that batch is written (to_uint8 would have turned the nan/inf into black PNGs, with exit status 0)."""

from __future__ import annotations

import os
import re
import sys

import pytest
import torch
import yaml
from helpers.models import TINY_BASE, lineage, make_level_dir, make_prepared, tiny_model_config
from helpers.params import make_params, params_dict
from helpers.stages import run_stage_here

from taxadiffusion.cli import main as taxadiffusion_main
from taxadiffusion.sampling.level_sampler import NonFiniteSamples, load_sampler

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

ROWS = [(lineage("Aves", "Passeriformes", "Corvidae", "Corvus", e), "test") for e in ("corax", "corone")]
TAXON = "Aves/Passeriformes/Corvidae/Corvus/Corvus corax"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite")
    make_prepared(root / "prepared", ROWS)
    make_level_dir(root / "models" / "species", level="species")
    return root


def _params(scale: float) -> dict:
    return params_dict({"seed": 0, "num_inference_steps": 2, "guidance_scale": scale,
                        "model.pretrained": str(TINY_BASE),
                        "generate": {"batch_size": 4, "images_per_species": 2, "images_per_species_capped": 2}})


def test_generate_stage_stops_on_a_diverged_batch_and_writes_none_of_it(world, tmp_path, monkeypatch, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params(1e308), sort_keys=False))
    out = tmp_path / "generated"
    code, err = run_stage_here("generate.py", "--params", params, "--model", world / "models" / "species",
                               "--prepared", world / "prepared", "--out", out, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2, err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    line = re.split(r"[\r\n]+", err.strip())[-1]  # before it: the progress bar only
    assert line.startswith(f"error: {out}: non-finite latents (nan/inf) drawing 4 image(s) of {TAXON}, "), line
    assert "likely cause: guidance_scale=1e+308 too large for this model; nothing of this batch is written (" in line
    assert re.search(r"\(Aves/Corvus corax/0000\.png \(\+3 more\)\)$", line), line
    assert not list(out.rglob("*.png")), "a diverged batch was written"


def test_draw_tool_stops_on_a_diverged_grid_and_writes_no_file(world, tmp_path, monkeypatch, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params(2.0), sort_keys=False))
    grid = tmp_path / "grid.png"
    argv = ["draw", "--lineage", "Aves/Passeriformes/Corvidae/Corvus/corax", "-n", "2", "--steps", "2",
            "--scale", "1e308", "--model", str(world / "models" / "species"), "--params", str(params),
            "--taxonomy", str(world / "prepared" / "taxonomy.json"), "--out", str(grid), "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", ["taxadiffusion", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        taxadiffusion_main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    line = re.split(r"[\r\n]+", err.strip())[-1]  # before it: the weights' loading bar only
    assert line == (f"error: non-finite latents (nan/inf) drawing 2 image(s) of {TAXON}; likely cause: "
                    "guidance_scale=1e+308 too large for this model; nothing of this batch is written "
                    "(--scale 1e+308 stands for guidance_scale)"), line
    assert not grid.exists()


def test_a_decoder_overflow_is_caught_too(world, monkeypatch):
    """Finite latents that the VAE turns into nan (an fp16 decoder on a GPU): the decoded batch is checked too."""
    sampling = make_params(_params(2.0)).sampling
    sampler = load_sampler(world / "models" / "species", tiny_model_config(), sampling, cut_off=4, device="cpu")
    lin = lineage("Aves", "Passeriformes", "Corvidae", "Corvus", "corax")
    assert sampler.draw([lin], [1]).shape[0] == 1  # the same sampler draws finite images

    def overflowing(latents):
        return torch.full((latents.shape[0], 3, 32, 32), float("nan"))

    monkeypatch.setattr(sampler.model.base, "decode_latents", overflowing)
    with pytest.raises(NonFiniteSamples) as exc:
        sampler.draw([lin, lin], [1, 2])
    assert str(exc.value) == (f"non-finite decoded images (nan/inf) drawing 2 image(s) of {TAXON}; likely cause: the "
                              "VAE decoder overflowing (guidance_scale=2 too large for this model?); nothing of this "
                              "batch is written")
