"""Stage `images`: fingerprint the image root (``dataset.images``) so DVC does not hash every image on every run.

Outputs (docs/architecture.md): ``<out>`` = ``{"files", "bytes", "digest"}``; content hashes are cached in a SQLite
file per image root in ``<cache>`` (outside DVC; by default the per-user cache folder, so queued experiments find it:
``taxadiffusion/core/usercache.py``) and recomputed only for files whose size, mtime or inode changed.
Run: ``python stages/images.py [--params params.yaml] [--cache <folder>] [--out data/image_root.json]``
"""

from __future__ import annotations

import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.core.usercache import user_cache_dir
from taxadiffusion.data.images import write_fingerprint


def main(args, params) -> None:
    info = write_fingerprint(params.dataset.images, args.cache, args.out)
    logging.info("images: %d files, %.1f MB, digest %s", info["files"], info["bytes"] / 1e6, info["digest"][:16])


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(user_cache_dir("image_root")),
                        help="content-hash cache folder (default: %(default)s, from $TAXADIFFUSION_CACHE, "
                             "$XDG_CACHE_HOME or ~/.cache)")
    parser.add_argument("--out", default="data/image_root.json", help="fingerprint file (default: %(default)s)")
    run_stage(main, parser)
