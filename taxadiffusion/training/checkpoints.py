"""Step checkpoints of a training run: trainable tensors + optimiser state in one safetensors file (no pickles);
its header holds the run's fingerprint, the step and the sha256 of the tensors, so a truncated or bit-flipped
checkpoint is detected and skipped (the run resumes from the one before).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from taxadiffusion.core.files import atomic_path

if TYPE_CHECKING:  # training imports this module; the types only annotate
    from taxadiffusion.training.run import Run, TrainModel

log = logging.getLogger(__name__)

CHECKPOINT_GLOB = "checkpoint-*.safetensors"


def _trainable_state(raw: TrainModel) -> dict:
    names = {n for n, p in raw.named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().clone() for n, t in raw.state_dict().items() if n in names}


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def checkpoint_tensors(run: Run) -> dict[str, torch.Tensor]:
    """``model/<param>`` (trainable tensors) and ``optimizer/<index>/<name>`` (AdamW state), on the CPU."""
    tensors = {f"model/{n}": t for n, t in _trainable_state(run.raw).items()}
    for i, state in run.opt.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optimizer/{i}/{name}"] = value.detach().cpu().clone().contiguous()
    return tensors


def write_checkpoint_file(path: Path, tensors: dict[str, torch.Tensor], fingerprint: str, step: int,
                          extra: dict[str, str] | None = None) -> None:
    """One checkpoint file, written atomically; its header records the sha256 of its tensors."""
    meta = {"fingerprint": fingerprint, "step": str(step), "sha256": _tensor_digest(tensors), **(extra or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def save_checkpoint(scratch: Path, fp: str, step: int, run: Run) -> None:
    acc = run.accelerator
    if acc.is_main_process:
        # fp16: the loss scale is part of the state
        extra = {"scaler": json.dumps(acc.scaler.state_dict())} if acc.scaler is not None else None
        ckpt_dir = scratch / "checkpoints"
        write_checkpoint_file(ckpt_dir / f"checkpoint-{step:08d}.safetensors", checkpoint_tensors(run), fp, step, extra)
        for old in sorted(ckpt_dir.glob(CHECKPOINT_GLOB))[:-2]:  # keep the two newest
            old.unlink()
    acc.wait_for_everyone()


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors + header of a checkpoint; ``ValueError`` (or safetensors' error) when it is not intact."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    missing = sorted({"fingerprint", "step", "sha256"} - set(meta))
    if missing:
        raise ValueError(f"no {missing} in its header")
    if _tensor_digest(tensors) != meta["sha256"]:
        raise ValueError("its tensors do not match the sha256 in its header")
    return tensors, meta


def _split_checkpoint(run: Run, tensors: dict) -> tuple[dict, dict]:
    """The model state and an optimiser state dict (param groups: the live optimiser's, same settings)."""
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    expected = {n for n, p in run.raw.named_parameters() if p.requires_grad}
    if set(model_state) != expected:
        raise ValueError(f"its {len(model_state)} model tensors are not this run's {len(expected)} trainable ones")
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    return model_state, {"state": state, "param_groups": run.opt.state_dict()["param_groups"]}


def resume(scratch: Path, fp: str, run: Run) -> int:
    """Load the newest intact checkpoint of this run (by fingerprint); returns its step (0: none)."""
    acc = run.accelerator
    for path in sorted((scratch / "checkpoints").glob(CHECKPOINT_GLOB), reverse=True):
        try:
            tensors, meta = read_checkpoint(path)
            if meta["fingerprint"] != fp:
                log.info("ignoring %s: written by a run with other params or data", path)
                return 0
            model_state, opt_state = _split_checkpoint(run, tensors)
        except Exception as exc:  # truncated by a killed process, or corrupt: never trusted
            if acc.is_main_process:
                log.warning("skipping checkpoint %s: unreadable or corrupt (%s)", path, str(exc).splitlines()[0])
            continue
        run.raw.load_state_dict(model_state, strict=False)
        run.opt.load_state_dict(opt_state)
        if "scaler" in meta and acc.scaler is not None:
            acc.scaler.load_state_dict(json.loads(meta["scaler"]))
        if acc.is_main_process:
            log.info("resuming from %s (step %s)", path, meta["step"])
        return int(meta["step"])
    return 0
