"""Readers of the official GroupLens MovieLens releases, and their download.

Source: https://files.grouplens.org/datasets/movielens/ (`ml-1m.zip`, `ml-10m.zip`,
`ml-100k.zip`; each release's README describes its files).

- ML-1M and ML-10M: `ratings.dat` lines `UserID::MovieID::Rating::Timestamp`;
  `movies.dat` lines `MovieID::Title::Genres`, genres `|`-separated (ML-1M's is
  latin-1 encoded, ML-10M's UTF-8).
- ML-100K: `u.data` tab-separated `user id, item id, rating, timestamp`; `u.item`
  `|`-separated, latin-1, title in field 2 and 19 binary genre flags at the end;
  genre names in `u.genre` (`name|index`), else the standard 19.

Each user's ratings are ordered by timestamp, equal timestamps by movie id; users are numbered
by ascending id and movies by first appearance in that order (`dataset.canonical_sequences`), so
the ratings file's row order changes nothing; movies never rated are dropped.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dimerec.data.dataset import SeqDataset, canonical_sequences
from dimerec.data.recbole import check_file, one_line, parse_error, read_bytes, to_number
from dimerec.errors import DataError

BASE_URL = "https://files.grouplens.org/datasets/movielens/"
URL_ENV = "DIMEREC_MOVIELENS_URL"
# download name -> (zip file, folder it unpacks to, ratings file in that folder)
RELEASES = {
    "movielens-1m": ("ml-1m.zip", "ml-1m", "ratings.dat"),
    "movielens-10m": ("ml-10m.zip", "ml-10M100K", "ratings.dat"),
    "movielens-100k": ("ml-100k.zip", "ml-100k", "u.data"),
}
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]
NO_GENRE = "(no genres listed)"
RATING_FIELDS = ("UserID", "MovieID", "Rating", "Timestamp")
U_DATA_FIELDS = ("user id", "item id", "rating", "timestamp")
TIMEOUT_S = 30
CHUNK = 1 << 16

# ---------------------------------------------------------------- reading


def read_text(path: Path) -> str:
    """A whole file as text: UTF-8, else latin-1 (ML-1M's and ML-100K's encoding)."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) for each non-blank line of a small text file (the errors name the line)."""
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            yield n, line


def read_ratings(path: Path, sep: str, fields: tuple[str, ...]) -> pd.DataFrame:
    """Ratings as numbers: columns user, item, rating, timestamp.

    `::` files are read with sep ':' (fast C parser); the odd columns must be empty.
    Columns pandas could not read as numbers are checked as text, to name the bad line.
    """
    if check_file(path).stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    step = 2 if sep == ":" else 1  # with sep ':' a '::' yields an empty column between fields
    expected = f"{len(fields)} fields " + ("::" if step == 2 else "<TAB>").join(fields)
    try:
        raw = pd.read_csv(path, sep=sep, header=None, na_filter=False, low_memory=False,
                          quoting=csv.QUOTE_NONE, encoding="latin-1")
    except (ValueError, OSError) as e:  # ParserError is a ValueError
        raise parse_error(path, e, expected) from None
    if raw.shape[1] != step * (len(fields) - 1) + 1:
        raise DataError(f"{path} line 1: expected {expected}")
    for col in range(1, raw.shape[1], 2) if step == 2 else ():
        nonempty = (raw[col].astype(str) != "").to_numpy()
        if nonempty.any():
            row = int(np.flatnonzero(nonempty)[0])
            raise DataError(f"{path} line {row + 1}: expected {expected}")
    columns = range(0, raw.shape[1], step)
    return pd.DataFrame({key: numeric_column(path, raw[col], field)
                         for key, col, field in zip(("user", "item", "rating", "timestamp"), columns, fields)})


def numeric_column(path: Path, values: pd.Series, field: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=np.float64)
        if np.isfinite(numbers).all():
            return numbers
    return to_number(path, values.astype(str), field, line_offset=1)


def sequences_from_ratings(name: str, ratings: pd.DataFrame, movies: dict[int, tuple[str, list[str]]],
                           max_len: int, source: Path) -> SeqDataset:
    sequences, raw_items = canonical_sequences(ratings["user"].to_numpy(), ratings["item"].to_numpy(),
                                               ratings["timestamp"].to_numpy())
    raw_ids = [str(int(r)) for r in raw_items]
    titles, categories, notes = [], [], []
    if movies:
        info = [movies.get(int(r), (f"item {int(r)}", [])) for r in raw_items]
        titles = [t for t, _ in info]
        categories = [g for _, g in info]
        absent = sum(int(r) not in movies for r in raw_items)
        if absent:
            notes.append(f"{source.parent}: {absent} of the {len(raw_ids)} rated movies are not in its movies file "
                         f"(they are titled 'item ID' and have no genre)")
    return SeqDataset(name=name, sequences=sequences, n_items=len(raw_ids), max_len=max_len,
                      titles=titles, item_categories=categories, raw_item_ids=raw_ids,
                      source=str(source), notes=notes)


def read_movies_dat(path: Path) -> dict[int, tuple[str, list[str]]]:
    """`MovieID::Title::Genres` -> {id: (title, genres)}; {} when the file is absent."""
    if not path.exists():
        return {}
    movies = {}
    for n, line in numbered_lines(path):
        head, _, rest = line.partition("::")
        title, sep, genres = rest.rpartition("::")
        if not sep or not head.strip().isdigit():
            raise DataError(f"{path} line {n}: expected MovieID::Title::Genres, got {line!r}")
        movies[int(head)] = (title, [g for g in genres.split("|") if g and g != NO_GENRE])
    return movies


def read_ratings_and_movies(ratings_path: Path, sep: str, fields, movies: dict, name: str,
                            max_len: int) -> SeqDataset:
    """The sequences of a MovieLens ratings file, titled and typed by `movies` (read by the caller)."""
    ratings = read_ratings(ratings_path, sep, fields)
    if len(ratings) == 0:
        raise DataError(f"{ratings_path}: no ratings")
    return sequences_from_ratings(name, ratings, movies, max_len, ratings_path)


def read_movielens_dat(folder: Path, name: str, max_len: int) -> SeqDataset:
    """ML-1M / ML-10M: `ratings.dat` and `movies.dat` (optional) in `folder`."""
    folder = Path(folder)
    return read_ratings_and_movies(folder / "ratings.dat", ":", RATING_FIELDS, read_movies_dat(folder / "movies.dat"),
                                   name, max_len)


def read_genre_names(path: Path) -> list[str]:
    if not path.exists():
        return GENRES_100K
    names = {}
    for n, line in numbered_lines(path):
        genre, sep, index = line.rpartition("|")
        if not sep or not index.strip().isdigit():
            raise DataError(f"{path} line {n}: expected name|index, got {line!r}")
        names[int(index)] = genre
    return [names[i] for i in sorted(names)]


def read_u_item(path: Path, genres: list[str]) -> dict[int, tuple[str, list[str]]]:
    """`u.item`: id|title|release|video release|URL|flags... -> {id: (title, genres)}."""
    if not path.exists():
        return {}
    movies = {}
    for n, line in numbered_lines(path):
        fields = line.split("|")
        flags = fields[-len(genres):]
        if len(fields) < 2 + len(genres) or not fields[0].strip().isdigit() \
                or any(f not in ("0", "1") for f in flags):
            raise DataError(f"{path} line {n}: expected id|title|...|{len(genres)} genre flags (0/1), "
                            f"got {line!r}")
        movies[int(fields[0])] = (fields[1], [g for g, f in zip(genres, flags) if f == "1"])
    return movies


def read_movielens_100k(folder: Path, name: str, max_len: int) -> SeqDataset:
    """ML-100K: `u.data`, `u.item` (optional) and `u.genre` (optional) in `folder`."""
    folder = Path(folder)
    movies = read_u_item(folder / "u.item", read_genre_names(folder / "u.genre"))
    return read_ratings_and_movies(folder / "u.data", "\t", U_DATA_FIELDS, movies, name, max_len)


# ---------------------------------------------------------------- download


def release_url(which: str, base_url: str | None = None) -> str:
    if which not in RELEASES:
        raise DataError(f"unknown MovieLens release {which!r} (expected one of {', '.join(RELEASES)})")
    base = base_url or os.environ.get(URL_ENV) or BASE_URL
    return base.rstrip("/") + "/" + RELEASES[which][0]


def write_chunk(out, chunk: bytes, dest: Path) -> None:
    try:
        out.write(chunk)
    except OSError as e:  # a local problem, not the network's
        raise DataError(f"{dest}: cannot write ({one_line(e)})") from None


def fetch(url: str, dest: Path, data_dir: Path) -> None:
    """Stream `url` into `dest` with a progress bar; no network -> one-line DataError."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=url.rsplit("/", 1)[-1]) as bar:
                while chunk := response.read(CHUNK):
                    write_chunk(out, chunk, dest)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: HTTP {e.code} {one_line(e.reason)}") from None
    except (urllib.error.URLError, OSError) as e:  # timeouts are OSErrors
        reason = getattr(e, "reason", e)
        host = urllib.parse.urlsplit(url).netloc or url
        raise DataError(f"could not reach {host} ({one_line(reason)}); on a machine with internet "
                        f"access fetch {url} and unzip it into {data_dir}") from None


def expected_md5(url: str) -> str | None:
    """The MD5 published beside `url` (`<zip>.md5`), or None when there is none to fetch."""
    try:
        with urllib.request.urlopen(url + ".md5", timeout=TIMEOUT_S) as response:
            text = response.read(4096).decode("ascii", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    return match.group(0).lower() if match else None


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, url: str) -> None:
    """MD5 against `<url>.md5` when published; always a full CRC check of the zip."""
    want = expected_md5(url)
    if want is not None:
        got = file_md5(path)
        if got != want:
            raise DataError(f"{url}: MD5 of the download is {got}, expected {want} from {url}.md5; "
                            f"the file is corrupt, try again")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{url}: the download is not a valid zip ({one_line(e)})") from None
    if bad is not None:
        raise DataError(f"{url}: the download is corrupt (bad CRC in {bad})")


def unpack(zip_path: Path, data_dir: Path, folder: str) -> Path:
    """Unzip into a temporary folder in data_dir, then move `folder` into place."""
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=data_dir))
    try:
        try:
            with zipfile.ZipFile(zip_path) as z:
                z.extractall(staging)
        except OSError as e:
            raise DataError(f"{zip_path}: cannot unpack into {data_dir} ({one_line(e)})") from None
        if not (staging / folder).is_dir():
            raise DataError(f"{zip_path}: has no folder {folder}/ inside")
        target = data_dir / folder
        if not target.exists():
            os.replace(staging / folder, target)
        else:  # an incomplete earlier copy: replace its files one by one
            for src in sorted((staging / folder).rglob("*")):
                dst = target / src.relative_to(staging / folder)
                if src.is_dir():
                    dst.mkdir(exist_ok=True)
                else:
                    os.replace(src, dst)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download(which: str, data_dir: Path, base_url: str | None = None) -> Path:
    """Fetch, verify and unpack a GroupLens release into `data_dir`; returns its folder.

    `which` is movielens-1m, movielens-10m or movielens-100k. The base URL is `base_url`,
    else $DIMEREC_MOVIELENS_URL, else GroupLens. A release already unpacked there is not
    fetched again.
    """
    url = release_url(which, base_url)
    zip_name, folder, ratings = RELEASES[which]
    data_dir = Path(data_dir)
    if (data_dir / folder / ratings).exists():
        return data_dir / folder
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{zip_name}.", suffix=".part", dir=data_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetch(url, tmp, data_dir)
        verify(tmp, url)
        zip_path = data_dir / zip_name
        os.replace(tmp, zip_path)
    finally:
        tmp.unlink(missing_ok=True)
    return unpack(zip_path, data_dir, folder)
