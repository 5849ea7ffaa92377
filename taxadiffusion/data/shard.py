"""Stage ``shard``: ``data/prepared/table.parquet`` -> WebDataset tar shards (docs/architecture.md).

``data/shards/{train,test}/shard-%06d.tar`` hold the samples of each split in table order:
``__key__`` = ``%09d`` of the table row index, ``png`` = the preprocessed RGB image at
``dataset.resolution`` (see :mod:`taxadiffusion.data.image_files`), ``json`` = ``{"lineage", "row", "path"}``.
Tar members carry a fixed mtime/owner, so two runs give byte-identical shards. The whole
folder (shards and ``index.json``) is built under a temporary name and swapped in when complete, so a
killed run leaves the old output or the new one, never a mix.

Readers for training / evaluation: :mod:`taxadiffusion.data.shard_reader`.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import webdataset as wds
from tqdm.auto import tqdm

from taxadiffusion.config import DatasetConfig, ShardConfig
from taxadiffusion.core import files
from taxadiffusion.core.errors import UserError
from taxadiffusion.data.image_files import encode_png, load_preprocessed
from taxadiffusion.data.readers import BBOX_COLUMNS
from taxadiffusion.data.shard_reader import SPLITS, available_cores

SHARD_PATTERN = "shard-%06d.tar"


_BATCH = 64  # images preprocessed per pool.map before being written in order (at least 4 per thread)


def _tar_writer(path: Path) -> wds.TarWriter:
    # Fixed mtime / owner: identical inputs give identical bytes (webdataset stamps time.time() otherwise).
    return wds.TarWriter(str(path), encoder=False, mtime=0.0, user="taxadiffusion", group="taxadiffusion")


def _load_table(prepared: Path, levels: list[str]) -> pd.DataFrame:
    path = prepared / "table.parquet"
    if not path.is_file():
        raise UserError(f"{path}: not found (run the prepare stage first)")
    table = pd.read_parquet(path)
    missing = [c for c in ["path", "split", "row", *levels] if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing} for params.levels {levels} (rerun the prepare stage)")
    return table


def _sample_meta(rec: dict, levels: list[str]) -> bytes:
    meta = {"lineage": {lv: rec[lv] for lv in levels}, "row": int(rec["row"]), "path": rec["path"]}
    return json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _make_sample(args) -> dict:
    idx, rec, root, mode, resolution, levels, has_bbox = args
    bbox = None
    if has_bbox and not any(pd.isna(rec[c]) for c in BBOX_COLUMNS):
        bbox = tuple(float(rec[c]) for c in BBOX_COLUMNS)
    try:
        img = load_preprocessed(root / rec["path"], mode, resolution, bbox)
    except Exception as exc:  # any decode/IO failure is reported as one line naming the row
        raise UserError(
            f"{root / rec['path']}: table row {idx} (annotation row {rec['row']}): cannot preprocess image "
            f"({type(exc).__name__}: {str(exc)[:120]}); rerun prepare with prepare.check_images: decode"
        ) from None
    return {"__key__": f"{idx:09d}", "png": encode_png(img), "json": _sample_meta(rec, levels)}


def _write_split(rows: pd.DataFrame, split_dir: Path, split: str, per_shard: int, ctx: tuple,
                 pool: ThreadPoolExecutor, show_progress: bool) -> list[str]:
    root, mode, resolution, levels, has_bbox = ctx
    split_dir.mkdir(parents=True, exist_ok=True)
    records = rows.to_dict("records")
    indices = rows.index.tolist()
    names: list[str] = []
    bar = tqdm(total=len(records), desc=f"shard: {split}", unit="img", disable=not show_progress)
    for shard_no, start in enumerate(range(0, len(records), per_shard)):
        name = SHARD_PATTERN % shard_no
        writer = _tar_writer(split_dir / name)  # inside the whole-folder temporary of write_shards
        try:
            stop = min(start + per_shard, len(records))
            step = max(_BATCH, 4 * available_cores())  # enough jobs in flight to keep every thread busy
            for b in range(start, stop, step):
                jobs = [(indices[i], records[i], root, mode, resolution, levels, has_bbox)
                        for i in range(b, min(b + step, stop))]
                for sample in pool.map(_make_sample, jobs):  # map keeps table order
                    writer.write(sample)
                bar.update(len(jobs))
        finally:
            writer.close()
        names.append(f"{split}/{name}")
    bar.close()
    return names


def write_shards(cfg: DatasetConfig, shard_cfg: ShardConfig, levels: list[str], prepared: str | Path,
                 out: str | Path, show_progress: bool = True) -> dict:
    """Write the train/test shards and ``index.json``; returns the index."""
    per_shard = shard_cfg.samples_per_shard
    prepared, out, root = Path(prepared), Path(out), Path(cfg.images)
    table = _load_table(prepared, levels)
    bad_split = sorted(set(table["split"].dropna().unique()) - set(SPLITS))
    if bad_split:
        raise UserError(f"{prepared / 'table.parquet'}: unknown split value(s) {bad_split} (rerun the prepare stage)")
    has_bbox = set(BBOX_COLUMNS) <= set(table.columns)
    ctx = (root, cfg.preprocess, cfg.resolution, levels, has_bbox)

    index = {"levels": levels, "resolution": cfg.resolution, "preprocess": cfg.preprocess,
             "samples_per_shard": per_shard}
    # The whole folder is built under a temporary name and swapped in: a killed run leaves the old shards
    # and index or the new ones, never a mix of resolutions. Decode / resize / PNG-encode release the GIL for
    # most of their time, so threads scale on cores: one per available core (pool.map keeps table order, so
    # the bytes do not depend on the thread count).
    with files.atomic_dir(out) as staging, ThreadPoolExecutor(max_workers=available_cores()) as pool:
        for split in SPLITS:
            rows = table[table["split"] == split]
            names = _write_split(rows, staging / split, split, per_shard, ctx, pool, show_progress)
            index[split] = {"shards": names, "count": int(len(rows))}
        files.write_json(staging / "index.json", index)
    return index
