"""Progressive training through the real stage entry point (tiny preset, a few steps), the trained-level
folder schema, step checkpoints and the base stage's latents."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.models import LEVELS, make_level_dir, tiny_model_config
from helpers.params import REPO, make_params, section, tiny_params, write_params
from helpers.stages import run_stage
from safetensors.torch import load_file

from taxadiffusion.core.errors import UserError
from taxadiffusion.models.level import TRAIN_CONFIG, LevelConfig, check_level_dir


def _workspace(data_workspace: Path, tmp_path: Path, **overrides) -> Path:
    work = tmp_path / "w"
    shutil.copytree(data_workspace, work, ignore=shutil.ignore_patterns("models", "scratch", "metrics"))
    shutil.copytree(data_workspace / "models" / "base", work / "models" / "base")
    write_params(work, tiny_params(**overrides))
    return work


def _train_args(level: str, parent: str = "base") -> list[str]:
    """The dvc.yaml command line of train@<level>."""
    return ["--level", level, "--parent", f"models/{parent}", "--out", f"models/{level}", "--shards", "data/shards",
            "--latents", "data/latents", "--scratch", f"scratch/train/{level}", "--log-dir", f"metrics/train/{level}"]


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _strict_json(path: Path):
    """json.loads that rejects NaN / Infinity (Python's json accepts them; JSON does not)."""
    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_two_levels_only_module_k_changes(data_workspace, tmp_path):
    from taxadiffusion.config import load_params
    from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner

    work = _workspace(data_workspace, tmp_path)
    run_stage("train.py", *_train_args("class"), cwd=work)
    run_stage("train.py", *_train_args("order", "class"), cwd=work)
    cls = load_file(work / "models/class/condition.safetensors")
    order = load_file(work / "models/order/condition.safetensors")
    # The initial condition module (same seed as the trainer: params.yaml `seed`) to compare level 0 against.
    params = load_params(work / "params.yaml")
    torch.manual_seed(params.seed)
    cond_config = json.loads((work / "models/class/condition_config.json").read_text())
    init = TaxonomyConditioner(ConditionerConfig(**cond_config))
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
    # train_config.json: the schema, the run's seed, lr recorded once (in the spec)
    config = LevelConfig.load(work / "models/order")
    assert (config.level, config.level_index, config.parent, config.seed) == ("order", 1, "class", params.seed)
    assert config.spec.lr == params.train.lr and config.spec.steps == params.train.steps
    assert not {"lr", "lr_first", "steps", "seed", "scratch"} & set(config.train)
    assert (config.lora_rank, config.lora_alpha) == (params.train.lora_rank, params.train.lora_alpha)
    run = _strict_json(work / "metrics/train/order/run.json")
    assert run["steps"] == params.train.steps and isinstance(run["final_loss"], float)
    # run.json (under report's dependency metrics/train) holds no wall time; the timings are in the scratch folder
    # nor how it was launched (processes, micro-batch: compute, outside every hash)
    assert set(run) == {"name", "steps", "batch_size", "final_loss"}
    timing = _strict_json(work / "scratch/train/order/timing.json")
    assert timing["seconds_this_run"] > 0 and timing["resumed_from"] == 0 and timing["samples_per_second"] > 0
    assert (timing["processes"], timing["micro_batch"], timing["accumulation"]) == (1, params.train.batch_size, 1)


@pytest.mark.slow
def test_wrong_parent_is_a_one_line_error(data_workspace, tmp_path):
    work = _workspace(data_workspace, tmp_path)
    proc = run_stage("train.py", *_train_args("order", "class"), cwd=work, check=False)
    assert proc.returncode == 2 and "parent level not trained yet" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    make_level_dir(work / "models" / "genus", level="genus")
    args = _train_args("order", "class")
    args[args.index("--parent") + 1] = "models/genus"
    proc = run_stage("train.py", *args, cwd=work, check=False)
    assert proc.returncode == 2 and "holds level 'genus'" in proc.stderr, proc.stderr


def test_frozen_parameters_untouched_in_a_step():
    """Level k >= 1: one optimiser step changes module k only (UNet, LoRA and other modules hashed)."""
    from taxadiffusion.models.base import load_base
    from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner
    from taxadiffusion.models.lora import add_lora
    from taxadiffusion.models.train_spec import TrainSpec
    from taxadiffusion.training.run import TrainModel, configure_trainable

    base = load_base(tiny_model_config())
    add_lora(base.unet, 4, 4)
    cond = TaxonomyConditioner(ConditionerConfig(levels=list("abcde"), width=64, num_layers=1, num_heads=4, ff_dim=32,
                                                       dropout=0.1))
    spec = TrainSpec(name="c", parent="b", cut_off=2, train_levels=(2,), train_lora=False, full_unet=False,
                     random_cut_off=False, prompt_only=False, lr=1e-2, steps=1)
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
    from taxadiffusion.models.base import load_base
    from taxadiffusion.training.noise import noise_scheduler

    base = load_base(tiny_model_config())
    sched = noise_scheduler(base, make_params().train.noise_schedule)
    assert sched.config.beta_schedule == base.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    assert sched.config.prediction_type == "v_prediction"
    assert noise_scheduler(base, "linear").config.beta_schedule == "linear"
    with pytest.raises(UserError, match="train.noise_schedule='cosine': expected one of base, scaled_linear"):
        dataclasses.replace(make_params().train, noise_schedule="cosine")  # validated once, when params are read
    odd = SimpleNamespace(scheduler_config={**base.scheduler_config, "prediction_type": "sample"}, source="some/base")
    with pytest.raises(UserError, match=r"some/base: scheduler prediction_type='sample'; "
                                        r"training supports epsilon or v_prediction"):
        noise_scheduler(odd, "base")


@pytest.mark.parametrize("schedule,prediction", [("squaredcos_cap_v2", "v_prediction"), ("scaled_linear", "epsilon"),
                                                 ("linear", "v_prediction")])
def test_forward_process_equals_the_hand_written_one(schedule, prediction):
    """The scheduler's add_noise / get_velocity give bit-for-bit the values of the closed form
    x_t = sqrt(a) x0 + sqrt(1 - a) eps, v = sqrt(a) eps - sqrt(1 - a) x0 at every timestep."""
    from diffusers import DDPMScheduler

    from taxadiffusion.training.noise import forward_process

    s = DDPMScheduler.from_config(dict(num_train_timesteps=1000, beta_schedule=schedule, beta_start=0.00085,
                                       beta_end=0.012, prediction_type=prediction))
    g = torch.Generator().manual_seed(0)
    x0, noise, t = torch.randn(1000, 3, 4, 4, generator=g), torch.randn(1000, 3, 4, 4, generator=g), torch.arange(1000)
    a = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy, target = forward_process(s, x0, noise, t)
    assert torch.equal(noisy, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert torch.equal(target, noise if prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0)


@pytest.mark.slow
def test_lora_reloads_with_diffusers_loader(data_workspace, tmp_path):
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from taxadiffusion.models.tiny import SpaceToDepthVAE

    work = _workspace(data_workspace, tmp_path)
    run_stage("train.py", *_train_args("class"), cwd=work)
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


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_files(data_workspace, tmp_path):
    steps, every = 30, {"preview.every": 10}  # previews at steps 10, 20, 30: some before the kill, some after
    straight = _workspace(data_workspace, tmp_path / "a", **{"train.steps": steps}, **every)
    run_stage("train.py", *_train_args("class"), cwd=straight)

    work = _workspace(data_workspace, tmp_path / "b", **{"train.steps": steps}, **every)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "stages/train.py"), *_train_args("class")], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = work / "scratch/train/class/checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpts.glob("checkpoint-0000000[3-9].safetensors")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (work / "models/class").exists()
    resumed = run_stage("train.py", *_train_args("class"), cwd=work)
    assert "resuming from" in resumed.stderr + resumed.stdout
    for name in ("condition.safetensors", "pytorch_lora_weights.safetensors", "train_config.json"):
        a = (straight / "models/class" / name).read_bytes()
        b = (work / "models/class" / name).read_bytes()
        assert a == b, f"{name} differs after kill + resume"
    previews = "metrics/train/class/plots/images/preview"
    drawn = {p.name: p.read_bytes() for p in sorted((straight / previews).glob("*.png"))}
    assert list(drawn) == ["step-000010.png", "step-000020.png", "step-000030.png"]
    assert {p.name: p.read_bytes() for p in sorted((work / previews).glob("*.png"))} == drawn, "previews differ"


@pytest.mark.slow
def test_corrupt_newest_checkpoint_is_skipped(data_workspace, tmp_path):
    """A truncated newest checkpoint is skipped with a log line; the run resumes from the one before and
    ends with the files of an uninterrupted run. The uninterrupted run draws no previews, the resumed one one
    per step: previews leave the weights untouched."""
    straight = _workspace(data_workspace, tmp_path / "a", **{"train.steps": 4, "preview.every": 0})
    run_stage("train.py", *_train_args("class"), cwd=straight)
    assert not any((straight / "metrics/train/class/plots/images").iterdir())  # in the plots folder: there, empty
    work = _workspace(data_workspace, tmp_path / "b", **{"train.steps": 4, "preview.every": 1})
    run_stage("train.py", *_train_args("class"), "--max-steps-this-run", "3", cwd=work)
    ckpts = sorted((work / "scratch/train/class/checkpoints").glob("checkpoint-*.safetensors"))
    assert [p.name for p in ckpts] == ["checkpoint-00000002.safetensors", "checkpoint-00000003.safetensors"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:-100])  # a killed copy / a full disk
    resumed = run_stage("train.py", *_train_args("class"), cwd=work)
    log = resumed.stderr + resumed.stdout
    assert "skipping checkpoint" in log and "checkpoint-00000003.safetensors" in log, log[-2000:]
    assert "resuming from" in log and "checkpoint-00000002.safetensors (step 2)" in log, log[-2000:]
    for name in ("condition.safetensors", "pytorch_lora_weights.safetensors"):
        assert (straight / "models/class" / name).read_bytes() == (work / "models/class" / name).read_bytes(), name
    assert len(list((work / "metrics/train/class/plots/images/preview").glob("step-*.png"))) == 4


def test_checkpoint_detects_flipped_and_truncated_bytes(tmp_path):
    from taxadiffusion.training.checkpoints import read_checkpoint, write_checkpoint_file

    tensors = {"model/w": torch.randn(64, 64), "optimizer/0/step": torch.tensor(3.0),
               "optimizer/0/exp_avg": torch.randn(64, 64)}
    path = tmp_path / "checkpoint-00000003.safetensors"
    write_checkpoint_file(path, tensors, fingerprint="abc", step=3)
    back, meta = read_checkpoint(path)
    assert meta["fingerprint"] == "abc" and meta["step"] == "3"
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x40  # one bit inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the sha256"):
        read_checkpoint(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(Exception):
        read_checkpoint(path)


@pytest.mark.slow
def test_non_finite_loss_stops_with_one_line_and_writes_no_model(data_workspace, tmp_path):
    work = _workspace(data_workspace, tmp_path, **{"train.lr_first": 1e30, "train.steps": 3})
    proc = run_stage("train.py", *_train_args("class"), cwd=work, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: train class: the loss became non-finite (nan/inf) at step "), last
    assert "lower the learning rate" in last and "1e+30" in last
    assert not (work / "models/class").exists()
    assert not (work / "metrics/train/class/run.json").exists()


# --------------------------------------------------------------------------------------------------
# The trained-level folder (models/<level>/train_config.json)


def test_level_config_round_trip_and_check(tmp_path):
    folder = make_level_dir(tmp_path / "genus", level="genus")
    config = LevelConfig.load(folder)
    assert config.level == "genus" and config.level_index == 3 and config.has_lora and config.has_condition_module
    assert LevelConfig.load(folder) == config
    assert check_level_dir(folder, LEVELS, 3) == config
    with pytest.raises(UserError, match=r"trained down to 'genus' only; drawing at level 'species'"):
        check_level_dir(folder, LEVELS, 4)
    with pytest.raises(UserError, match=r"levels \[.*\] differ from params.yaml levels"):
        check_level_dir(folder, LEVELS[:4], 1)


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.unlink(), r"train_config.json: missing; .* is not a trained level"),
    (lambda p: p.write_text("{not json"), r"train_config.json: line 1 column 2: not valid JSON"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "seed"})),
     r"train_config.json: missing keys \['seed'\]"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "extra": 1})), r"unknown keys \['extra'\]"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "level_index": 9})), r"level_index=9"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "spec": {"name": "x"}})), r"malformed"),
])
def test_level_config_errors_name_the_file(tmp_path, damage, message):
    folder = make_level_dir(tmp_path / "species")
    damage(folder / TRAIN_CONFIG)
    with pytest.raises(UserError, match=message) as info:
        LevelConfig.load(folder)
    assert str(folder / TRAIN_CONFIG) in str(info.value) and "\n" not in str(info.value)


def test_sd_baseline_folder_loads_prompt_only(tmp_path):
    from taxadiffusion.comparison.train import train_method
    from taxadiffusion.config import Experiment
    from taxadiffusion.models.taxa import load_taxa_model
    from taxadiffusion.training.train import TrainPaths

    paths = TrainPaths(parent=None, out=tmp_path / "sd", shards=tmp_path, latents=tmp_path, scratch=tmp_path / "s",
                       log_dir=tmp_path / "log")
    out = train_method("sd", section("train"), Experiment(tiny_model_config(), LEVELS, 0), paths,
                       section("compute"))
    assert sorted(p.name for p in out.iterdir()) == ["method.json", TRAIN_CONFIG]
    model = load_taxa_model(out, tiny_model_config())
    assert model.prompt_only and model.config.spec is None and not model.config.has_lora
    assert model.condition([{"species": "Aa bb"}], 4).shape == (1, 32, 64)


def test_method_specs_carry_their_lr_and_budget():
    from taxadiffusion.comparison.methods import check_method, method_spec
    from taxadiffusion.config import METHOD_NAMES
    from taxadiffusion.models.train_spec import TrainSpec
    from taxadiffusion.training.specs import progressive_spec

    cfg = section("train", {"lr_first": 1e-4, "lr": 1e-5, "steps": 7})
    assert [progressive_spec(cfg, LEVELS, lv).lr for lv in LEVELS] == [1e-4] + [1e-5] * 4
    specs = {m: method_spec(cfg, LEVELS, m) for m in METHOD_NAMES}
    assert {m for m, s in specs.items() if s is None} == {"taxadiffusion", "sd", "cfg"}
    assert specs["full"].lr == 1e-5 and specs["lora"].lr == specs["joint"].lr == 1e-4
    assert all(s.steps == 7 * len(LEVELS) for s in specs.values() if s is not None)
    with pytest.raises(UserError, match="--method 'dreambooth': expected one of taxadiffusion, sd"):
        check_method("dreambooth")
    with pytest.raises(TypeError):  # keyword-only, every field stated
        TrainSpec("lora", None, 0, (), True, False, False, True, 1e-4, 7)
    with pytest.raises(TypeError):
        TrainSpec(name="lora")


# --------------------------------------------------------------------------------------------------
# Latents and pickles




def test_no_torch_load_with_pickles():
    """Every torch.load in the project reads plain tensors (weights_only=True, the default since torch 2.6)."""
    offenders = []
    for path in sorted(REPO.rglob("*.py")):
        if any(part.startswith(".") or part in ("build", "node_modules") for part in path.relative_to(REPO).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"
    assert tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6), "weights_only defaults to True from 2.6"


def test_params_rewritten_by_dvc_exp_run_still_load(tmp_path):
    """`dvc exp run -S methods=[...]` rewrites params.yaml and drops the quotes of `mixed_precision: "no"`
    (measured); YAML 1.1 reads false, params.yaml is read as YAML 1.2 (as DVC does). A wrong value is a
    one-line error; true/false stay booleans."""
    import yaml

    from taxadiffusion.config import load_params

    text = (REPO / "params.yaml").read_text()
    assert 'mixed_precision: "no"' in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace('mixed_precision: "no"', "mixed_precision: no"))
    assert yaml.safe_load(path.read_text())["train"]["mixed_precision"] is False
    assert load_params(path).train.mixed_precision == "no"
    path.write_text(text.replace("gradient_checkpointing: false", "gradient_checkpointing: true"))
    assert load_params(path).compute.gradient_checkpointing is True
    path.write_text(text.replace('mixed_precision: "no"', "mixed_precision: fp8"))
    with pytest.raises(UserError, match=r"train.mixed_precision='fp8': expected one of no, bf16, fp16"):
        load_params(path)


@pytest.mark.slow
def test_bf16_training_keeps_trainable_weights_fp32_and_the_frozen_lora_unchanged(data_workspace, tmp_path):
    """The presets' precision (train.mixed_precision: bf16: autocast, frozen base weights in bf16, training/
    precision.py) on the CPU: level 0 and level 1 train, previews draw under the same autocast, the saved LoRA and
    condition module are fp32, level 1 writes level 0's LoRA back bit for bit, and no float32-modules warning."""
    work = _workspace(data_workspace, tmp_path, **{"train.mixed_precision": "bf16", "preview.every": 1,
                                                   "compute.num_workers": 1})
    first = run_stage("train.py", *_train_args("class"), cwd=work)
    second = run_stage("train.py", *_train_args("order", "class"), cwd=work)
    assert "should be kept in float32" not in first.stderr + second.stderr
    for level in ("class", "order"):
        for name in ("condition.safetensors", "pytorch_lora_weights.safetensors"):
            assert {t.dtype for t in load_file(work / "models" / level / name).values()} == {torch.float32}
        assert len(list((work / "metrics/train" / level / "plots/images/preview").glob("*.png"))) == 2
    lora = "pytorch_lora_weights.safetensors"
    assert (work / "models/class" / lora).read_bytes() == (work / "models/order" / lora).read_bytes()
