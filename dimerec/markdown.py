"""Markdown tables: the one renderer of the tables `reproduce` writes and of the bank's STATUS.md."""
from __future__ import annotations

import pandas as pd


def markdown_table(frame: pd.DataFrame, floats: str = "{:.2f}") -> list[str]:
    """`frame` as the lines of a Markdown table, its floats written with `floats`."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(floats.format(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return lines
