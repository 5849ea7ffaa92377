"""Shared entry-point plumbing for ``stages/*.py``: one-line errors, params loading, logging."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Callable

from .config import Params, load_params
from .errors import UserError


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


def run_stage(main: Callable[[argparse.Namespace, Params], None], parser: argparse.ArgumentParser) -> None:
    """Parse args, load params, run ``main``; a :class:`UserError` or an OS error (disk full, permission) becomes
    one line on stderr, exit 2. Outputs are written atomically, so a failed stage leaves nothing half-done."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        main(args, params)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
