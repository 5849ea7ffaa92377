"""Rows a reader or ``prepare`` skips on purpose, counted by reason with a few example rows each."""

from __future__ import annotations

import numpy as np
import pandas as pd

BBOX_COLUMNS = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]


class Drops:
    """Rows skipped on purpose: ``{reason: count}`` plus up to ``max_examples`` example rows per reason.

    Every skip goes through :meth:`add`, so ``report.json`` can prove
    ``rows_in == rows_kept + sum(dropped.values())``.
    """

    def __init__(self, max_examples: int = 20):
        self.max_examples = max(0, int(max_examples))
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[dict]] = {}

    def add(self, reason: str, rows: pd.DataFrame, detail: pd.Series | None = None) -> None:
        if len(rows) == 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + int(len(rows))
        shown = self.examples.setdefault(reason, [])
        room = self.max_examples - len(shown)
        if room <= 0:
            return
        head = rows.head(room)
        for i, record in enumerate(head.to_dict("records")):
            clean = {"row": _json_value(record.get("row"))}  # the row number first: what a user looks up
            clean.update({k: _json_value(v) for k, v in record.items()
                          if k != "row" and not (k in BBOX_COLUMNS and _is_missing(v))})
            if detail is not None:
                clean["detail"] = _json_value(detail.loc[head.index[i]])
            shown.append(clean)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _is_missing(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _json_value(v):
    if _is_missing(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v
