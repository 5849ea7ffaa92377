"""Names as inert text: for data files that other programs embed in HTML, and for Markdown table cells."""

from __future__ import annotations


def plain_text(name: str) -> str:
    """A name as inert text for data files that other programs embed in HTML (``dvc plots show`` puts the CSV
    into an inline ``<script>``): ``<`` / ``>`` become the look-alikes ``‹`` / ``›``, ``&`` becomes ``＆``."""
    return str(name).replace("<", "\u2039").replace(">", "\u203a").replace("&", "\uff06")


def markdown_cell(text: str) -> str:
    """A value as one Markdown table cell: ``|`` escaped, line breaks as spaces, HTML made inert."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")
