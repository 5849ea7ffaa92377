"""Training curves (taxadiffusion/training/curves.py): by optimiser step, the first and last steps always logged,
and a killed and resumed run's curves equal an uninterrupted run's."""

from __future__ import annotations

from taxadiffusion.training.curves import log_due, log_row, open_live


def _run(live_dir, steps: int, log_every: int, start: int = 0, killed_after: int | None = None) -> None:
    """The training loop's logging (training/train.py _loop)."""
    live = open_live(live_dir, start)
    for step in range(start, steps):
        if log_due(step + 1, steps, log_every):
            log_row(live, step + 1, {"loss": step / 10})
        if step + 1 == killed_after:
            return  # kill -9: no end()
    live.end()


def _steps(live_dir) -> list[str]:
    return [row.split("\t")[0] for row in (live_dir / "plots/metrics/loss.tsv").read_text().split("\n")[1:-1]]


def test_curves_are_by_optimiser_step_with_the_first_and_last_logged(tmp_path):
    _run(tmp_path / "straight", 11, 2)
    assert _steps(tmp_path / "straight") == ["1", "2", "4", "6", "8", "10", "11"]
    _run(tmp_path / "short", 10, 50)  # a run shorter than log_every still draws a line
    assert _steps(tmp_path / "short") == ["1", "10"]


def test_resumed_curves_equal_an_uninterrupted_run(tmp_path):
    _run(tmp_path / "straight", 11, 2)
    for checkpoint, killed in ((4, 7), (1, 1), (2, 2), (0, 3)):  # rows logged past the checkpoint; a kill at a row
        resumed = tmp_path / f"resumed-{checkpoint}-{killed}"
        _run(resumed, 11, 2, killed_after=killed)
        _run(resumed, 11, 2, start=checkpoint)
        for name in ("plots/metrics/loss.tsv", "metrics.json"):
            assert (resumed / name).read_text() == (tmp_path / "straight" / name).read_text(), (checkpoint, name)
