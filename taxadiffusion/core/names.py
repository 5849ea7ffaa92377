"""The one rule that turns taxon names into file and folder names (generated images, grids, metrics files).

Taxon names are kept verbatim in tables, manifests and reports; only paths use :class:`PathNames`. Within
one folder the rule is injective by construction:

- a name that is already a safe file name (ASCII letters, digits, ``.``, ``_``, ``-``, space; no leading or
  trailing dot or space; at most ``MAX_LEN`` characters) is used as it is, unless another name of the same
  folder already took it case-insensitively (macOS and Windows file systems ignore case);
- any other name becomes its readable part (unsafe runs -> ``_``, cut to fit) plus ``-`` and the first 10 hex
  digits of the sha256 of the exact name; a clash with a name already given (checked case-insensitively)
  takes a longer digest, so two names never share a path;
- ``reserved`` names (e.g. ``all`` next to the per-class metrics files) are never given out.

The outcome depends on the order names are given in; callers give them in a fixed (sorted or plan) order.
Lengths are bounded (``MAX_LEN`` + the suffix) so no name is too long for a file system (255 bytes).
"""

from __future__ import annotations

import hashlib
import re

MAX_LEN = 96  # characters of the readable part; + "-" + up to 64 hex digits stays under 255 bytes


_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


_DIGEST = 10


def readable(name: str) -> str:
    """The safe readable part of ``name``: unsafe runs -> ``_``, no leading/trailing dots or spaces."""
    return _UNSAFE.sub("_", str(name)).strip(" .")[:MAX_LEN].rstrip(" .") or "_"


class PathNames:
    """Names -> file-name components for ONE folder (see the module docstring)."""

    def __init__(self, reserved: tuple[str, ...] | set[str] = ()):
        self._given: dict[str, str] = {}
        self._taken: set[str] = {r.lower() for r in reserved}

    def __call__(self, name: str) -> str:
        name = str(name)
        if name in self._given:
            return self._given[name]
        base = readable(name)
        out = base if base == name and base.lower() not in self._taken else None
        length = _DIGEST
        while out is None or out.lower() in self._taken:
            digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
            if length > len(digest):  # the full digest of a different name clashed: cannot happen
                raise RuntimeError(f"no unique file name for {name!r}")
            out = f"{base}-{digest[:length]}"
            length += 6
        self._given[name] = out
        self._taken.add(out.lower())
        return out


class TreeNames:
    """``<parent>/<child>`` paths: one :class:`PathNames` for the parents, one per parent for its children."""

    def __init__(self):
        self.parents = PathNames()
        self._children: dict[str, PathNames] = {}

    def __call__(self, parent: str, child: str) -> str:
        folder = self.parents(parent)
        names = self._children.setdefault(folder, PathNames())
        return f"{folder}/{names(child)}"
