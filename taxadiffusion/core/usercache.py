"""The per-user cache directory: work that only saves time, kept outside every workspace.

Two caches live here: the image root's content hashes (stage ``images``, ``<cache>/image_root/``) and the real-image
features of ``evaluate`` / ``method@<m>`` (``<cache>/features/``). In a workspace's git-ignored ``scratch/`` or
``data/`` they were lost to every ``dvc exp run --queue`` (and ``--temp``) experiment: DVC runs those in a fresh
``.dvc/tmp/exps/<tmp>/`` copy of the repository that holds only what git and DVC track, so each experiment hashed
the whole image root again and recomputed every real feature.

Where, first set wins (the convention of pip, torch.hub and huggingface_hub): ``$TAXADIFFUSION_CACHE``, else
``$XDG_CACHE_HOME/taxadiffusion``, else ``~/.cache/taxadiffusion``. An environment variable and not a param on
purpose: where a cache lives never changes a result, so it must not enter a DVC hash (a param would re-run stages).
Both caches are keyed so that projects and image roots never collide (the image root by its absolute path, features
by the content of the real images and the backbone's weights); deleting the folder only costs time.

``python -m taxadiffusion.core.usercache <name>`` prints ``<cache>/<name>``: ``dvc.yaml``'s commands use it as
``--cache "$(python -m taxadiffusion.core.usercache features)"`` so the rule lives here once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "TAXADIFFUSION_CACHE"


def user_cache_dir(name: str = "") -> Path:
    """``<cache>/<name>`` (module docstring), absolute; not created."""
    given = os.environ.get(ENV, "").strip()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if given:
        root = Path(given).expanduser()
    elif xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is invalid and ignored
        root = Path(xdg) / "taxadiffusion"
    else:
        try:
            root = Path.home() / ".cache" / "taxadiffusion"
        except RuntimeError:  # no home directory (a bare service account): stay in the workspace, never ""
            print(f"warning: no home directory; set {ENV}; using scratch/cache", file=sys.stderr)
            root = Path("scratch") / "cache"
    return (root / name).absolute() if name else root.absolute()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m taxadiffusion.core.usercache <name>   (prints the per-user cache folder <name>)",
              file=sys.stderr)
        sys.exit(2)
    print(user_cache_dir(args[0]))


if __name__ == "__main__":
    main()
