"""The ``preflight`` stage: run every check, report all problems together in one message, or write the stamp.

Why a stage of its own, first in the DAG: before it, a FishNet run with a missing Inception file trained five levels
and generated every image before ``evaluate`` said so, and then stopped at the next missing backbone; a
``dataset.resolution`` the base was not made for surfaced at ``base``, after ``shard`` wrote every image at it.

The stamp ``data/preflight.json`` (``synthesize`` and ``images`` depend on it, which orders this stage first) holds
only the names of the checks: no timestamp, no free-disk figure, no found path. The stage is ``always_changed``
(what it checks, caches and free disk, is outside DVC's view), and DVC compares the stamp's hash, so a re-run that
finds nothing new re-runs nothing downstream and nothing here enters a hash that could change a result. The figures
(the disk estimate, the native resolution, the time taken) are printed instead.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from taxadiffusion.config import Params
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import write_json
from taxadiffusion.preflight.base_model import base_model_facts
from taxadiffusion.preflight.plan import data_facts, disk_lines, disk_plan
from taxadiffusion.preflight.weights import backbone_problems

log = logging.getLogger(__name__)

CHECKS = [
    "model.pretrained: present (local folder, or the HF cache when offline), complete, native resolution",
    "evaluate.backbones: every backbone's weights found as evaluate finds them",
    "dataset: the columns the levels need, names, a test image per class, the generation plan (not synthetic)",
    "disk: the planned shards, latents and generated images fit",
    "compute: train.batch_size splits into the configured processes and micro-batches",
]


def problems_message(problems: list[str]) -> str:
    """All problems in one message: a summary line, then one line per problem, each naming its param or path."""
    lines = [f"  {i}. {p}" for i, p in enumerate(problems, 1)]
    return (f"preflight: {len(problems)} problem(s), found before anything was prepared or trained; fix them all, "
            "then re-run:\n" + "\n".join(lines))


def compute_problems(params: Params) -> list[str]:
    """The global batch splits into this machine's workers x ``compute.nodes`` (checked again by training: a
    multi-node run sees the other nodes' GPUs only then); the plan is printed."""
    from taxadiffusion.core.launch import processes_per_node  # torch's device count: imported when checked
    from taxadiffusion.training.batches import BatchPlan

    compute = params.compute
    world = processes_per_node(compute) * compute.nodes
    try:
        plan = BatchPlan.of(params.train.batch_size, world, compute.micro_batch)
    except UserError as exc:
        return [str(exc).removeprefix("params.yaml ")]
    log.info("preflight: train.batch_size %d = %d process(es) x %d micro-batch(es) of %d", plan.batch, plan.world,
             plan.accumulation, plan.micro)
    return []


def run_preflight(params: Params, out: str | Path, workspace: str | Path = ".") -> None:
    """Every check of :data:`CHECKS`; one :class:`UserError` listing all problems, else write the stamp ``out``."""
    start = time.perf_counter()
    base = base_model_facts(params.model, params.dataset.resolution)
    problems = list(base.problems)
    problems += backbone_problems(params.evaluate)
    data = data_facts(params)
    problems += data.problems
    line, short = disk_lines(disk_plan(params, data, base.vae_scale), workspace)
    log.info("preflight: %s", line)
    if base.native:
        log.info("preflight: base %s at %d px native (dataset.resolution %d)", params.model.pretrained, base.native,
                 params.dataset.resolution)
    if data.images is not None:
        log.info("preflight: %s: %d images before the image checks (train %d), the plan draws %s",
                 params.dataset.metadata, data.images, data.train, data.generated)
    if short:
        problems.append(short)
    problems += compute_problems(params)
    if problems:
        raise UserError(problems_message(problems))
    write_json(out, {"checks": CHECKS})
    log.info("preflight: %d checks passed in %.1f s", len(CHECKS), time.perf_counter() - start)
