"""Stage ``train@<level>``: progressive training, one taxonomic level per run (docs/method.md §2, supplement
A.2 / Table S1).

Level 0 trains the UNet LoRA + condition module 0 (lr ``train.lr_first``); level k >= 1 trains only module k
(lr ``train.lr``) with the UNet, its LoRA and modules < k frozen. Each level starts from its parent level's
folder. The same code trains the baselines/ablations (:mod:`taxadiffusion.comparison.methods`).

Launch (any number of processes; gloo on CPU, NCCL on GPUs): see ``stages/train.py``.

``train.batch_size`` is the global batch: processes x micro-batches with gradient accumulation
(:mod:`taxadiffusion.training.batches`). Resume: a killed run, re-run with the same command (with any number of
processes), continues from its newest intact step checkpoint in its scratch folder (outside DVC outs); the data
order, noise and dropout of every sample are a function of (seed, step, position), so the result equals an
uninterrupted run up to float summation order.
Checkpoints (:mod:`taxadiffusion.training.checkpoints`) are safetensors files whose header carries the sha256
of their tensors: a truncated or corrupt one is skipped (with a log line).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

from taxadiffusion.config import ComputeConfig, Experiment, PreviewConfig, TrainConfig
from taxadiffusion.core import progress
from taxadiffusion.core.device import fast_matmuls, on_cpu_only
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import write_text
from taxadiffusion.models.base import load_base
from taxadiffusion.models.conditioner import lineage_texts, species_prompt
from taxadiffusion.models.level import TRAIN_CONFIG, LevelConfig, build_level_model, check_level_dir, write_level
from taxadiffusion.models.text_cache import TextEmbeddingCache
from taxadiffusion.models.train_spec import TrainSpec
from taxadiffusion.training.batches import BatchPlan, Draws, MicroBatches, dropout_seed, step_rng
from taxadiffusion.training.checkpoints import resume, save_checkpoint
from taxadiffusion.training.curves import log_due, log_row, open_live
from taxadiffusion.training.latents import latent_source
from taxadiffusion.training.noise import forward_process, noise_scheduler
from taxadiffusion.training.precision import COMPUTE_DTYPES, frozen_in_compute_dtype
from taxadiffusion.training.previews import TrainingPreviews
from taxadiffusion.training.run import Run, TrainModel, configure_trainable, fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPaths:
    """Where a training run reads and writes (every path comes from the stage's ``cmd`` in dvc.yaml)."""

    parent: Path | None  # the trained level ``spec.parent`` starts from (None: level 0 and the baselines)
    out: Path  # the level folder (models/<level>, models/methods/<m>)
    shards: Path  # WebDataset shards (data/shards)
    latents: Path  # cached latents (data/latents)
    scratch: Path  # resumable step checkpoints + the unfinished run's log (scratch/train/<level>)
    log_dir: Path  # curves + run.json (metrics/train/<level>)

    def __post_init__(self):
        for name in ("out", "shards", "latents", "scratch", "log_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.parent is not None:
            object.__setattr__(self, "parent", Path(self.parent))


def train(cfg: TrainConfig, spec: TrainSpec, exp: Experiment, paths: TrainPaths, compute: ComputeConfig,
          preview: PreviewConfig | None = None, max_steps_this_run: int | None = None) -> dict:
    """Train ``spec`` and write the level folder ``paths.out``, its curves + ``run.json`` in ``paths.log_dir`` and
    its timings in ``paths.scratch/timing.json``.

    ``paths.parent`` is read only when the spec has a parent (level 0 and the baselines start from the base
    model). ``compute``: how it runs (micro-batch, workers, logging; never what it trains). ``preview``: sample
    grids during training (:mod:`taxadiffusion.training.previews`), or None for none. The run's lr and steps are
    the spec's; ``cfg`` gives everything else. Returns a summary dict (``{"stopped_at": step}`` when
    ``max_steps_this_run`` stopped it first).
    """
    parent_dir = paths.parent if spec.parent is not None else None
    levels, seed = exp.levels, exp.seed
    progress.note(f"while loading the model and data of {spec.name}, before training")  # for a Ctrl-C (cli.py)
    config = LevelConfig.for_run(spec, cfg, exp.model, levels, seed, _parent_config(spec, parent_dir, levels))
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        cpu=on_cpu_only(),
        # a random level per step leaves some modules without gradients in that step
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=spec.random_cut_off)],
    )
    if accelerator.device.type == "cpu" and accelerator.num_processes > 1:
        torch.set_num_threads(1)  # one thread per rank on CPU (docs/install.md)
    fast_matmuls(accelerator.device)
    set_seed(seed)  # every draw of a step is keyed (training/batches.py); this only fixes what is left
    run = build_run(accelerator, cfg, spec, config, parent_dir, paths, compute)
    scratch = paths.scratch
    fp = fingerprint(config, parent_dir)
    start_step = resume(scratch, fp, run)
    summary = _loop(run, compute, Path(scratch), fp, start_step, max_steps_this_run, preview)
    if "stopped_at" in summary:
        return summary
    if accelerator.is_main_process:
        _write_outputs(paths.out, paths.log_dir, scratch, config, run.raw, summary)
        shutil.rmtree(scratch / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _parent_config(spec: TrainSpec, parent_dir: Path | None, levels: list[str]) -> LevelConfig | None:
    if spec.parent is None:
        return None
    if not (parent_dir / TRAIN_CONFIG).exists():
        raise UserError(f"{parent_dir}: parent level not trained yet (run `dvc repro train@{spec.parent}`)")
    parent = check_level_dir(parent_dir, levels, list(levels).index(spec.parent))
    if parent.level != spec.parent:
        raise UserError(f"{parent_dir}: holds level {parent.level!r}, but {spec.name!r} trains from {spec.parent!r}")
    return parent


def build_run(accelerator: Accelerator, cfg: TrainConfig, spec: TrainSpec, config: LevelConfig,
              parent_dir: Path | None, paths: TrainPaths, compute: ComputeConfig) -> Run:
    """The model (from the parent's folder, or new), its optimiser, the latents, the text cache and the batch plan."""
    device = accelerator.device
    base = load_base(config.model, device=device)
    unet, conditioner = build_level_model(base, config, parent_dir)
    configure_trainable(unet, conditioner, spec)
    # diffusers' training examples: frozen weights in the compute dtype, trainable ones (LoRA, condition modules)
    # fp32 under autocast. The LoRA stays fp32 even where frozen (level >= 1 writes it again).
    frozen_in_compute_dtype(base, unet, COMPUTE_DTYPES[cfg.mixed_precision])
    if compute.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    raw = TrainModel(unet, conditioner).to(device)
    trainable = [p for p in raw.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=spec.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    model, opt = accelerator.prepare(raw, opt)
    if compute.compile:
        raw.unet.compile()  # in place: the module, its parameter names and what write_level saves stay the same
    latents = latent_source(base, paths.shards, paths.latents if config.model.preset == "sd15" else None)
    scheduler = noise_scheduler(base, cfg.noise_schedule)
    plan = BatchPlan.of(cfg.batch_size, accelerator.num_processes, compute.micro_batch)
    return Run(
        accelerator=accelerator, cfg=cfg, spec=spec, levels=list(config.levels), seed=config.seed, base=base,
        config=config, model=model,
        raw=accelerator.unwrap_model(model), opt=opt, trainable=trainable, latents=latents,
        lineages=latents.lineages, cache=TextEmbeddingCache(base.text_encoder, base.tokenizer, device=device),
        scheduler=scheduler, plan=plan,
        draws=Draws(seed=config.seed, batch=cfg.batch_size, levels=list(config.levels),
                    level_dropout=cfg.level_dropout, num_train_timesteps=scheduler.config.num_train_timesteps),
    )


def train_step(run: Run, step: int, batches: list[dict] | None = None) -> torch.Tensor:
    """One optimiser step on global batch ``step``: this process's micro-batches (``batches``, as
    :meth:`Run.micro_batches` makes them; made here when None), their gradients accumulated without a DDP sync
    until the last. Returns the mean micro-batch loss, on the device."""
    acc, spec = run.accelerator, run.spec
    batches = run.micro_batches(step) if batches is None else batches
    cut = spec.cut_off
    if spec.random_cut_off:  # one level for the whole global batch
        cut = int(torch.randint(0, len(run.levels), (1,), generator=step_rng(run.seed, step)))
    total = torch.zeros((), device=acc.device)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        with nullcontext() if last else acc.no_sync(run.model):
            loss = _micro_loss(run, batch, cut)
            acc.backward(loss / len(batches))
        total += loss.detach()
    acc.clip_grad_norm_(run.trainable, run.cfg.max_grad_norm)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return total / len(batches)


def _micro_loss(run: Run, batch: dict, cut: int) -> torch.Tensor:
    """The loss of one micro-batch (``training/batches.py`` drew its images, noise, timesteps and dropout)."""
    acc = run.accelerator
    x0, noise, t = (batch[k].to(acc.device, non_blocking=True) for k in ("x0", "noise", "t"))
    hidden = _condition_inputs(run, batch, cut)
    noisy, target = forward_process(run.scheduler, x0, noise, t)
    torch.manual_seed(dropout_seed(run.seed, batch["step"], batch["first"]))  # the condition module's dropout
    with acc.autocast():
        pred = run.model(noisy, t, hidden, cut, run.spec.prompt_only)
    return F.mse_loss(pred.float(), target.float())


def _condition_inputs(run: Run, batch: dict, cut: int) -> torch.Tensor:
    """Text states ``[B, L, T, D]`` of the micro-batch's (dropped-out) lineages, down to level ``cut``."""
    levels = run.levels
    if run.spec.prompt_only:
        texts = [[species_prompt(run.lineages[int(i)], levels)] for i in batch["index"]]
    else:
        # a partial lineage's missing names and the dropped level are "<level>: None" (docs/method.md §1.2, §2)
        texts = [lineage_texts(levels, lin, species_text=run.cfg.species_text)[: cut + 1] for lin in batch["lineages"]]
    return run.cache.lineages(texts)


def _loop(run: Run, compute: ComputeConfig, scratch: Path, fp: str, start_step: int,
          max_steps_this_run: int | None, preview: PreviewConfig | None) -> dict:
    """Steps ``start_step .. spec.steps``: log the loss (and previews), write step checkpoints, stop on a
    non-finite loss."""
    acc, spec = run.accelerator, run.spec
    live = open_live(scratch / "live", start_step) if acc.is_main_process else None
    previews = _previews(run, preview) if live is not None else None
    bar = tqdm(total=spec.steps, initial=start_step, desc=f"train {spec.name}", disable=not acc.is_main_process)
    first_bad = torch.full((), -1, dtype=torch.long, device=acc.device)  # first non-finite step; no host sync
    t0, last_loss, done = time.time(), None, 0
    saved = start_step  # the newest checkpoint on disk (a resumed run started from one)
    with bar:
        for step, batches in _steps(run, compute, start_step):
            loss = train_step(run, step, batches)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            done += 1
            bar.update(1)
            progress.note(_where(spec, step + 1, saved))  # what a Ctrl-C reports (cli.run_stage)
            if log_due(step + 1, spec.steps, compute.log_every):
                _stop_if_diverged(run, first_bad)
                last_loss = acc.gather(loss.reshape(1)).mean().item()
                bar.set_postfix(loss=f"{last_loss:.4f}")
                if live is not None:  # (the lr is constant, Table S1, and in train_config.json: no flat curve)
                    log_row(live, step + 1, {"loss": last_loss})
            if previews is not None:
                previews.maybe_log(live, step + 1)  # no RNG of training is drawn from (training/previews.py)
            every = compute.checkpoint_every
            if every and (step + 1) % every == 0 and step + 1 < spec.steps:
                _stop_if_diverged(run, first_bad)  # a checkpoint never holds weights trained on a nan loss
                save_checkpoint(scratch, fp, step + 1, run)
                saved = step + 1
                progress.note(_where(spec, step + 1, saved))
            if max_steps_this_run is not None and done >= max_steps_this_run:
                return {"stopped_at": step + 1}
    if live is not None:
        live.end()
    seconds = time.time() - t0
    acc.wait_for_everyone()
    plan = run.plan
    return {
        "name": spec.name,
        "steps": spec.steps,
        "batch_size": plan.batch,
        "resumed_from": start_step,
        "final_loss": last_loss,
        "seconds_this_run": round(seconds, 2),
        "processes": plan.world,
        "micro_batch": plan.micro,
        "accumulation": plan.accumulation,
        "samples_per_second": round(done * plan.batch / max(seconds, 1e-9), 2),
    }


def _steps(run: Run, compute: ComputeConfig, start_step: int) -> Iterator[tuple[int, list[dict]]]:
    """``(step, this process's micro-batches)`` from ``start_step`` on, prepared by ``compute.num_workers`` data
    loader processes ahead of the GPU (pinned, copied without blocking) or, with 0, here."""
    acc = run.accelerator
    data = MicroBatches(run.latents, run.draws, run.plan, acc.process_index, start_step, run.spec.steps)
    workers = compute.num_workers
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=workers,
                                         pin_memory=acc.device.type == "cuda", prefetch_factor=2 if workers else None,
                                         persistent_workers=False)
    batches = iter(loader)
    for step in range(start_step, run.spec.steps):
        yield step, [next(batches) for _ in range(run.plan.accumulation)]


def _where(spec: TrainSpec, step: int, saved: int) -> str:
    kept = f"checkpoint at step {saved}" if saved else "no checkpoint yet: it starts over"
    return f"at step {step}/{spec.steps} of {spec.name} ({kept})"


def _previews(run: Run, preview: PreviewConfig | None) -> TrainingPreviews | None:
    """Previews of a level being trained (none for the random-level ablation: no one level to show)."""
    if preview is None or not preview.every or run.spec.random_cut_off:
        return None
    return TrainingPreviews.of_run(preview, run)


def _stop_if_diverged(run: Run, first_bad: torch.Tensor) -> None:
    """A nan/inf loss on any rank stops every rank with the same one-line error (nothing is written)."""
    bad = run.accelerator.gather(first_bad.reshape(1))
    bad = bad[bad >= 0]
    if len(bad):
        spec = run.spec
        raise UserError(f"train {spec.name}: the loss became non-finite (nan/inf) at step {int(bad.min()) + 1}; "
                        f"lower the learning rate (this run's: {spec.lr:g}; train.lr_first for level 0 and the "
                        "LoRA/joint/random_level methods, train.lr otherwise) and re-run")


# Summary keys that differ between runs of the same inputs (scratch/.../timing.json, not run.json).
# The process count and the micro-batch are here too: they do not change the model (training/batches.py).
TIMING_KEYS = ("resumed_from", "seconds_this_run", "samples_per_second", "processes", "micro_batch", "accumulation")


def _write_outputs(out_dir: Path, log_dir: Path, scratch: Path, config: LevelConfig, raw: TrainModel,
                   summary: dict) -> None:
    """Curves + ``run.json`` into ``log_dir``, ``timing.json`` into ``scratch``; the level folder into ``out_dir``
    (swapped in whole)."""
    # Training curves (dvclive) go next to the other metrics, not inside the cached model out.
    shutil.rmtree(log_dir, ignore_errors=True)
    if (scratch / "live").exists():
        shutil.copytree(scratch / "live", log_dir)
    # declared as a DVC plots out of train@<level>: present (maybe empty) even with preview.every 0
    (log_dir / "plots" / "images").mkdir(parents=True, exist_ok=True)
    # The model first: run.json (the record that the run finished) only once the level folder is written.
    write_level(out_dir, config, raw.unet, raw.conditioner)
    # run.json holds what the same inputs always give: `report` depends on the whole log folder, so a wall time
    # in it would change the committed dvc.lock on every fresh `dvc repro`. Timings (and where a resumed run
    # started) go to the scratch folder. allow_nan=False: both are always valid JSON.
    record = {k: v for k, v in summary.items() if k not in TIMING_KEYS}
    write_text(log_dir / "run.json", json.dumps(record, indent=2, allow_nan=False) + "\n")
    timing = {k: summary[k] for k in TIMING_KEYS}
    write_text(scratch / "timing.json", json.dumps(timing, indent=2, allow_nan=False) + "\n")
