"""The training curves of a resumable run: dvclive's log in ``<scratch>/live`` (copied to ``metrics/train/<level>``).

Its ``step`` is the number of the log event (one every ``train.log_every`` training steps, and one at the last).
A resumed run continues at the event its checkpoint had reached, after dropping the rows the killed run logged
past that checkpoint (they are logged again), so its curves equal an uninterrupted run's row for row. dvclive's
own ``resume=True`` re-reads the last logged step from ``metrics.json`` instead: it repeats step 0 after a kill at
the first event and keeps rows logged after the checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dvclive import Live


def _drop_rows_from(live_dir: Path, first: int) -> None:
    """Remove the rows with ``step >= first`` from every metric's ``.tsv`` under ``live_dir``."""
    for tsv in sorted((live_dir / "plots" / "metrics").glob("**/*.tsv")):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines:
            continue
        col = lines[0].rstrip("\n").split("\t").index("step")
        tsv.write_text("".join(lines[:1] + [row for row in lines[1:] if int(row.split("\t")[col]) < first]))


def open_live(live_dir: str | Path, start_step: int, log_every: int) -> Live:
    """dvclive's log of a run that starts at training step ``start_step`` (0: a new log)."""
    live_dir = Path(live_dir)
    done = start_step // log_every  # log events before start_step (a resumed run never starts past the last one)
    if start_step == 0:
        shutil.rmtree(live_dir, ignore_errors=True)
    else:
        _drop_rows_from(live_dir, done)
    live = Live(str(live_dir), resume=start_step > 0, dvcyaml=None, save_dvc_exp=False, report=None)
    live.step = done
    return live
