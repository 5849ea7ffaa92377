"""Training curves of a killed and resumed run (taxadiffusion/training/curves.py) equal an uninterrupted run's."""

from __future__ import annotations

from taxadiffusion.training.curves import open_live


def _run(live_dir, steps: int, log_every: int, start: int = 0, killed_after: int | None = None) -> None:
    """The training loop's logging: an event every ``log_every`` steps and at the last one."""
    live = open_live(live_dir, start, log_every)
    for step in range(start, steps):
        if (step + 1) % log_every == 0 or step + 1 == steps:
            live.log_metric("loss", step / 10)
            live.next_step()
        if step + 1 == killed_after:
            return  # kill -9: no end()
    live.end()


def test_resumed_curves_continue_the_step_numbers(tmp_path):
    _run(tmp_path / "straight", 11, 2)
    for checkpoint, killed in ((4, 7), (1, 1), (2, 2)):  # rows logged past the checkpoint; a kill at the first event
        resumed = tmp_path / f"resumed-{checkpoint}"
        _run(resumed, 11, 2, killed_after=killed)
        _run(resumed, 11, 2, start=checkpoint)
        for name in ("plots/metrics/loss.tsv", "metrics.json"):
            assert (resumed / name).read_text() == (tmp_path / "straight" / name).read_text(), (checkpoint, name)
    steps = [row.split("\t")[0] for row in (tmp_path / "straight/plots/metrics/loss.tsv").read_text().split("\n")[1:-1]]
    assert steps == ["0", "1", "2", "3", "4", "5"]
