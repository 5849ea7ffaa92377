"""TaxaGuide arithmetic against a stub UNet with known outputs, per-image noise, and the fixed-shape UNet
calls that make pixels independent of the batch."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers.models import lineage, make_level_dir, tiny_model_config

from taxadiffusion.config import SamplingConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.models.base import load_base
from taxadiffusion.models.taxa import load_taxa_model
from taxadiffusion.sampling.denoise import guided_step_output, initial_noise, make_scheduler, sample
from taxadiffusion.sampling.level_sampler import FixedRowsUNet, fixed_rows, load_sampler, prepare_unet_for_sampling

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SCHED = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
         "prediction_type": "epsilon", "clip_sample": False, "steps_offset": 1, "set_alpha_to_one": False}


class StubUNet(torch.nn.Module):
    """eps = a fixed function of the context and the latents: ``0.5 * x + mean(context) * (1 + t / 1000)``."""

    def __init__(self):
        super().__init__()
        self.calls = []  # (batch size, context) per call

    def forward(self, x, t, context):
        self.calls.append((x.shape[0], context.clone()))
        return SimpleNamespace(sample=0.5 * x + context.mean(dim=(1, 2))[:, None, None, None] * (1 + t / 1000))


def _eps(x, t, ctx):
    return 0.5 * x + ctx.mean(dim=(1, 2))[:, None, None, None] * (1 + t / 1000)


def contexts(b=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 4, 8, generator=g), torch.randn(b, 4, 8, generator=g)


def test_guided_step_output_is_taxaguide_in_one_batched_call():
    cond, neg = contexts()
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(700)
    unet = StubUNet()
    out = guided_step_output(unet, x, t, cond, neg, 6.0, guided=True)
    e_neg, e_cond = _eps(x, t, neg), _eps(x, t, cond)
    torch.testing.assert_close(out, e_neg + 6.0 * (e_cond - e_neg), rtol=0, atol=1e-6)
    assert len(unet.calls) == 1 and unet.calls[0][0] == 6  # both branches in ONE UNet call
    assert torch.equal(unet.calls[0][1], torch.cat([neg, cond]))
    # scale 1 is the conditional estimate; unguided steps run the conditional branch alone
    torch.testing.assert_close(guided_step_output(unet, x, t, cond, neg, 1.0, True), e_cond, rtol=0, atol=1e-6)
    unguided = guided_step_output(unet, x, t, cond, neg, 6.0, guided=False)
    assert torch.equal(unguided, e_cond) and unet.calls[-1][0] == 3


def test_one_sample_step_matches_the_formula_through_the_scheduler():
    cond, neg = contexts(2)
    seeds, shape, scale = [11, 12], (2, 4, 4), 6.0
    out = sample(StubUNet(), make_scheduler("ddim", SCHED), cond, neg, seeds, shape, 1, scale)
    ref = make_scheduler("ddim", SCHED)
    ref.set_timesteps(1)
    t = ref.timesteps[0]
    x0 = initial_noise(shape, seeds, "cpu") * ref.init_noise_sigma
    eps = _eps(x0, t, neg) + scale * (_eps(x0, t, cond) - _eps(x0, t, neg))
    torch.testing.assert_close(out, ref.step(eps, t, x0).prev_sample, rtol=0, atol=1e-6)


def test_guidance_range_limits_the_guided_steps():
    cond, neg = contexts(2)
    unet = StubUNet()
    steps = []
    sample(unet, make_scheduler("ddim", SCHED), cond, neg, [1, 2], (2, 4, 4), 4, 6.0, guidance_range=(0.5, 1.0),
           on_step=lambda: steps.append(len(unet.calls)))
    assert [b for b, _ in unet.calls] == [2, 2, 4, 4]  # steps 0,1 conditional only; 2,3 guided (i >= 0.5 * 4)
    assert steps == [1, 2, 3, 4]  # on_step after each step's (one) UNet call


def test_initial_noise_is_per_image():
    both = initial_noise((3, 4, 4), [5, 9], "cpu")
    assert torch.equal(both[1], initial_noise((3, 4, 4), [9], "cpu")[0])
    assert not torch.equal(both[0], both[1])


def test_every_sampler_of_the_vocabulary_has_a_scheduler_and_only_those():
    """`generate.sampler` is validated once, when params.yaml is read; make_scheduler serves exactly that list."""
    from taxadiffusion.config import SAMPLERS, section_from_dict
    from taxadiffusion.sampling.denoise import SCHEDULERS

    assert tuple(SCHEDULERS) == SAMPLERS
    for name in SAMPLERS:
        assert make_scheduler(name, SCHED).config.num_train_timesteps == SCHED["num_train_timesteps"]
    generate = yaml.safe_load((REPO / "params.yaml").read_text())["generate"]
    with pytest.raises(UserError, match="generate.sampler='euler': expected one of pndm, ddpm, ddim, dpmsolver"):
        section_from_dict("generate", {**generate, "sampler": "euler"})


def test_unipc_draws_a_trained_level_with_taxaguide(tmp_path):
    """`generate.sampler: unipc` (diffusers' UniPCMultistepScheduler) on a trained level: finite images, one guided
    fixed-shape UNet call per step, and an image's pixels depend on its seed, not on its batch."""
    sampling = SamplingConfig(sampler="unipc", steps=4, scale=2.0, guidance="taxaguide", guidance_range=(0.0, 1.0),
                              dtype="fp32")
    sampler = load_sampler(make_level_dir(tmp_path / "species"), tiny_model_config(), sampling, cut_off=4,
                           device="cpu")
    lin = lineage("Aves", "Passeriformes", "Corvidae", "Corvus", "corax")
    images = sampler.draw([lin, lin], [1, 2])
    assert images.shape[0] == 2 and images.dtype == torch.uint8
    assert sampler.unet.calls == 4  # 4 steps x one call of 4 rows (2 images x TaxaGuide's 2 branches)
    assert not torch.equal(images[0], images[1])
    assert torch.equal(sampler.draw([lin], [2])[0], images[1])


def test_fixed_rows_calls_have_one_shape_and_keep_order():
    shapes = []

    def fn(a, b):
        shapes.append(a.shape[0])
        return a * 2 + b

    a, b = torch.arange(11.0)[:, None], torch.ones(11, 1)
    assert torch.equal(fixed_rows(fn, 4, a, b), a * 2 + b)
    assert shapes == [4, 4, 4]


def test_real_unet_rows_do_not_depend_on_the_batch():
    """The property the generator relies on: with fixed-shape calls, a row's output is bit-identical whether
    it comes alone or with 6 others (plain batched calls differ in the last bits on CPU)."""
    unet = load_base(tiny_model_config()).unet
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(7, 12, 16, 16, generator=g), torch.randn(7, 32, 64, generator=g)
    t = torch.tensor(500)
    wrapped = FixedRowsUNet(unet, rows=4)
    with torch.no_grad():
        batched = wrapped(x, t, ctx).sample
        alone = torch.cat([wrapped(x[i : i + 1], t, ctx[i : i + 1]).sample for i in (0, 6)])
    assert torch.equal(batched[[0, 6]], alone)
    assert wrapped.calls == 2 + 2


def test_merged_lora_unet_matches_the_loaded_adapter(tmp_path):
    """Sampling folds the LoRA into the weights: same outputs as the adapter, and not the bare base."""
    model = load_taxa_model(make_level_dir(tmp_path / "species"), tiny_model_config())
    g = torch.Generator().manual_seed(0)
    x, ctx, t = torch.randn(2, 12, 16, 16, generator=g), torch.randn(2, 32, 64, generator=g), torch.tensor(300)
    with torch.no_grad():
        adapter = model.base.unet(x, t, ctx).sample
        prepare_unet_for_sampling(model.base.unet)
        merged = FixedRowsUNet(model.base.unet, rows=2)(x, t, ctx).sample
        bare = load_base(tiny_model_config()).unet(x, t, ctx).sample
    torch.testing.assert_close(merged, adapter, rtol=1e-4, atol=1e-5)
    assert (adapter - bare).abs().max() > 1e-3  # the LoRA changes the UNet


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loading_for_sampling_prints_no_float32_modules_warning(tmp_path, dtype):
    """diffusers warned "modules that should be kept in float32: []" on every generate, figures and draw."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # diffusers' loggers write to their own stderr handler, not to pytest's capture
    logging.getLogger("diffusers").addHandler(handler)
    try:
        model = load_taxa_model(make_level_dir(tmp_path / "species"), tiny_model_config(), dtype=dtype)
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert next(model.base.unet.parameters()).dtype == dtype
    assert next(model.conditioner.parameters()).dtype == dtype
    assert not [r.getMessage() for r in records if "kept in float32" in r.getMessage()]
