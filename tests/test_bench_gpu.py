"""benchmarks/bench_gpu.py: its CPU smoke mode through the real entry point prints every row, and its FLOP count
(``torch.utils.flop_counter``) agrees with an independent analytic count from module shapes (2 x MACs of every
Conv2d / Linear + the two attention matmuls; ``gpu.flops.analytic_flops``) on the tests' miniature SD1.5 UNet and
on the full SD1.5 UNet / VAE encoder built on the meta device, and reproduces the issue's SD1.5 figures."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from helpers.sd15 import make_mini_sd15

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-3  # relative; the two counts are expected to be equal (same ops, counted two ways)


def _flops_module():
    spec = importlib.util.spec_from_file_location("bench_gpu_flops", REPO / "benchmarks" / "gpu" / "flops.py")
    module = importlib.util.module_from_spec(spec)  # a benchmark helper, loaded by path (benchmarks/ is no package)
    spec.loader.exec_module(module)
    return module


def _agree(counted: int, analytic: int) -> None:
    assert counted > 0 and abs(counted - analytic) <= TOLERANCE * analytic, (counted, analytic)


def test_flop_count_of_the_miniature_unet_matches_the_analytic_count(tmp_path):
    flops = _flops_module()
    unet = UNet2DConditionModel.from_pretrained(make_mini_sd15(tmp_path / "mini") / "unet").eval()
    x, t = torch.randn(3, 4, 4, 4), torch.tensor([10, 500, 900])
    ctx = torch.randn(3, 32, unet.config.cross_attention_dim)
    with torch.no_grad():
        _, counted = flops.count_flops(lambda: unet(x, t, ctx))
    _agree(counted, flops.analytic_flops(unet, lambda: unet(x, t, ctx)))


def test_flop_count_of_full_sd15_on_meta_matches_the_analytic_count():
    flops = _flops_module()
    sd = REPO / "assets" / "sd15"
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sd / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(sd / "vae"))
    x, t, ctx = (torch.randn(2, 4, 64, 64, device="meta"), torch.tensor([1, 2], device="meta"),
                 torch.randn(2, 77, 768, device="meta"))
    _agree(flops.count_flops(lambda: unet(x, t, ctx))[1], flops.analytic_flops(unet, lambda: unet(x, t, ctx)))
    image = torch.randn(1, 3, 512, 512, device="meta")
    _agree(flops.count_flops(lambda: vae.encode(image))[1], flops.analytic_flops(vae, lambda: vae.encode(image)))


def test_sd15_figures_are_the_issues_and_the_estimates_follow_from_them():
    flops = _flops_module()
    fig = flops.sd15_figures()
    issue = {"unet_forward": 803, "train_frozen_unet": 1669, "vae_encode": 1117, "vae_decode": 2515}
    assert {k: round(fig[k]) for k in issue} == issue
    assert fig["unet_forward"] < fig["train_frozen_unet"] < fig["train_lora"] < 1.03 * fig["train_frozen_unet"]
    rows = {what: hours for what, _, hours in flops.cost_estimates(fig, 989.0, 0.4)}
    level0 = 250_000 * 192 * fig["train_lora"] * 1e9 / (0.4 * 989e12) / 3600
    assert rows["train level 0 (LoRA + module 0)"] == pytest.approx(level0)
    gen = 16_600 * (500 * fig["unet_forward"] + fig["vae_decode"]) * 1e9 / (0.4 * 989e12) / 3600
    assert rows["FishNet generation (Table S2)"] == pytest.approx(gen)


@pytest.mark.slow  # the whole benchmark on the miniature SD1.5 on CPU: a fresh process, ~1-2 min on 2 shared cores
def test_smoke_mode_prints_every_row():
    # this checkout's package first: a script run by path imports from its own folder, not the repository root
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--smoke", "--peak-tflops", "1"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "CPU SMOKE (miniature SD1.5; not a GPU figure)" in out
    rows = [line for line in out.splitlines() if line.startswith("| (")]
    expected = ["(a) train level 0 (LoRA + module 0)", "(a) train level 4 'species' (module 4 only)",
                "(b) generate, 2 PNDM steps, batch 2", "(c) UNet forward (sampler's UNet), batch 8,",
                "(c) UNet forward (sampler's UNet), batch 32,", "(c) UNet forward (sampler's UNet), batch 128,",
                "(d) base encode (VAE float32), batch 2"]
    for name in expected:
        assert sum(name in row for row in rows) == 1, (name, rows)
    assert len(rows) == len(expected)
    for row in rows:  # every rate and MFU is a number (the peak was given); (a) and (b) have a reference side
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and cells[5].endswith("%"), row
        if row.startswith("| (a)") or row.startswith("| (b)"):
            assert float(cells[2]) > 0 and cells[3].endswith("x") and cells[6].endswith("%"), row
    for figure in ("803.3 GFLOP", "1,669.2 GFLOP", "1,116.7 GFLOP", "2,514.5 GFLOP", "ESTIMATE"):
        assert figure in out
