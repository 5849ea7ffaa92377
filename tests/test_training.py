"""Progressive training through the real stage entry point (tiny preset, a few steps)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_stage, tiny_params, write_params


def _workspace(data_workspace: Path, tmp_path: Path, **overrides) -> Path:
    work = tmp_path / "w"
    shutil.copytree(data_workspace, work, ignore=shutil.ignore_patterns("models", "scratch", "metrics"))
    shutil.copytree(data_workspace / "models" / "base", work / "models" / "base")
    write_params(work, tiny_params(**overrides))
    return work


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def test_two_levels_only_module_k_changes(data_workspace, tmp_path):
    from taxadiffusion.config import load_params
    from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner

    work = _workspace(data_workspace, tmp_path)
    run_stage("train.py", "--level", "class", cwd=work)
    run_stage("train.py", "--level", "order", cwd=work)
    cls = load_file(work / "models/class/condition.safetensors")
    order = load_file(work / "models/order/condition.safetensors")
    # The initial condition module (same seed as the trainer) to compare level 0 against.
    params = load_params(work / "params.yaml")
    torch.manual_seed(params.train.seed)
    init = TaxonomyConditioner(ConditionerConfig(**json.loads((work / "models/class/condition_config.json").read_text())))
    init = {k: v for k, v in init.state_dict().items()}
    for name in cls:
        level = int(name.split(".")[1])
        if level == 0:
            assert _digest(cls[name]) != _digest(init[name]) or "norm" in name, name
            assert _digest(order[name]) == _digest(cls[name]), f"{name} changed at stage 1"
        elif level == 1:
            assert _digest(cls[name]) == _digest(init[name]), f"{name} changed at stage 0"
        else:
            assert _digest(cls[name]) == _digest(init[name]) == _digest(order[name]), name
    changed_at_1 = [n for n in cls if n.startswith("encoders.1.") and _digest(cls[n]) != _digest(order[n])]
    assert changed_at_1, "module 1 did not train at stage 1"
    lora_cls = (work / "models/class/pytorch_lora_weights.safetensors").read_bytes()
    lora_order = (work / "models/order/pytorch_lora_weights.safetensors").read_bytes()
    assert hashlib.sha256(lora_cls).digest() == hashlib.sha256(lora_order).digest(), "LoRA changed after level 0"
    lora = load_file(work / "models/class/pytorch_lora_weights.safetensors")
    assert any(k.endswith("lora.up.weight") and v.abs().sum() > 0 for k, v in lora.items()), "LoRA did not train"
    curves = work / "metrics/train/class/plots/metrics/loss.tsv"
    assert curves.exists() and len(curves.read_text().splitlines()) >= 3


def test_frozen_parameters_untouched_in_a_step():
    """Level k >= 1: one optimiser step changes module k only (UNet, LoRA and other modules hashed)."""
    from taxadiffusion.config import ModelConfig
    from taxadiffusion.models.base import load_base
    from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner
    from taxadiffusion.models.lora import add_lora
    from taxadiffusion.training import TrainModel, TrainSpec, configure_trainable

    base = load_base(ModelConfig(preset="tiny", pretrained=str(REPO / "assets/tiny-base")))
    add_lora(base.unet)
    cond = TaxonomyConditioner(ConditionerConfig(levels=list("abcde"), width=64, num_layers=1, num_heads=4, ff_dim=32))
    spec = TrainSpec(name="c", parent="b", cut_off=2, train_levels=(2,), train_lora=False)
    configure_trainable(base.unet, cond, spec)
    model = TrainModel(base.unet, cond)
    before = {n: _digest(p.detach()) for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(torch.randn(2, 12, 16, 16), torch.tensor([10, 500]), torch.randn(2, 3, 32, 64), 2)
    out.pow(2).mean().backward()
    opt.step()
    after = {n: _digest(p.detach()) for n, p in model.named_parameters()}
    changed = {n for n in before if before[n] != after[n]}
    assert changed and all(n.startswith("conditioner.encoders.2.") for n in changed), sorted(changed)[:5]


def test_default_training_schedule_is_the_one_the_sampler_uses():
    """params.yaml's train.noise_schedule (default `base`) trains on the base model's own betas, the ones
    generation reads; `linear` (official code) and a bad name behave as documented."""
    import yaml

    from taxadiffusion.config import ModelConfig, params_from_dict
    from taxadiffusion.errors import UserError
    from taxadiffusion.models.base import load_base
    from taxadiffusion.training import noise_scheduler

    base = load_base(ModelConfig(preset="tiny", pretrained=str(REPO / "assets/tiny-base")))
    params = params_from_dict(yaml.safe_load((REPO / "params.yaml").read_text()))
    sched = noise_scheduler(base, params.train.noise_schedule)
    assert sched.config.beta_schedule == base.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    assert sched.config.prediction_type == "v_prediction"
    assert noise_scheduler(base, "linear").config.beta_schedule == "linear"
    with pytest.raises(UserError, match="train.noise_schedule"):
        noise_scheduler(base, "cosine")


def test_lora_reloads_with_diffusers_loader(data_workspace, tmp_path):
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from taxadiffusion.models.tiny import SpaceToDepthVAE

    work = _workspace(data_workspace, tmp_path)
    run_stage("train.py", "--level", "class", cwd=work)
    tiny = REPO / "assets/tiny-base"
    pipe = StableDiffusionPipeline(
        vae=SpaceToDepthVAE.from_config(SpaceToDepthVAE.load_config(tiny, subfolder="vae")),
        text_encoder=CLIPTextModel.from_pretrained(tiny, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(tiny, subfolder="tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(tiny, subfolder="unet"),
        scheduler=PNDMScheduler.from_pretrained(tiny, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.load_lora_weights(str(work / "models/class"))
    saved = load_file(work / "models/class/pytorch_lora_weights.safetensors")
    key = next(k for k in saved if k.endswith("lora.up.weight") and saved[k].abs().sum() > 0)
    # unet.down_blocks.1.attentions.0...to_q.lora.up.weight -> the peft module's lora_B
    module_path = key[len("unet."):].rsplit(".lora.up.weight", 1)[0]
    module = pipe.unet.get_submodule(module_path)
    adapter = next(iter(module.lora_B))
    assert torch.equal(module.lora_B[adapter].weight.detach(), saved[key])
    image = pipe(prompt="a red animal", num_inference_steps=2, output_type="np", height=32, width=32).images
    assert image.shape == (1, 32, 32, 3)


def test_two_process_ddp_on_cpu(data_workspace, tmp_path):
    work = _workspace(data_workspace, tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "ACCELERATE_USE_CPU": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "stages/train.py"), "--level", "class"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((work / "metrics/train/class/run.json").read_text())
    assert run["processes"] == 2
    assert (work / "models/class/condition.safetensors").exists()


def test_kill_and_resume_gives_the_same_files(data_workspace, tmp_path):
    steps = 30
    straight = _workspace(data_workspace, tmp_path / "a", **{"train.steps": steps})
    run_stage("train.py", "--level", "class", cwd=straight)

    work = _workspace(data_workspace, tmp_path / "b", **{"train.steps": steps})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "stages/train.py"), "--level", "class"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = work / "scratch/train/class/checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpts.glob("checkpoint-0000000[3-9].pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (work / "models/class").exists()
    resumed = run_stage("train.py", "--level", "class", cwd=work)
    assert "resuming from" in resumed.stderr + resumed.stdout
    for name in ("condition.safetensors", "pytorch_lora_weights.safetensors", "train_config.json"):
        a = (straight / "models/class" / name).read_bytes()
        b = (work / "models/class" / name).read_bytes()
        assert a == b, f"{name} differs after kill + resume"


def test_params_rewritten_by_dvc_exp_run_still_load(tmp_path):
    """`dvc exp run -S methods=[...]` rewrites params.yaml and drops the quotes of `mixed_precision: "no"`
    (measured); YAML 1.1 reads false, params.yaml is read as YAML 1.2 (as DVC does). A wrong value is a
    one-line error; true/false stay booleans."""
    import yaml

    from taxadiffusion.config import load_params
    from taxadiffusion.errors import UserError

    text = (REPO / "params.yaml").read_text()
    assert 'mixed_precision: "no"' in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace('mixed_precision: "no"', "mixed_precision: no"))
    assert yaml.safe_load(path.read_text())["train"]["mixed_precision"] is False
    assert load_params(path).train.mixed_precision == "no"
    path.write_text(text.replace("gradient_checkpointing: false", "gradient_checkpointing: true"))
    assert load_params(path).train.gradient_checkpointing is True
    path.write_text(text.replace('mixed_precision: "no"', "mixed_precision: fp8"))
    with pytest.raises(UserError, match=r"train.mixed_precision='fp8': expected no, bf16 or fp16"):
        load_params(path)
