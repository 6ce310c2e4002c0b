"""Markdown tables: the one renderer of the tables `reproduce` writes and of the bank's STATUS.md, and the one
selection of a result table's rows that both `reproduce` (which writes the table) and `claims` (which reads it) name."""
from __future__ import annotations

import pandas as pd


def markdown_table(frame: pd.DataFrame, floats: str = "{:.2f}") -> list[str]:
    """`frame` as the lines of a Markdown table, its floats written with `floats`."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(floats.format(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return lines


CUT_SHORT_COLUMN = "cut short"  # a result table's count of runs a clock or step cap stopped before they plateaued


def cut_short_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a result table some of whose runs a clock or step cap stopped before their validation plateaued
    (its CUT_SHORT_COLUMN, counted by reproduce's tables.training_length); none for a table written before it."""
    if CUT_SHORT_COLUMN not in table:
        return table.iloc[:0]
    return table[table[CUT_SHORT_COLUMN].fillna(0) > 0]
