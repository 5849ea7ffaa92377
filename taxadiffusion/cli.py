"""Entry-point plumbing: the stage runner (``stages/*.py``), the tool runner, and the ``taxadiffusion`` command.

Every entry point turns a :class:`UserError` or an OS error (disk full, permission, missing folder) into one line
on stderr (``error: ...``) and exit status 2, never a traceback. Stages write their outputs atomically, so a failed
stage leaves nothing half-done. A stage whose own params changed in the params file while it ran fails
(``config/stage_params.py``), so DVC never records values its outputs were not made with.

Tools (one command, ``taxadiffusion <tool> ...``, or ``python -m taxadiffusion <tool> ...``; each module also runs
as ``python -m <module>``):
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from typing import Any, Callable, Optional

from taxadiffusion.config import Params, params_from_dict, read_params_dict
from taxadiffusion.config.stage_params import ParamsWatch
from taxadiffusion.core.errors import UserError

# tool -> the module whose ``main(argv)`` runs it; imported only when that tool is asked for
TOOLS = {
    "draw": "taxadiffusion.sampling.draw",
    "aggregate": "taxadiffusion.analysis.aggregate",
    "sweep": "taxadiffusion.analysis.sweep",
    "paramcount": "taxadiffusion.tools.paramcount",
    "pretrain": "taxadiffusion.tools.pretrain",
}
TOOL_HELP = {
    "draw": "a grid PNG of one lineage drawn with a trained level",
    "aggregate": "mean ± sd and paired differences over seeds (dvc exp show)",
    "sweep": "metric vs a swept param (e.g. guidance_scale) over experiments",
    "paramcount": "the Table S1 parameter counts of a params file",
    "pretrain": "pretrain the tiny base model (assets/tiny-base)",
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
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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


def run_stage(main: Callable[[argparse.Namespace, Params], None], parser: argparse.ArgumentParser) -> None:
    """A stage script: parse args, load params, run ``main(args, params)`` with one-line errors, and fail if one
    of the stage's own params changed in the file while it ran."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser.parse_args()
    one_line_errors(lambda: _run_checked(main, args))


def run_tool(run: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser,
             argv: Optional[list[str]] = None) -> Any:
    """A person-facing tool: parse ``argv``, run ``run(args)`` with one-line errors."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
    tool = importlib.import_module(TOOLS[argv[0]])
    sys.argv[0] = f"taxadiffusion {argv[0]}"
    tool.main(argv[1:])
