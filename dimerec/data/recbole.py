"""Reader of RecBole atomic files (`<name>.inter`, optional `<name>.item`).

Format (RecBole, https://recbole.io/docs/user_guide/data/atomic_files.html): tab-separated
text, UTF-8, one header line whose fields are `name:type`, type one of `token`,
`token_seq` (space-separated tokens), `float`, `float_seq`.

- `<name>.inter` needs `user_id` and `item_id`; a `timestamp` field, when present,
  orders each user's interactions (equal timestamps by item id), otherwise file order is the order.
- `<name>.item` (optional) gives titles (the first field whose name contains `title`)
  and categories (a `genre` token_seq field, else the first other token_seq field
  named like class/category/genre).

Users are numbered by ascending id, items by first appearance in that order (`dataset.canonical_sequences`): the
rows' order in `.inter` changes nothing but a user's order when there is no timestamp.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dimerec.data.dataset import SeqDataset, canonical_sequences
from dimerec.errors import DataError

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
CATEGORY_WORDS = ("class", "categor", "genre")


def one_line(text: object) -> str:
    """An exception's text squeezed onto one line, for DataError messages."""
    return " ".join(str(text).split())


def plain(value: object) -> object:
    """numpy scalars as Python ones, so that messages show 7.0, not np.float64(7.0)."""
    return value.item() if isinstance(value, np.generic) else value


def parse_error(path: Path, error: Exception, expected: str) -> DataError:
    """A pandas parse error as a one-line DataError naming the file and line."""
    match = re.search(r"Expected \d+ fields in line (\d+), saw \d+", str(error))
    if match:
        return DataError(f"{path} line {match.group(1)}: expected {expected}")
    return DataError(f"{path}: cannot parse ({one_line(error)})")


def read_header(path: Path) -> list[tuple[str, str]]:
    """The `name:type` fields of a RecBole atomic file's first line."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from None
    if not first.strip():
        raise DataError(f"{path}: file is empty (expected a header line of name:type fields)")
    fields = []
    for raw in first.rstrip("\r\n").split("\t"):
        name, sep, ftype = raw.partition(":")
        if not sep or not name:
            raise DataError(f"{path} line 1: field {raw!r} is not name:type; "
                            f"a RecBole header looks like 'user_id:token<TAB>item_id:token'")
        if ftype not in FIELD_TYPES:
            raise DataError(f"{path} line 1: field {raw!r} has unknown type {ftype!r} "
                            f"(expected one of {', '.join(FIELD_TYPES)})")
        if name in (n for n, _ in fields):
            raise DataError(f"{path} line 1: field {name!r} appears twice")
        fields.append((name, ftype))
    return fields


def require_fields(path: Path, fields: list[tuple[str, str]], required: list[str]) -> None:
    names = [n for n, _ in fields]
    for name in required:
        if name not in names:
            found = ", ".join(f"{n}:{t}" for n, t in fields)
            raise DataError(f"{path} line 1: header has no {name}:token field (found: {found})")


def read_table(path: Path, fields: list[tuple[str, str]]) -> pd.DataFrame:
    """All rows after the header as strings, one column per field name."""
    try:
        df = pd.read_csv(path, sep="\t", header=None, skiprows=1, names=[n for n, _ in fields],
                         dtype=str, na_filter=False, quoting=csv.QUOTE_NONE, encoding="utf-8")
    except pd.errors.EmptyDataError:
        return pd.DataFrame({n: pd.Series(dtype=str) for n, _ in fields})
    except (ValueError, OSError) as e:  # ParserError and UnicodeDecodeError are ValueErrors
        raise parse_error(path, e, f"{len(fields)} tab-separated fields as in the header") from None
    return df


def check_not_empty(path: Path, df: pd.DataFrame, columns: list[str]) -> None:
    """Raise naming the first line where one of `columns` is empty (line 1 is the header)."""
    for col in columns:
        empty = (df[col].str.strip() == "").to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise DataError(f"{path} line {row + 2}: field {col} is empty")


def to_number(path: Path, values: pd.Series, field: str, line_offset: int = 2) -> np.ndarray:
    """Strings -> float64; raise naming file, line and field at the first non-number."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path} line {row + line_offset}: field {field} is not a number: "
                        f"{plain(values.iloc[row])!r}")
    return numbers


def read_recbole(folder: Path, name: str, max_len: int) -> SeqDataset:
    """Read `<folder>/<name>.inter` (and `<name>.item` when present) into a SeqDataset."""
    folder = Path(folder)
    inter_path = folder / f"{name}.inter"
    fields = read_header(inter_path)
    require_fields(inter_path, fields, ["user_id", "item_id"])
    df = read_table(inter_path, fields)
    if len(df) == 0:
        raise DataError(f"{inter_path}: no interactions after the header line")
    check_not_empty(inter_path, df, ["user_id", "item_id"])
    timestamps = None
    if "timestamp" in df.columns:
        timestamps = to_number(inter_path, df["timestamp"], "timestamp")
    sequences, raw_items = canonical_sequences(df["user_id"].to_numpy(), df["item_id"].to_numpy(), timestamps)
    raw_ids = [str(r) for r in raw_items]
    titles, categories = read_items(folder / f"{name}.item", raw_ids)
    return SeqDataset(name=name, sequences=sequences, n_items=len(raw_ids), max_len=max_len,
                      titles=titles, item_categories=categories, raw_item_ids=raw_ids,
                      source=str(inter_path))


def category_field(fields: list[tuple[str, str]]) -> str | None:
    seqs = [n for n, t in fields if t == "token_seq"]
    if "genre" in seqs:
        return "genre"
    for n in seqs:
        if any(w in n.lower() for w in CATEGORY_WORDS):
            return n
    return None


def read_items(path: Path, raw_ids: list[str]) -> tuple[list[str], list[list[str]]]:
    """Titles and categories per dense item from a `.item` file; empty lists when absent."""
    if not path.exists():
        return [], []
    fields = read_header(path)
    require_fields(path, fields, ["item_id"])
    df = read_table(path, fields).drop_duplicates("item_id")
    ids = df["item_id"].tolist()
    title_col = next((n for n, _ in fields if "title" in n.lower()), None)
    cat_col = category_field(fields)
    titles: list[str] = []
    if title_col is not None:
        by_id = dict(zip(ids, df[title_col].tolist()))
        titles = [" ".join(by_id[r].split()) if r in by_id else f"item {r}" for r in raw_ids]
    categories: list[list[str]] = []
    if cat_col is not None:
        by_id = dict(zip(ids, df[cat_col].tolist()))
        categories = [by_id.get(r, "").split() for r in raw_ids]
    return titles, categories

