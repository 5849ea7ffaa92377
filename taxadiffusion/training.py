"""Progressive training, one taxonomic level per run (method.md §2, supplement A.2 / Table S1).

Level 0 trains the UNet LoRA + condition module 0 (lr ``train.lr_first``); level k >= 1 trains only module k
(lr ``train.lr``) with the UNet, its LoRA and modules < k frozen. Each level starts from its parent's
``models/<parent>/``. The same code trains the baselines/ablations (``TrainSpec``).

Launch (any number of processes; gloo on CPU, NCCL on GPUs)::

    python stages/train.py --level class
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no stages/train.py --level class          # 2-process DDP (CPU: gloo)

Resume: a killed run, re-run with the same command, continues from its newest step checkpoint in
``<train.scratch>/<level>/`` (outside DVC outs); the data order, noise and dropout of every step are a
function of (seed, rank, step), so the result equals an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import Params, TrainConfig
from .errors import UserError
from .io import atomic_dir, atomic_path, write_json
from .models.base import BaseModel, load_base
from .models.conditioner import ConditionerConfig, TaxonomyConditioner, lineage_texts, species_prompt
from .models.lora import LORA_FILE, add_lora, load_lora, lora_parameters, save_lora
from .models.text_cache import TextEmbeddingCache

log = logging.getLogger(__name__)


@dataclass
class TrainSpec:
    """What one training run updates and how it conditions (progressive level, or a baseline/ablation)."""

    name: str  # output folder name under models/
    parent: str | None  # models/<parent> to start from (None: fresh condition module)
    cut_off: int  # highest level used in the condition
    train_levels: tuple  # condition-module levels whose weights train
    train_lora: bool
    full_unet: bool = False  # SD + full fine-tuning baseline
    random_cut_off: bool = False  # ablation: a random level per step
    prompt_only: bool = False  # baselines: condition = the text encoder on the species name alone
    lr: float = 1e-4
    steps: int | None = None  # None: train.steps


METHODS = ("taxadiffusion", "sd", "lora", "full", "joint", "random_level", "cfg")


def method_spec(params: Params, method: str) -> TrainSpec | None:
    """Baselines and ablations of the paper's comparison tables (None: nothing to train).

    Every trained baseline gets the same total step budget as progressive training
    (``train.steps`` x number of levels). ``sd`` = the base model, no fine-tuning; ``cfg`` = the
    TaxaDiffusion model sampled with vanilla CFG (generation-side only).
    """
    levels = params.level_names
    budget = params.train.steps * len(levels)
    last = len(levels) - 1
    name = f"methods/{method}"  # models/methods/<m>
    if method in ("taxadiffusion", "sd", "cfg"):
        return None
    if method == "lora":  # SD + LoRA on the species name (supplement Table S1: lr 1e-4)
        return TrainSpec(name, None, 0, (), True, prompt_only=True, lr=params.train.lr_first, steps=budget)
    if method == "full":  # SD + full fine-tuning on the species name (Table S1: lr 1e-5)
        return TrainSpec(name, None, 0, (), False, full_unet=True, prompt_only=True, lr=params.train.lr, steps=budget)
    if method == "joint":  # all level modules + LoRA together, full lineage
        return TrainSpec(name, None, last, tuple(range(len(levels))), True, lr=params.train.lr_first, steps=budget)
    if method == "random_level":  # all modules + LoRA, a random cut-off level per step
        return TrainSpec(name, None, last, tuple(range(len(levels))), True, random_cut_off=True,
                         lr=params.train.lr_first, steps=budget)
    raise UserError(f"methods: unknown method {method!r}; expected some of {', '.join(METHODS)}")


def progressive_spec(params: Params, level: str) -> TrainSpec:
    levels = params.level_names
    if level not in levels:
        raise UserError(f"--level {level!r}: not one of params.yaml levels {levels}")
    k = levels.index(level)
    lr = params.train.lr_first if k == 0 else params.train.lr
    return TrainSpec(
        name=level,
        parent=None if k == 0 else levels[k - 1],
        cut_off=k,
        train_levels=(k,),
        train_lora=(k == 0),
        lr=lr,
    )


class TrainModel(torch.nn.Module):
    """UNet + condition module in one module so accelerate/DDP wraps every trainable tensor at once."""

    def __init__(self, unet, conditioner):
        super().__init__()
        self.unet = unet
        self.conditioner = conditioner

    def forward(self, noisy, timesteps, hidden, cut_off: int, prompt_only: bool = False):
        context = hidden[:, 0] if prompt_only else self.conditioner(hidden, cut_off)
        return self.unet(noisy, timesteps, context.to(noisy.dtype)).sample


def configure_trainable(unet, conditioner, spec: TrainSpec) -> None:
    """Freeze everything, then switch on exactly what this stage trains (method.md §2).

    Frozen level modules still run in the forward, in eval mode (no dropout); the official code leaves
    them in train mode (docs/deviations.md).
    """
    unet.requires_grad_(False)
    conditioner.requires_grad_(False)
    if spec.full_unet:
        unet.requires_grad_(True)
    elif spec.train_lora:
        for p in lora_parameters(unet):
            p.requires_grad_(True)
    for i in spec.train_levels:
        conditioner.encoders[i].requires_grad_(True)
    unet.train(spec.train_lora or spec.full_unet)
    conditioner.eval()
    for i in spec.train_levels:
        conditioner.encoders[i].train()


def load_train_latents(params: Params, base: BaseModel, shards: str | Path, latents_dir: str | Path | None):
    """All training latents ``[N, C, h, w]`` (CPU) and their lineages.

    sd15: the VAE latents cached by the ``base`` stage (``data/latents/train.pt``) when present, so images
    are not re-encoded every step. tiny: the lossless space-to-depth view, computed here in one pass.
    """
    from .shard import load_split_arrays

    cached = Path(latents_dir) / "train.pt" if latents_dir else None
    if cached is not None and cached.exists():
        blob = torch.load(cached, map_location="cpu", weights_only=False)
        return blob["latents"], blob["lineages"]
    images, lineages = load_split_arrays(shards, "train")
    if len(images) == 0:
        raise UserError(f"{shards}: the train split is empty; nothing to train on")
    latents = encode_all(base, images)
    return latents, lineages


@torch.no_grad()
def encode_all(base: BaseModel, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    out = []
    device = base.unet.device
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        out.append(base.encode_images(x.to(device)).float().cpu())
    return torch.cat(out)


def step_rng(seed: int, rank: int, step: int) -> torch.Generator:
    """Randomness of one step on one rank: a pure function of (seed, rank, step) -> exact resume."""
    digest = hashlib.sha256(f"{seed}/{rank}/{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def batch_indices(n: int, batch: int, world: int, rank: int, step: int, seed: int) -> np.ndarray:
    """Rank ``rank``'s slice of global batch ``step`` from a seeded per-epoch permutation stream."""
    per_step = batch * world
    start = step * per_step + rank * batch
    idx = []
    pos = start
    while len(idx) < batch:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(batch - len(idx), n - offset)
        idx.extend(perm[offset : offset + take].tolist())
        pos += take
    return np.asarray(idx)


def drop_levels(lineages: list[dict], levels: list[str], p: float, gen: torch.Generator) -> list[dict]:
    """Condition dropout as the official FishNet/BIOSCAN loader: per sample, with probability ``p`` each,
    exactly one level becomes ``None`` (``randint(0, 20)`` over 5 levels = 1/21 per level)."""
    out = []
    u = torch.rand(len(lineages), generator=gen).tolist()
    for lin, ui in zip(lineages, u):
        j = int(ui // p) if p > 0 else len(levels)
        if j < len(levels):
            lin = dict(lin)
            lin[levels[len(levels) - 1 - j]] = None  # j=0 -> finest level first, as the official code
        out.append(lin)
    return out


def noise_scheduler(base: BaseModel, schedule: str):
    """Training schedule: the base model's own (SD1.5: scaled_linear, epsilon) unless overridden.
    ``linear`` reproduces the official code's training betas (docs/deviations.md)."""
    from diffusers import DDPMScheduler

    config = {k: v for k, v in base.scheduler_config.items() if k != "_class_name"}
    if schedule not in ("base", "scaled_linear", "linear", "squaredcos_cap_v2"):
        raise UserError(f"train.noise_schedule={schedule!r}: expected base, scaled_linear, linear or squaredcos_cap_v2")
    if schedule != "base":
        config["beta_schedule"] = schedule
    return DDPMScheduler.from_config(config)


def fingerprint(spec: TrainSpec, cfg: TrainConfig, params: Params, parent_dir: Path | None) -> str:
    """Identity of a run: a scratch checkpoint is resumed only by the run that wrote it."""
    blob = json.dumps([asdict(spec), asdict(cfg), asdict(params.model), params.level_names], sort_keys=True, default=str)
    h = hashlib.sha256(blob.encode())
    if parent_dir is not None:
        for name in ("condition.safetensors", LORA_FILE):
            path = parent_dir / name
            if path.exists():
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def train(params: Params, spec: TrainSpec, models_dir="models", shards="data/shards", latents_dir="data/latents",
          log_dir: str | Path | None = None, max_steps_this_run: int | None = None) -> dict:
    """Run one training stage and write ``models/<spec.name>/``. Returns a summary dict."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    cfg = params.train
    steps = int(spec.steps or cfg.steps)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision if cfg.mixed_precision != "no" else "no",
        cpu=not torch.cuda.is_available(),
        # a random level per step leaves some modules without gradients in that step
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=spec.random_cut_off)],
    )
    world, rank = accelerator.num_processes, accelerator.process_index
    if accelerator.device.type == "cpu" and world > 1:
        torch.set_num_threads(1)  # one thread per rank on CPU (docs/stack-notes.md)
    set_seed(cfg.seed + rank)
    models_dir = Path(models_dir)
    out_dir = models_dir / spec.name
    parent_dir = models_dir / spec.parent if spec.parent else None
    if parent_dir is not None and not (parent_dir / "condition.safetensors").exists():
        raise UserError(f"{parent_dir}: parent level not trained yet (run `dvc repro train@{spec.parent}`)")

    base = load_base(params.model, device=accelerator.device)
    levels = params.level_names
    if parent_dir is not None:
        conditioner = TaxonomyConditioner.load(parent_dir)
    else:
        torch.manual_seed(cfg.seed)
        conditioner = TaxonomyConditioner(
            ConditionerConfig(
                levels=levels,
                width=base.text_hidden,
                num_layers=params.model.cond_layers,
                num_heads=params.model.cond_heads,
                ff_dim=params.model.cond_ff,
                dropout=params.model.cond_dropout,
            )
        )
    unet = base.unet
    has_lora = spec.train_lora or (parent_dir is not None and (parent_dir / LORA_FILE).exists())
    if has_lora:
        torch.manual_seed(cfg.seed + 7)
        add_lora(unet, cfg.lora_rank, cfg.lora_alpha)
        if not spec.train_lora:
            load_lora(unet, parent_dir)
    if spec.full_unet and parent_dir is not None and (parent_dir / "unet").exists():
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(parent_dir / "unet").to(accelerator.device)
    configure_trainable(unet, conditioner, spec)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    # fp32 trainable params even under fp16/bf16 autocast (diffusers `cast_training_params` practice)
    model = TrainModel(unet, conditioner).to(accelerator.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=spec.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    model, opt = accelerator.prepare(model, opt)
    raw = accelerator.unwrap_model(model)

    latents, lineages = load_train_latents(params, base, shards, latents_dir if params.model.preset == "sd15" else None)
    latents = latents.to(accelerator.device)
    cache = TextEmbeddingCache(base.text_encoder, base.tokenizer, device=accelerator.device)
    scheduler = noise_scheduler(base, cfg.noise_schedule)
    alphas = scheduler.alphas_cumprod.to(accelerator.device)
    prediction = scheduler.config.prediction_type

    scratch = Path(cfg.scratch) / spec.name
    fp = fingerprint(spec, cfg, params, parent_dir)
    start_step = _resume(scratch, fp, raw, opt, accelerator)
    live = _live(scratch, resume=start_step > 0) if accelerator.is_main_process else None

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=start_step, desc=f"train {spec.name}", disable=not accelerator.is_main_process)
    t0, last_loss = time.time(), float("nan")
    done_here = 0
    for step in range(start_step, steps):
        gen = step_rng(cfg.seed, rank, step)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))  # dropout: resumable too
        idx = batch_indices(len(latents), cfg.batch_size, world, rank, step, cfg.seed)
        x0 = latents[torch.from_numpy(idx).to(latents.device)]
        batch_lineages = drop_levels([lineages[i] for i in idx], levels, cfg.level_dropout, gen)
        cut = spec.cut_off
        if spec.random_cut_off:
            cut = int(torch.randint(0, len(levels), (1,), generator=gen))
        if spec.prompt_only:
            texts = [[species_prompt(lin, levels)] for lin in [lineages[i] for i in idx]]
        else:
            texts = [lineage_texts(levels, lin)[: cut + 1] for lin in batch_lineages]
        hidden = cache.lineages(texts)
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(x0.device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise if prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        with accelerator.autocast():
            pred = model(noisy, t, hidden, cut, spec.prompt_only)
        loss = F.mse_loss(pred.float(), target.float())
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done_here += 1
        bar.update(1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            last_loss = accelerator.gather(loss.detach().reshape(1)).mean().item()
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if live is not None:
                live.log_metric("loss", last_loss)
                live.log_metric("lr", spec.lr)
                live.next_step()
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
            _save_checkpoint(scratch, fp, step + 1, raw, opt, accelerator)
        if max_steps_this_run is not None and done_here >= max_steps_this_run:
            bar.close()
            return {"stopped_at": step + 1}
    bar.close()
    seconds = time.time() - t0
    accelerator.wait_for_everyone()
    summary = {
        "name": spec.name,
        "steps": steps,
        "resumed_from": start_step,
        "final_loss": last_loss,
        "seconds_this_run": round(seconds, 2),
        "processes": world,
        "samples_per_second": round(done_here * cfg.batch_size * world / max(seconds, 1e-9), 2),
    }
    if accelerator.is_main_process:
        _write_outputs(out_dir, raw, spec, params, has_lora, scratch, live, summary,
                       Path(log_dir) if log_dir else Path("metrics/train") / spec.name)
        shutil.rmtree(scratch / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _live(scratch: Path, resume: bool):
    from dvclive import Live

    if not resume:
        shutil.rmtree(scratch / "live", ignore_errors=True)
    return Live(str(scratch / "live"), resume=resume, dvcyaml=None, save_dvc_exp=False, report=None)


def _trainable_state(raw: TrainModel) -> dict:
    names = {n for n, p in raw.named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().clone() for n, t in raw.state_dict().items() if n in names}


def _save_checkpoint(scratch: Path, fp: str, step: int, raw, opt, accelerator) -> None:
    if accelerator.is_main_process:
        ckpt_dir = scratch / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(ckpt_dir / f"checkpoint-{step:08d}.pt") as tmp:
            torch.save({"fingerprint": fp, "step": step, "model": _trainable_state(raw), "optimizer": opt.state_dict()}, tmp)
        for old in sorted(ckpt_dir.glob("checkpoint-*.pt"))[:-2]:  # keep the two newest
            old.unlink()
    accelerator.wait_for_everyone()


def _resume(scratch: Path, fp: str, raw, opt, accelerator) -> int:
    ckpts = sorted((scratch / "checkpoints").glob("checkpoint-*.pt"))
    for path in reversed(ckpts):
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # a checkpoint written by a killed process is skipped, never trusted
            continue
        if blob.get("fingerprint") != fp:
            log.info("ignoring %s: written by a run with other params", path)
            return 0
        raw.load_state_dict(blob["model"], strict=False)
        opt.load_state_dict(blob["optimizer"])
        if accelerator.is_main_process:
            log.info("resuming from %s (step %d)", path, blob["step"])
        return int(blob["step"])
    return 0


def _write_outputs(out_dir: Path, raw: TrainModel, spec: TrainSpec, params: Params, has_lora: bool,
                   scratch: Path, live, summary: dict, log_dir: Path) -> None:
    """Write ``models/<name>/`` into a temp folder, then swap it in (atomic for the whole folder)."""
    if live is not None:
        live.end()
    # Training curves (dvclive) go next to the other metrics, not inside the cached model out.
    shutil.rmtree(log_dir, ignore_errors=True)
    if (scratch / "live").exists():
        shutil.copytree(scratch / "live", log_dir)
    write_json(log_dir / "run.json", summary)  # timings differ run to run; weights/config do not
    config = {
        "levels": params.level_names,
        "level": spec.name,
        # prompt-only baselines are conditioned on the species name: they draw at the finest level
        "level_index": len(params.level_names) - 1 if spec.prompt_only else spec.cut_off,
        "parent": spec.parent,
        "spec": asdict(spec),
        "lora_rank": params.train.lora_rank,
        "lora_alpha": params.train.lora_alpha,
        "full_unet": spec.full_unet,
        "prompt_only": spec.prompt_only,
        "model": asdict(params.model),
        "train": asdict(params.train),
    }
    with atomic_dir(out_dir) as tmp:
        raw.conditioner.save(tmp)
        if has_lora:
            save_lora(raw.unet, tmp)
        if spec.full_unet:
            raw.unet.save_pretrained(tmp / "unet")
        write_json(tmp / "train_config.json", config)
