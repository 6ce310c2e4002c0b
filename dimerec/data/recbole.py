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

A file of the wrong shape is refused naming the file and line: a row with more or fewer fields than the header, a
file that is not UTF-8, a folder where the file should be. Blank lines are skipped. What a `.item` file leaves out
(items it does not list, items with an empty category) is counted in the dataset's `notes`.
"""
from __future__ import annotations

import csv
import io
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


def check_file(path: Path) -> Path:
    """`path`, or a DataError saying it is missing or is a folder where the data file should be: the one check that
    a data file is a file, for every reader."""
    if Path(path).is_dir():
        raise DataError(f"{path} is a folder, not a file: the data file should be there")
    if not Path(path).exists():
        raise DataError(f"{path}: file not found")
    return Path(path)


def read_bytes(path: Path) -> bytes:
    """The bytes of the file at `path`, or a DataError saying it is missing, a folder, or unreadable."""
    try:
        return check_file(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from None


def decode(path: Path, raw: bytes, encoding: str = "utf-8", fmt: str = "RecBole atomic files") -> str:
    """`raw` as text, or a DataError naming the line of the first byte that is not `encoding`."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path} line {line}: byte {raw[e.start]:#04x} is not {encoding.upper()} text; {fmt} are "
                        f"{encoding.upper()} (save the file as {encoding.upper()})") from None


def data_lines(path: Path, raw: bytes, n_fields: int) -> np.ndarray:
    """The 1-based line numbers of the rows after the header (blank lines skipped, as pandas does), after checking
    that each holds `n_fields` tab-separated fields; a DataError names the first line that does not."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    ends = np.append(np.flatnonzero(buf == 10), len(buf))  # where each line ends (its newline, or the file's end)
    starts = np.append(0, ends[:-1] + 1)
    tabs = np.append(0, np.cumsum(buf == 9, dtype=np.int64))
    fields = tabs[ends] - tabs[starts] + 1
    length = ends - starts - ((ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13))  # without a trailing \r
    number = np.arange(1, len(ends) + 1)
    rows = (number > 1) & (length > 0)
    bad = rows & (fields != n_fields)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path} line {at + 1}: expected {n_fields} tab-separated fields as in the header, "
                        f"found {int(fields[at])}")
    return number[rows]


def read_header(path: Path) -> list[tuple[str, str]]:
    """The `name:type` fields of a RecBole atomic file's first line."""
    raw = read_bytes(path)
    first = decode(path, raw.split(b"\n", 1)[0] + b"\n")
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


def read_table(path: Path, fields: list[tuple[str, str]]) -> tuple[pd.DataFrame, np.ndarray]:
    """All rows after the header as strings, one column per field name, and each row's line number; a row with
    more or fewer fields than the header, or bytes that are not UTF-8, is a DataError naming the line."""
    raw = read_bytes(path)
    text = decode(path, raw)
    lines = data_lines(path, raw, len(fields))
    if len(lines) == 0:
        return pd.DataFrame({n: pd.Series(dtype=str) for n, _ in fields}), lines
    try:
        df = pd.read_csv(io.StringIO(text), sep="\t", header=None, skiprows=1, names=[n for n, _ in fields],
                         dtype=str, na_filter=False, quoting=csv.QUOTE_NONE)
    except ValueError as e:  # ParserError is a ValueError
        raise parse_error(path, e, f"{len(fields)} tab-separated fields as in the header") from None
    if len(df) != len(lines):  # a lone \r ends a line for pandas: the rows no longer match the lines
        raise DataError(f"{path}: its line endings are mixed (a carriage return alone ends a line somewhere); "
                        f"save it with \\n line endings")
    return df, lines


def check_not_empty(path: Path, df: pd.DataFrame, columns: list[str], lines: np.ndarray) -> None:
    """Raise naming the first line (`lines`: each row's) where one of `columns` is empty."""
    for col in columns:
        empty = (df[col].str.strip() == "").to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise DataError(f"{path} line {lines[row]}: field {col} is empty")


def to_number(path: Path, values: pd.Series, field: str, line_offset: int = 2,
              lines: np.ndarray | None = None) -> np.ndarray:
    """Strings -> float64; raise naming file, line (`lines`: each row's, else row + line_offset) and field at the
    first non-number."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        line = lines[row] if lines is not None else row + line_offset
        raise DataError(f"{path} line {line}: field {field} is not a number: "
                        f"{plain(values.iloc[row])!r}")
    return numbers


def read_recbole(folder: Path, name: str, max_len: int) -> SeqDataset:
    """Read `<folder>/<name>.inter` (and `<name>.item` when present) into a SeqDataset."""
    folder = Path(folder)
    inter_path = folder / f"{name}.inter"
    fields = read_header(inter_path)
    require_fields(inter_path, fields, ["user_id", "item_id"])
    df, lines = read_table(inter_path, fields)
    if len(df) == 0:
        raise DataError(f"{inter_path}: no interactions after the header line")
    check_not_empty(inter_path, df, ["user_id", "item_id"], lines)
    timestamps = None
    if "timestamp" in df.columns:
        timestamps = to_number(inter_path, df["timestamp"], "timestamp", lines=lines)
    sequences, raw_items = canonical_sequences(df["user_id"].to_numpy(), df["item_id"].to_numpy(), timestamps)
    raw_ids = [str(r) for r in raw_items]
    titles, categories, notes = read_items(folder / f"{name}.item", raw_ids)
    return SeqDataset(name=name, sequences=sequences, n_items=len(raw_ids), max_len=max_len,
                      titles=titles, item_categories=categories, raw_item_ids=raw_ids,
                      source=str(inter_path), notes=notes)


def category_field(fields: list[tuple[str, str]]) -> str | None:
    seqs = [n for n, t in fields if t == "token_seq"]
    if "genre" in seqs:
        return "genre"
    for n in seqs:
        if any(w in n.lower() for w in CATEGORY_WORDS):
            return n
    return None


def read_items(path: Path, raw_ids: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """Titles and categories per dense item from a `.item` file (empty lists when absent), and notes counting the
    items it leaves without a title or a category."""
    if not path.exists():
        return [], [], []
    fields = read_header(path)
    require_fields(path, fields, ["item_id"])
    df = read_table(path, fields)[0].drop_duplicates("item_id")
    ids = df["item_id"].tolist()
    title_col = next((n for n, _ in fields if "title" in n.lower()), None)
    cat_col = category_field(fields)
    listed = set(ids)
    notes = []
    absent = sum(r not in listed for r in raw_ids)
    if absent:
        notes.append(f"{path}: {absent} of the {len(raw_ids)} items are not listed (they are titled 'item ID'"
                     f"{' and have no category' if cat_col else ''})")
    titles: list[str] = []
    if title_col is not None:
        by_id = dict(zip(ids, df[title_col].tolist()))
        titles = [" ".join(by_id[r].split()) if r in by_id else f"item {r}" for r in raw_ids]
    categories: list[list[str]] = []
    if cat_col is not None:
        by_id = dict(zip(ids, df[cat_col].tolist()))
        categories = [by_id.get(r, "").split() for r in raw_ids]
        empty = sum(r in listed and not c for r, c in zip(raw_ids, categories))
        if empty:
            notes.append(f"{path}: {empty} of the {len(raw_ids)} items have an empty {cat_col} field, so no category")
    return titles, categories, notes

