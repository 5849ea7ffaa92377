"""Entry-point plumbing: the stage runner (``stages/*.py``), the tool runner, and the ``taxadiffusion`` command.

Every entry point turns a :class:`UserError` or an OS error (disk full, permission, missing folder) into one line
on stderr (``error: ...``) and exit status 2, never a traceback. Stages write their outputs atomically, so a failed
stage leaves nothing half-done. Ctrl-C is one line too (``interrupted: ...``, where it stopped and how to resume)
and exit status 130. A stage whose own params changed in the params file while it ran fails
(``config/stage_params.py``), so DVC never records values its outputs were not made with.

Tools (one command, ``taxadiffusion <tool> ...``, or ``python -m taxadiffusion <tool> ...``; each module also runs
as ``python -m <module>``):
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Optional

from taxadiffusion.config import Params, params_from_dict, read_params_dict, section_from_dict
from taxadiffusion.config.stage_params import ParamsWatch
from taxadiffusion.core import launch, progress
from taxadiffusion.core.errors import UserError

# tool -> the module whose ``main(argv)`` runs it; imported only when that tool is asked for
TOOLS = {
    "draw": "taxadiffusion.sampling.draw",
    "aggregate": "taxadiffusion.analysis.aggregate",
    "sweep": "taxadiffusion.analysis.sweep",
    "paramcount": "taxadiffusion.tools.paramcount",
    "pretrain": "taxadiffusion.tools.pretrain",
    "export": "taxadiffusion.tools.export",
}
TOOL_HELP = {
    "draw": "a grid PNG of one lineage drawn with a trained level",
    "aggregate": "mean ± sd and paired differences over seeds (dvc exp show)",
    "sweep": "metric vs a swept param (e.g. guidance_scale) over experiments",
    "paramcount": "the Table S1 parameter counts of a params file",
    "pretrain": "pretrain the tiny base model (assets/tiny-base)",
    "export": "a trained model as a self-contained folder with a model card (--push-to-hub REPO)",
}
__doc__ += "".join(f"\n- ``{name}``: {TOOL_HELP[name]} (``{module}``)" for name, module in TOOLS.items()) + "\n"


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def os_error_line(exc: OSError) -> str:
    """An OS error (disk full, permission, missing folder) as one line naming the path."""
    where = exc.filename if exc.filename is not None else "(no path)"
    extra = f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
    hint = "; free some space and re-run" if exc.errno == errno.ENOSPC else ""
    return f"{where}{extra}: {exc.strerror or type(exc).__name__}{hint}"


def one_line_errors(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a :class:`UserError` or an OS error becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except UserError as exc:
        message = str(exc)
    except OSError as exc:
        message = os_error_line(exc)
    if not launch.report_error(message):  # a stage's worker: its launcher prints each distinct line once
        print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# ---- Ctrl-C: one line, exit status 130 ---------------------------------------------------------------------


def _leave(line: str, stderr_fd: int) -> NoReturn:
    """Print ``line`` on ``stderr_fd`` (rank 0 only: every rank of a multi-process run gets the same Ctrl-C) and
    exit 130 at once. ``os._exit`` skips the interpreter's shutdown: the atexit hooks, thread joins and destructors
    of tqdm, dvclive, accelerate, torch.distributed and thread pools, which print a dozen errors after an interrupt.
    What they would clean up is safe to drop: outputs are written by temp name + rename (a killed run's temps are
    removed by the next run), and the ``finally`` blocks on the way up (the generate lock, temp files) have run."""
    if os.environ.get("RANK", "0") == "0":
        # a progress bar leaves the cursor at the end of its line: a terminal gets the bar's line replaced,
        # a file or pipe a line of its own
        start = "\r\x1b[K" if os.isatty(stderr_fd) else "\n"
        os.write(stderr_fd, (start + line + "\n").encode(errors="replace"))
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more to say
        pass
    os._exit(130)


@contextmanager
def interrupts_as_one_line(what: str, advice: str) -> Iterator[None]:
    """Ctrl-C in the block ends the process with one line (``interrupted: <what> stopped <where>; <advice>``,
    ``<where>`` from :mod:`taxadiffusion.core.progress`) and exit status 130.

    At the first SIGINT, stderr is pointed at /dev/null before KeyboardInterrupt unwinds the stack, so nothing the
    unwinding prints (progress bars closing, libraries' shutdown warnings) reaches the terminal; only this line
    does, on the saved stderr. A second Ctrl-C while the first unwinds stops at once."""
    saved: list[int] = []

    def line() -> str:
        where = progress.where()
        return f"interrupted: {what} stopped{' ' + where if where else ''}; {advice}"

    def on_sigint(signum, frame):
        if saved:
            _leave(line(), saved[0])
        saved.append(os.dup(2))
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread, where Python delivers SIGINT: leave it to the main thread's runner
        previous = None
    try:
        yield
    except BaseException as exc:  # an interrupt may surface as another exception (an error raised while unwinding)
        if saved or isinstance(exc, KeyboardInterrupt):
            _leave(line(), saved[0] if saved else 2)
        raise
    else:
        if saved:  # something swallowed the KeyboardInterrupt: the work may be incomplete, so do not exit 0
            _leave(line(), saved[0])
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _interrupted_while_starting(exc_type, exc, tb, previous=sys.excepthook) -> None:
    """Ctrl-C during a stage script's imports (torch, diffusers: seconds), before ``run_stage`` handles it."""
    if issubclass(exc_type, KeyboardInterrupt) and not sys.flags.interactive:
        _leave(f"interrupted: {sys.argv[0]} stopped while starting, before any work: re-run it", 2)
    previous(exc_type, exc, tb)


# Only for the stage scripts (stages/*.py import this module first): any other program keeps Python's traceback.
if Path(getattr(sys.modules.get("__main__"), "__file__", None) or ".").parent.name == "stages":
    sys.excepthook = _interrupted_while_starting


# ---- the runners ----------------------------------------------------------------------------------------------


def _run_checked(main: Callable[[argparse.Namespace, Params], None], args: argparse.Namespace) -> None:
    """``main(args, params)``, then the check that the stage's own params did not change while it ran."""
    data = read_params_dict(args.params)
    watch = ParamsWatch.start(args.params, data, sys.argv[0])
    main(args, params_from_dict(data))
    # The outputs are written by now. DVC records dvc.lock (the params values it reads from the file then) only
    # after the command exits 0, so this non-zero exit is what keeps a lock from recording values the outputs were
    # not made with. (An edit after this check and before DVC reads the file is not seen: a window of milliseconds.)
    if watch is not None:
        watch.check()


def _as_workers(args: argparse.Namespace) -> int | None:
    """The exit status of this stage run as the ``compute`` section's workers, or None: work here
    (:mod:`taxadiffusion.core.launch`)."""
    compute = section_from_dict("compute", read_params_dict(args.params).get("compute"))
    return launch.run_as_workers(compute, sys.argv)


def run_stage(main: Callable[[argparse.Namespace, Params], None], parser: argparse.ArgumentParser,
              workers: bool = False) -> None:
    """A stage script: parse args, load params, run ``main(args, params)`` with one-line errors and a one-line
    Ctrl-C, and fail if one of the stage's own params changed in the file while it ran. ``workers``: the stage
    runs as one worker per GPU (``compute.processes``) when it is not one already (core/launch.py)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser.parse_args()
    if workers:
        status = one_line_errors(lambda: _as_workers(args))
        if status is not None:
            sys.exit(status)
    dvc_stage = os.environ.get("DVC_STAGE")
    what = f"stage {dvc_stage}" if dvc_stage else sys.argv[0]
    advice = "finished work is kept: re-run " + ("dvc repro" if dvc_stage else "the same command") + " to resume"
    with interrupts_as_one_line(what, advice):
        one_line_errors(lambda: _run_checked(main, args))


def run_tool(run: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser,
             argv: Optional[list[str]] = None) -> Any:
    """A person-facing tool: parse ``argv``, run ``run(args)`` with one-line errors and a one-line Ctrl-C."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with interrupts_as_one_line(parser.prog, "files are written whole or not at all: re-run it"):
        return one_line_errors(lambda: run(args))


def main(argv: Optional[list[str]] = None) -> None:
    """``taxadiffusion <tool> [args]``: dispatch to the tool's own ``main``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in TOOLS:
        width = max(map(len, TOOLS))
        lines = [f"  {name:<{width}}  {TOOL_HELP[name]}" for name in TOOLS]
        usage = "usage: taxadiffusion <tool> [--help | args]\n\ntools:\n" + "\n".join(lines)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown tool {argv[0]!r}; expected one of {', '.join(TOOLS)}", file=sys.stderr)
            sys.exit(2)
        print(usage, file=sys.stderr if not argv else sys.stdout)
        sys.exit(0 if argv else 2)
    sys.argv[0] = f"taxadiffusion {argv[0]}"
    with interrupts_as_one_line(sys.argv[0], "nothing was written: re-run it"):  # the tool's imports take seconds
        tool = importlib.import_module(TOOLS[argv[0]])
    tool.main(argv[1:])
