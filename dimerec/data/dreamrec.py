"""Reader of DreamRec's preprocessed data (YooChoose, KuaiRec, ...).

Format (DreamRec, github.com/YangZhengyi98/DreamRec, `data/yc/`, `data/ks/`): pandas
pickles in one folder.

- `data_statis.df`: one row with `seq_size` and `item_num`; `item_num` is the padding
  id and items are `0 .. item_num-1`.
- `train_data.df`, `val_data.df`, `test_data.df` (whichever are present): one row per
  interaction: the history before it (`seq`, a padded list), its length and the next
  item. Columns are `seq, len_seq, next` (next may be stored as float) or
  `seq, seq_len, tgt`. Rows of one sequence are consecutive and a sequence starts at
  a row whose history is all padding (its length field says 1 there, so it is not
  used); the full sequence is the list of next values in row order, since histories
  are truncated.

Every part's sequences are pooled, each one a "user"; item ids are kept as they are.

Security: unpickling runs code stored in the file. Only the files of the user's own
data directory are read this way; never point it at files from an untrusted source.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dimerec.data.dataset import SeqDataset
from dimerec.data.recbole import check_file, one_line, plain
from dimerec.errors import DataError

PARTS = ("train_data.df", "val_data.df", "test_data.df")
DEFAULT_MAX_LEN = 50  # a DreamRec folder without seq_size
TARGET_COLUMNS = ("next", "tgt")


def read_pickle(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_pickle(check_file(path))
    except DataError:
        raise
    except Exception as e:  # a bad pickle can raise nearly anything
        raise DataError(f"{path}: not a readable pandas pickle ({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{path}: holds a {type(df).__name__}, expected a pandas DataFrame")
    return df


def read_seq_size(path: Path) -> int | None:
    """`seq_size` of data_statis.df (the history length DreamRec's data were made with), None if absent or odd."""
    df = read_pickle(path)
    value = as_float(df["seq_size"].iloc[0]) if "seq_size" in df.columns and len(df) else float("nan")
    return int(value) if np.isfinite(value) and value == int(value) and value >= 1 else None


def read_item_num(path: Path) -> int:
    df = read_pickle(path)
    if "item_num" not in df.columns or len(df) == 0:
        raise DataError(f"{path}: expected a row with an item_num column "
                        f"(found columns: {', '.join(map(str, df.columns))})")
    value = as_float(df["item_num"].iloc[0])
    if not np.isfinite(value) or value != int(value) or value < 1:
        raise DataError(f"{path}: item_num is not a positive integer: {plain(df['item_num'].iloc[0])!r}")
    return int(value)


def history_is_padding(path: Path, histories: pd.Series, pad: int) -> np.ndarray:
    """Per row: is every id of the history the padding id?"""
    try:
        matrix = np.asarray(histories.tolist(), dtype=np.float64)
        if matrix.ndim == 2:
            return (matrix == pad).all(axis=1)
    except (TypeError, ValueError):
        pass  # ragged or odd rows: check one by one below
    starts = np.empty(len(histories), dtype=bool)
    for row, h in enumerate(histories):
        try:
            starts[row] = all(float(x) == pad for x in h)
        except (TypeError, ValueError):
            raise DataError(f"{path} row {row}: field seq is not a list of item ids: {h!r}") from None
    return starts


def as_float(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def read_targets(path: Path, values: pd.Series, column: str, pad: int) -> np.ndarray:
    """Next items as int64; each an item id, or the padding id (no item)."""
    try:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    except (TypeError, ValueError):  # lists or other objects: check one by one
        numbers = np.array([as_float(v) for v in values], dtype=np.float64)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (numbers < 0) | (numbers > pad)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path} row {row}: field {column} is not an item id in 0..{pad - 1}: "
                        f"{plain(values.iloc[row])!r}")
    return numbers.astype(np.int64)


def read_part(path: Path, pad: int) -> list[np.ndarray]:
    """The sequences of one part, rebuilt from its rows."""
    df = read_pickle(path)
    target = next((c for c in TARGET_COLUMNS if c in df.columns), None)
    if "seq" not in df.columns or target is None:
        raise DataError(f"{path}: expected columns seq, len_seq, next or seq, seq_len, tgt "
                        f"(found: {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        raise DataError(f"{path}: no rows, so no sequence with items")
    starts = history_is_padding(path, df["seq"], pad)
    if not starts[0]:
        raise DataError(f"{path} row 0: history is not all padding ({pad}), so it does not start a sequence")
    targets = read_targets(path, df[target], target, pad)
    bounds = np.append(np.flatnonzero(starts), len(df))
    sequences = []
    for begin, end in zip(bounds[:-1], bounds[1:]):
        seq = targets[begin:end]
        seq = seq[seq != pad]
        if len(seq) == 0:
            raise DataError(f"{path} row {begin}: the sequence starting there has no items "
                            f"(every {target} is the padding id {pad})")
        sequences.append(seq)
    return sequences


def read_dreamrec(folder: Path, name: str, max_len: int | None, split: str = "random") -> SeqDataset:
    """Read `data_statis.df` and every present part in `folder` into one SeqDataset. `max_len` None: the
    file's `seq_size` (else 50). `split="given"` keeps the parts as the split (train_data.df the training
    users, val_data.df validation, test_data.df test); all three must be present."""
    from dimerec.data.dataset import UserSplit

    folder = Path(folder)
    item_num = read_item_num(folder / "data_statis.df")
    if max_len is None:
        max_len = read_seq_size(folder / "data_statis.df") or DEFAULT_MAX_LEN
    if split == "given":
        missing = [p for p in PARTS if not (folder / p).exists()]
        if missing:
            raise DataError(f"--split given: {folder} has no {', '.join(missing)}, so no split of its own; "
                            f"use --split random (the seeded 8:1:1 user split)")
    parts = [folder / p for p in PARTS if (folder / p).exists()]
    if not parts:
        raise DataError(f"{folder}: none of {', '.join(PARTS)} is present")
    per_part = [read_part(p, item_num) for p in parts]
    sequences = [s for part in per_part for s in part]
    given = None
    if split == "given":
        bounds = np.cumsum([0, *map(len, per_part)])
        given = UserSplit(*(np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])))
    return SeqDataset(name=name, sequences=sequences, n_items=item_num, max_len=max_len,
                      source=str(folder), given_split=given)
