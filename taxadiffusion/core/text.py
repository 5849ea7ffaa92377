"""Names as inert text: for data files that other programs embed in HTML, and for Markdown table cells."""

from __future__ import annotations

import re


def plain_text(name: str) -> str:
    """A name as inert text for data files that other programs embed in HTML (``dvc plots show`` puts the CSV
    into an inline ``<script>``): ``<`` / ``>`` become the look-alikes ``‹`` / ``›``, ``&`` becomes ``＆``."""
    return str(name).replace("<", "\u2039").replace(">", "\u203a").replace("&", "\uff06")


_MARKDOWN = re.compile(r"([\\|<&])")  # what would end the cell, or open an HTML tag or an entity


def markdown_cell(text: str) -> str:
    """A value as one Markdown table cell, escaped for Markdown (backslashes, as CommonMark defines them), not for
    HTML: ``|``, ``<``, ``&`` and ``\\`` are literal, line breaks become spaces, and a plain value stays as written
    (``>20`` is ``>20``, not ``&gt;20``, in the file and in the rendering)."""
    return _MARKDOWN.sub(r"\\\1", str(text).replace("\r", " ").replace("\n", " "))
