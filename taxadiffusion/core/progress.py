"""Where a long-running stage is, in words, for the one line printed when it is interrupted (``cli.run_stage``).

The long loops (training steps, mass generation) keep a short note up to date, e.g. ``at step 57/150 of class
(checkpoint at step 50)``; Ctrl-C then reports ``interrupted: stage train@class stopped at step 57/150 ...``
instead of a traceback. A note is plain text in this process: it never reaches an output file.
"""

from __future__ import annotations

_NOTE = [""]


def note(text: str) -> None:
    """Say where the stage is now (a phrase that reads after "stopped", e.g. ``at step 3/10``)."""
    _NOTE[0] = text


def where() -> str:
    """The latest note ("" when the stage has said nothing)."""
    return _NOTE[0]
