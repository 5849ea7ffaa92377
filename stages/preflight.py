"""Stage `preflight`: every problem that can be known before anything runs, reported together in one message.

Outputs (docs/architecture.md): ``<out>`` = ``{"checks": [...]}``, the same bytes whenever the checks pass (so nothing
downstream re-runs); the disk estimate and the base's native resolution are printed. The logic is
:mod:`taxadiffusion.preflight.run`.
Run: ``python stages/preflight.py [--params params.yaml] [--out data/preflight.json]``
"""

from __future__ import annotations

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.preflight.run import run_preflight


def main(args, params) -> None:
    run_preflight(params, args.out)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/preflight.json",
                        help="the stamp of passed checks (default: %(default)s)")
    run_stage(main, parser)
