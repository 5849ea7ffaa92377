"""Shared entry-point plumbing for ``stages/*.py``: one-line errors, params loading, logging."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from .config import Params, load_params
from .errors import UserError


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def run_stage(main: Callable[[argparse.Namespace, Params], None], parser: argparse.ArgumentParser) -> None:
    """Parse args, load params, run ``main``; a :class:`UserError` becomes one line on stderr, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        main(args, params)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
