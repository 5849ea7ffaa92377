"""The training curves of a resumable run: dvclive's log in ``<scratch>/live`` (copied to ``metrics/train/<level>``).

Its ``step`` is the optimiser step the row was logged after (:func:`log_due`: the first step, every
``train.log_every`` steps, and the last, so even a run shorter than ``log_every`` draws a line, on the axis of the
steps trained). A resumed run drops the rows the killed run logged past its checkpoint (they are logged again), so
its curves equal an uninterrupted run's row for row. dvclive's own ``resume=True`` re-reads the last logged step
from ``metrics.json`` instead, and keeps rows logged after the checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dvclive import Live


def log_due(step: int, total: int, log_every: int) -> bool:
    """Whether the loop logs after optimiser step ``step`` (1-based) of ``total``: the first, every
    ``log_every``-th, and the last."""
    return step == 1 or step % log_every == 0 or step == total


def _drop_rows_from(live_dir: Path, first: int) -> None:
    """Remove the rows with ``step >= first`` from every metric's ``.tsv`` under ``live_dir``."""
    for tsv in sorted((live_dir / "plots" / "metrics").glob("**/*.tsv")):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines:
            continue
        col = lines[0].rstrip("\n").split("\t").index("step")
        tsv.write_text("".join(lines[:1] + [row for row in lines[1:] if int(row.split("\t")[col]) < first]))


def open_live(live_dir: str | Path, start_step: int) -> Live:
    """dvclive's log of a run that starts after optimiser step ``start_step`` (0: a new log). The loop sets
    ``live.step`` to the optimiser step before each row (:func:`log_row`)."""
    live_dir = Path(live_dir)
    if start_step == 0:
        shutil.rmtree(live_dir, ignore_errors=True)
    else:
        _drop_rows_from(live_dir, start_step + 1)  # rows up to the checkpoint stay; later ones are logged again
    live = Live(str(live_dir), resume=start_step > 0, dvcyaml=None, save_dvc_exp=False, report=None)
    live.step = start_step
    return live


def log_row(live: Live, step: int, values: dict[str, float]) -> None:
    """One row of every metric in ``values`` at optimiser step ``step``."""
    live.step = step
    for name, value in values.items():
        live.log_metric(name, value)
    live.next_step()
