"""Mass generation (the ``generate`` stage): the Table S2 plan drawn to PNGs, resumable and multi-process.

docs/architecture.md ``generate``: the plan (``plan.py``) is expanded to one row per image; each process
(``accelerate launch`` on GPUs, ``torchrun`` on CPU; ``accelerate.PartialState``) takes every
``world_size``-th pending image, draws batches that mix taxa (``level_sampler.py``: pixels do not depend on the
batch), and writes lossless PNGs by temp name + rename, encoded in a few threads while the next batch is drawn
(:class:`PngWriter`). An image whose PNG exists and decodes is never
drawn again, so a killed run resumes where it stopped. Rank 0 writes ``manifest.csv`` after a barrier.

The output folder records what its images were drawn with (``settings.json``: everything that changes
pixels); a run with another fingerprint removes the old images instead of mixing them with new ones, but
only after the new model has loaded (a broken model must not cost the old images). While a run writes,
rank 0 holds ``.lock`` in the folder (``fcntl.flock``), so a second run on the same folder stops at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from accelerate import PartialState
from PIL import Image
from tqdm.auto import tqdm

from taxadiffusion.config import Experiment, GenerateConfig, SamplingConfig
from taxadiffusion.core import progress
from taxadiffusion.core.device import on_cpu_only
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_path, sha256_file, write_json, write_text
from taxadiffusion.models.level import check_level_dir
from taxadiffusion.sampling.level_sampler import NonFiniteSamples, TaxaSampler, decode_rows, load_sampler, unet_rows
from taxadiffusion.sampling.plan import PlanRule, make_plan, plan_images, read_test_table

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
LOCK_FILE = ".lock"
_IMAGE_NAME = re.compile(r"^\d{4,}\.png$")


# --------------------------------------------------------------------------------------------------
# The output folder: fingerprint, lock, images


def fingerprint(sampling: SamplingConfig, exp: Experiment, target_level: str, model_dir: Path,
                device: torch.device) -> dict:
    """Everything that changes pixels; a resumed run with a different fingerprint starts over."""
    files = {}
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in (".safetensors", ".json"):
            files[path.name] = sha256_file(path)
    return {
        "settings": {**asdict(sampling), "guidance_range": list(sampling.guidance_range)},
        "seed": exp.seed,
        "levels": list(exp.levels),
        "target_level": target_level,
        "base": {"preset": exp.model.preset, "pretrained": exp.model.pretrained, "revision": exp.model.revision},
        "model_files": files,
        "device_type": device.type,
        "unet_rows": unet_rows(device),
        "decode_rows": decode_rows(device),
    }


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` (an exclusive ``fcntl.flock``, our pid inside) while the block runs.

    Resume and the settings reset assume one writer per folder: a second run stops at once with the pid of
    the first. The kernel drops the lock when its holder dies, so a killed run never blocks the next one.
    The file is removed on exit (before unlocking, so a run that opened it meanwhile sees a stale inode
    and opens the path again instead of sharing a lock no one else checks).
    """
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{out}: another generate run (pid {holder}) is writing here ({path} is locked); "
                            "wait for it to finish or stop it") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it between our open and our lock: lock the new file
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def image_files(out: Path) -> list[Path]:
    """Images this stage may have written: ``<class>/<taxon>/<digits>.png`` under ``out``."""
    return [p for p in out.glob("*/*/*.png") if _IMAGE_NAME.match(p.name)]


def png_is_complete(path: Path) -> bool:
    """The file is a PNG whose chunks are all present with correct CRCs (PIL ``verify``: reads the whole
    file but does not inflate it, ~0.2 ms for a 512 px image against ~4 ms for a full decode)."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... for a damaged file
        return False


def write_png(path: Path, pixels: torch.Tensor) -> None:
    """Lossless PNG by temp name + rename: a killed run never leaves a truncated image."""
    with atomic_path(path) as tmp:
        Image.fromarray(pixels.numpy()).save(tmp, format="PNG")


class PngWriter:
    """:func:`write_png` in ``threads`` threads, off the sampling loop (PIL's zlib encode releases the GIL). At most
    ``limit`` images are in flight: :meth:`submit` waits for the oldest beyond that, so memory stays flat; a failed
    write raises from the next :meth:`submit` or from :meth:`close`. Each PNG is still written by temp name +
    rename, so a killed run leaves complete images or temporaries (removed by :func:`start`), as before."""

    def __init__(self, threads: int, limit: int):
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="generate-png")
        self.limit = max(1, limit)
        self.pending: deque[Future] = deque()
        self.written = 0  # images on disk

    def _wait_oldest(self) -> None:
        self.pending.popleft().result()  # re-raises the write's exception here, in the sampling thread
        self.written += 1

    def submit(self, path: Path, pixels: torch.Tensor) -> None:
        while len(self.pending) >= self.limit:
            self._wait_oldest()
        self.pending.append(self.pool.submit(write_png, path, pixels))

    def close(self) -> None:
        """Finish every write (a batch drawn before an error is kept for resume), then stop the threads."""
        try:
            while self.pending:
                self._wait_oldest()
        finally:
            self.pool.shutdown(wait=True)


def changed_settings(out: Path, new: dict) -> list[str] | None:
    """What differs between ``new`` and the folder's ``settings.json`` (None: no file, or the same)."""
    path = out / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError:
        previous = None
    if previous == new:
        return None
    previous = previous if isinstance(previous, dict) else {}
    return sorted(k for k in new if previous.get(k) != new[k]) or [SETTINGS_FILE]


def start(out: Path, new: dict, changed: list[str] | None) -> int:
    """Drop temp files of a killed run; wipe images of a run with other settings. Returns images removed."""
    for tmp in out.glob("*/*/.tmp-*"):
        tmp.unlink()
    removed = 0
    if changed is not None:
        files = image_files(out)
        log.warning("generate: %s changed since the images in %s were drawn: removing %d image(s)",
                    ", ".join(changed), out, len(files))
        for path in files:
            path.unlink()
        removed = len(files)
        (out / "manifest.csv").unlink(missing_ok=True)
    write_json(out / SETTINGS_FILE, new)
    return removed


def drop_broken(out: Path, images: pd.DataFrame) -> int:
    """Remove planned PNGs that exist but do not verify (damaged on disk), so they are drawn again."""
    broken = [out / p for p in images["path"] if (out / p).is_file() and not png_is_complete(out / p)]
    if broken:
        log.warning("generate: %d image(s) in %s do not decode, drawing them again (e.g. %s)", len(broken), out,
                    broken[0].relative_to(out))
    for path in broken:
        path.unlink()
    return len(broken)


def finish(out: Path, images: pd.DataFrame, levels: list[str], sampling: SamplingConfig) -> int:
    """Write ``manifest.csv`` (all planned images must exist); remove images no longer in the plan."""
    missing = [p for p in images["path"] if not (out / p).is_file()]
    if missing:
        raise UserError(f"{out}: {len(missing)} planned image(s) missing after generation, e.g. {missing[0]}; "
                        "rerun to resume")
    manifest = images.copy()
    manifest["sampler"] = sampling.sampler
    manifest["steps"] = sampling.steps
    manifest["guidance"] = sampling.guidance
    manifest["scale"] = sampling.scale
    cols = [*levels, "taxon", "index", "path", "seed", "sampler", "steps", "guidance", "scale"]
    write_text(out / "manifest.csv", manifest[cols].to_csv(index=False))
    planned = {str(out / p) for p in images["path"]}
    stale = [p for p in image_files(out) if str(p) not in planned]
    for path in stale:
        path.unlink()
    for folder in sorted({p.parent for p in stale} | {p.parent.parent for p in stale}, key=lambda p: -len(p.parts)):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return len(stale)


# --------------------------------------------------------------------------------------------------
# The stage


def draw_pending(sampler: TaxaSampler, images: pd.DataFrame, mine: list[int], batch_size: int,
                 levels: list[str], out: Path, state) -> int:
    """Draw the images ``mine`` (row numbers of ``images``) in batches; returns how many were written."""
    bar = tqdm(total=len(mine), unit="img", desc=f"generate (rank {state.process_index}/{state.num_processes})",
               disable=not state.is_main_process, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} [{elapsed}<{remaining}, {rate_fmt}]")
    rows = images.to_dict("records")

    def advance(share: float) -> None:
        bar.update(min(share, max(0.0, bar.total - bar.n)))  # float shares must not overshoot the total

    # two batches in flight: one encoded while the next is drawn (64 PNGs of 512 px take ~1-2 s on one core,
    # against ~1 min of SD1.5 sampling on a GPU); 4 threads at most: the sampler keeps the other cores
    writer = PngWriter(threads=min(4, os.cpu_count() or 1), limit=2 * batch_size)
    progress.note(f"with 0/{len(mine)} pending images written")
    try:
        for first in range(0, len(mine), batch_size):
            batch = [rows[i] for i in mine[first : first + batch_size]]
            try:
                pixels = sampler.draw([{lv: r[lv] for lv in levels} for r in batch], [r["seed"] for r in batch],
                                      progress=advance)
            except NonFiniteSamples as exc:
                more = f" (+{len(batch) - 1} more)" if len(batch) > 1 else ""
                raise UserError(f"{out}: {exc} ({batch[0]['path']}{more})") from None
            for r, px in zip(batch, pixels):
                writer.submit(out / r["path"], px)
            # what a Ctrl-C reports (cli.run_stage): the images on disk, not those still being encoded
            progress.note(f"with {writer.written}/{len(mine)} pending images written")
            bar.n = first + len(batch)  # exact count once the batch is drawn (the per-step shares are floats)
            bar.refresh()
    finally:
        writer.close()
    progress.note(f"with {writer.written}/{len(mine)} pending images written")
    bar.close()
    return writer.written


def generate(cfg: GenerateConfig, sampling: SamplingConfig, exp: Experiment, model_dir: str | Path,
             prepared_dir: str | Path, out_dir: str | Path, state=None) -> dict:
    """Draw every image of the plan that is not in ``out_dir`` yet; write plan.csv and manifest.csv.

    ``exp.seed`` (params.yaml ``seed``) picks the capped classes' taxa and every image's noise. Returns a summary
    (``stale_removed`` on rank 0 only).
    """
    model_cfg, levels, seed = exp.model, exp.levels, exp.seed
    if cfg.target_level not in levels:
        raise UserError(f"generate.target_level={cfg.target_level!r}: expected one of {levels}")
    cut_off = levels.index(cfg.target_level)
    model_dir, out = Path(model_dir), Path(out_dir)
    check_level_dir(model_dir, levels, cut_off)
    test = read_test_table(prepared_dir, levels)
    plan = make_plan(test, levels, PlanRule.of(cfg), seed, where=str(Path(prepared_dir) / "table.parquet"))
    images = plan_images(plan, levels, cfg.target_level, seed)

    # cpu=True on a CPU-only machine: otherwise torchrun/accelerate ranks run as independent single processes
    # (docs/install.md "Measured stack behaviour": accelerate 1.15 on CPU)
    state = state or PartialState(cpu=on_cpu_only())
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    # ranks > 0 write only between rank 0's barriers, so under rank 0's lock
    with output_lock(out) if state.is_main_process else nullcontext():
        sampler, removed, broken = None, 0, 0
        if state.is_main_process:
            new = fingerprint(sampling, exp, cfg.target_level, model_dir, state.device)
            changed = changed_settings(out, new)
            if changed is not None:  # load (and check) before you destroy: old images outlive a broken model
                sampler = load_sampler(model_dir, model_cfg, sampling, cut_off, state.device)
            write_text(out / "plan.csv", plan.to_csv(index=False))
            removed = start(out, new, changed)
            broken = drop_broken(out, images)
        state.wait_for_everyone()
        pending = [i for i, p in enumerate(images["path"]) if not (out / p).is_file()]
        state.wait_for_everyone()  # every rank has listed the pending images before any is written
        mine = pending[state.process_index :: state.num_processes]
        drawn = 0
        if mine:
            sampler = sampler or load_sampler(model_dir, model_cfg, sampling, cut_off, state.device)
            drawn = draw_pending(sampler, images, mine, cfg.batch_size, levels, out, state)
        state.wait_for_everyone()
        summary = {"taxa": len(plan), "images": len(images), "pending": len(pending), "drawn_here": drawn,
                   "removed": removed, "broken_removed": broken,
                   "capped_classes": sorted(set(plan.loc[plan["capped"], levels[0]]))}
        if state.is_main_process:
            summary["stale_removed"] = finish(out, images, levels, sampling)
    return summary

