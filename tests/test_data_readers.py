"""Readers and registry, on small files written in exactly the real formats."""
import hashlib
import json
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dimerec.data import MAX_LEN, find_datasets, load_dataset, max_len_for, resolve_data_dir
from dimerec.data.dreamrec import read_dreamrec
from dimerec.data.movielens import download, read_movielens_100k, read_movielens_dat
from dimerec.data.recbole import read_recbole
from dimerec.errors import DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def seqs(data) -> list[list[int]]:
    return [s.tolist() for s in data.sequences]


def assert_one_line_error(excinfo, *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


# ---------------------------------------------------------------- RecBole

ML_ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"
           "10\tToy Story\t1995\tAnimation Children's Comedy\n"
           "20\tHeat\t1995\tAction Crime Thriller\n"
           "99\tNever Rated\t2000\tDrama\n")


def test_recbole_file_order(tmp_path):
    write(tmp_path / "toy.inter", "user_id:token\titem_id:token\n"
          "7\t10\n5\t20\n7\t30\n5\t10\n7\t20\n")
    write(tmp_path / "toy.item", ML_ITEM)
    data = read_recbole(tmp_path, "toy", 50)
    # user 5 first (ascending ids, not file order); items numbered as they appear in user 5's, then 7's rows
    assert seqs(data) == [[0, 1], [1, 2, 0]]
    assert data.n_items == 3 and data.pad_id == 3 and data.n_interactions == 5
    assert data.raw_item_ids == ["20", "10", "30"]
    assert data.titles == ["Heat", "Toy Story", "item 30"]
    assert data.item_categories == [["Action", "Crime", "Thriller"],
                                    ["Animation", "Children's", "Comedy"], []]
    assert data.max_len == 50


def test_recbole_timestamp_orders_each_user_ties_by_item_id(tmp_path):
    write(tmp_path / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
          "1\ta\t5\t300\n1\tc\t4\t100\n2\tc\t3\t50\n1\tb\t2\t100\n2\ta\t1\t10\n")
    data = read_recbole(tmp_path, "toy", 50)
    # user 1 by time, its tie at 100 by item id (b before c, though c comes first in the file); then user 2
    assert data.raw_item_ids == ["b", "c", "a"]
    assert seqs(data) == [[0, 1, 2], [2, 1]]
    assert data.titles == ["item 0", "item 1", "item 2"]  # no .item file
    assert data.item_categories == []


def test_recbole_category_fallback_field(tmp_path):
    write(tmp_path / "shop.inter", "user_id:token\titem_id:token\nu\tx\nu\ty\n")
    write(tmp_path / "shop.item", "item_id:token\tbrand:token_seq\tcategories:token_seq\ttitle:token_seq\n"
          "y\tAcme  Co\tBooks Fiction\tA   Book\nx\tNone\tToys\tA Toy\n")
    data = read_recbole(tmp_path, "shop", 50)
    assert data.titles == ["A Toy", "A Book"]
    assert data.item_categories == [["Toys"], ["Books", "Fiction"]]


# ---------------------------------------------------------------- DreamRec

def dreamrec_rows(sequences, pad, width=10, float_ids=True):
    """Rows as DreamRec wrote them: history right-padded, length 1 at a sequence's start."""
    rows = []
    for seq in sequences:
        for k, item in enumerate(seq):
            hist = [float(x) if float_ids else x for x in seq[max(0, k - width):k]]
            rows.append((hist + [pad] * (width - len(hist)), max(1, len(hist)), item))
    return rows


def write_dreamrec(folder: Path, item_num: int, parts: dict[str, pd.DataFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"seq_size": [10], "item_num": [item_num]}).to_pickle(folder / "data_statis.df")
    for name, df in parts.items():
        df.to_pickle(folder / name)


def test_dreamrec_both_column_variants(tmp_path):
    pad = 9
    val = [[3, 4, 3, 3], [0, 8]]  # repeated items
    test = [[5] + list(range(9)) + [2, 1]]  # longer than the 10-item history
    val_df = pd.DataFrame(dreamrec_rows(val, pad, float_ids=False), columns=["seq", "seq_len", "tgt"])
    test_df = pd.DataFrame(dreamrec_rows(test, pad), columns=["seq", "len_seq", "next"])
    test_df["next"] = test_df["next"].astype(float)
    assert val_df["seq_len"].tolist()[:2] == [1, 1]  # the quirk: 1 at start, 1 after one item
    write_dreamrec(tmp_path / "ks", pad, {"test_data.df": test_df, "val_data.df": val_df})
    data = read_dreamrec(tmp_path / "ks", "ks", 10)
    assert seqs(data) == val + test  # val before test
    assert data.n_items == 9 and data.pad_id == 9
    assert data.titles[3] == "item 3" and data.raw_item_ids[3] == "3"
    assert all(s.dtype == np.int64 for s in data.sequences)


# ---------------------------------------------------------------- MovieLens

def test_ml1m_official_dat(tmp_path):
    folder = tmp_path / "ml-1m"
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"
          "2::661::4::978298413\n1::914::3::978300000\n")
    write(folder / "movies.dat", "1193::Cr\xe9ation (1975)::Drama\n"
          "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
          "914::My Fair Lady (1964)::Musical|Romance\n", encoding="latin-1")
    data = read_movielens_dat(folder, "ml-1m", 70)
    assert data.raw_item_ids == ["914", "1193", "661"]  # as they come in user 1's ratings by timestamp
    assert seqs(data) == [[0, 1, 2], [2]]
    assert data.titles == ["My Fair Lady (1964)", "Cr\xe9ation (1975)", "James and the Giant Peach (1996)"]
    assert data.item_categories[2] == ["Animation", "Children's", "Musical"]


def test_ml10m_official_dat_via_registry(tmp_path):
    folder = tmp_path / "ml-10M100K"
    write(folder / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n"
          "2::122::3.5::868245777\n")
    write(folder / "movies.dat", "122::Boomerang (1992)::Comedy|Romance\n"
          "185::Net, The (1995)::Action|Crime|Thriller\n"
          "65130::Revolutionary Road (2008)::(no genres listed)\n")
    data = load_dataset("ml-10m", tmp_path)
    assert data.name == "ml-10m" and data.max_len == 70
    assert seqs(data) == [[0, 1], [1]]  # user 1 rated 185 before 122
    assert data.titles == ["Net, The (1995)", "Boomerang (1992)"]
    assert data.category_names == ["Action", "Comedy", "Crime", "Romance", "Thriller"]


U_ITEM = ("1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"
          "|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
          "2|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?GoldenEye%20(1995)"
          "|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
          "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n")


@pytest.mark.parametrize("with_genre_file", [True, False])
def test_ml100k_official(tmp_path, with_genre_file):
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", "196\t2\t3\t881250949\n186\t1\t3\t891717742\n196\t1\t1\t881250000\n"
          "186\t267\t5\t891717742\n")
    write(folder / "u.item", U_ITEM, encoding="latin-1")
    if with_genre_file:
        write(folder / "u.genre", "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\n"
              "Comedy|5\nCrime|6\nDocumentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\n"
              "Musical|12\nMystery|13\nRomance|14\nSci-Fi|15\nThriller|16\nWar|17\nWestern|18\n\n")
    data = read_movielens_100k(folder, "ml-100k", 70)
    assert data.raw_item_ids == ["1", "267", "2"]
    assert seqs(data) == [[0, 1], [0, 2]]  # 186 before 196; 186's tie at 891717742 by movie id (1, 267)
    assert data.titles == ["Toy Story (1995)", "unknown", "GoldenEye (1995)"]
    assert data.item_categories == [["Animation", "Children's", "Comedy"], ["unknown"],
                                    ["Action", "Adventure", "Thriller"]]


@pytest.mark.parametrize("file, text, expected", [
    ("movies.dat", "1193::One (1975)::Drama\n\n661 Two (1996) Drama\n", "movies.dat line 3: expected MovieID::Title"),
    ("u.genre", "unknown|0\n\nAction\n", "u.genre line 3: expected name|index"),
    ("u.item", U_ITEM.splitlines()[0] + "\n\n2|GoldenEye (1995)|0|1\n", "u.item line 3: expected id|title"),
], ids=["movies.dat", "u.genre", "u.item"])
def test_movielens_side_files_name_the_bad_line_counting_blank_lines(tmp_path, file, text, expected):
    """A blank line is skipped but still counted, so the error points at the line an editor shows."""
    folder = tmp_path / ("ml-1m" if file == "movies.dat" else "ml-100k")
    if file == "movies.dat":
        write(folder / "ratings.dat", "1::1193::5::978300760\n")
    else:
        write(folder / "u.data", "196\t1\t3\t881250949\n")
        if file == "u.item":
            write(folder / "u.genre", "unknown|0\n" + "".join(f"G{i}|{i}\n" for i in range(1, 19)))
    write(folder / file, text)
    with pytest.raises(DataError) as excinfo:
        (read_movielens_dat if file == "movies.dat" else read_movielens_100k)(folder, folder.name, 70)
    assert_one_line_error(excinfo, expected)


# ---------------------------------------------------------------- canonical ids and split (issue 19)

def interactions(seed: int = 0) -> list[tuple[int, int, int]]:
    """(user, item, timestamp) rows of 40 users with ids from 3 to 390 (so text order is not number order) over
    30 items, timestamps from only 5 values (ties everywhere), in no particular order."""
    rng = np.random.default_rng(seed)
    rows = [(int(u), int(i), int(t)) for u in rng.choice(np.arange(3, 400), 40, replace=False)
            for i, t in zip(rng.choice(np.arange(100, 130), 8, replace=False), rng.integers(0, 5, 8))]
    return [rows[k] for k in rng.permutation(len(rows))]


def load_rows(folder: Path, fmt: str, rows: list[tuple[int, int, int]]):
    if fmt == "recbole":
        write(folder / "toy.inter", "user_id:token\titem_id:token\ttimestamp:float\n"
              + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows))
        return read_recbole(folder, "toy", 50)
    write(folder / "u.data", "".join(f"{u}\t{i}\t3\t{t}\n" for u, i, t in rows))
    return read_movielens_100k(folder, "ml-100k", 70)


@pytest.mark.parametrize("fmt", ["recbole", "u.data"])
def test_the_same_interactions_in_another_row_order_give_the_same_ids_sequences_and_split(tmp_path, fmt):
    rows = interactions()
    first = load_rows(tmp_path / "a", fmt, rows)
    second = load_rows(tmp_path / "b", fmt, [rows[k] for k in np.random.default_rng(1).permutation(len(rows))])
    assert first.raw_item_ids == second.raw_item_ids and seqs(first) == seqs(second)
    assert first.fingerprint(3) == second.fingerprint(3)
    for a, b in zip(vars(first.split(3)).values(), vars(second.split(3)).values()):
        assert a.tolist() == b.tolist()
    # users numbered by ascending id, numerically; each user's items by time, ties by item id
    users = sorted({u for u, _, _ in rows})
    expected = [[int(first.raw_item_ids[i]) for i in s] for s in first.sequences]
    assert expected == [[i for _, i, _ in sorted((t, i, 0) for uu, i, t in rows if uu == u)] for u in users]


def test_without_timestamps_only_each_users_own_row_order_matters(tmp_path):
    rows = [(u, i) for u in (12, 3, 40) for i in np.random.default_rng(u).choice(50, 6, replace=False)]
    by_user = {u: [r for r in rows if r[0] == u] for u in (12, 3, 40)}
    interleaved = [by_user[u][k] for k in range(6) for u in (40, 12, 3)]  # other rows between, same per user
    datasets = []
    for name, these in (("a", rows), ("b", interleaved)):
        lines = "".join(f"{u}\t{i}\n" for u, i in these)
        write(tmp_path / name / "toy.inter", "user_id:token\titem_id:token\n" + lines)
        datasets.append(read_recbole(tmp_path / name, "toy", 50))
    assert seqs(datasets[0]) == seqs(datasets[1]) and datasets[0].raw_item_ids == datasets[1].raw_item_ids
    assert [int(datasets[0].raw_item_ids[i]) for i in datasets[0].sequences[0]] == [i for _, i in by_user[3]]


def test_natural_ranks_sorts_integer_ids_as_numbers_and_others_as_text():
    from dimerec.data.dataset import natural_ranks

    assert natural_ranks(np.array(["10", "9", "01", "1", "9"]))[0].tolist() == [3, 2, 0, 1, 2]
    assert natural_ranks(np.array(["b10", "b9", "a"]))[0].tolist() == [1, 2, 0]
    assert natural_ranks(np.array([7.0, 3.0, 7.0]))[0].tolist() == [1, 0, 1]


# ---------------------------------------------------------------- registry

def test_registry_finds_and_loads(tmp_path, monkeypatch):
    write(tmp_path / "ml-1m" / "ml-1m.inter", "user_id:token\titem_id:token\n1\t1\n1\t2\n")
    write(tmp_path / "ml-1m" / "ratings.dat", "1::5::5::1\n")  # RecBole wins over official
    write(tmp_path / "beauty" / "beauty.inter", "user_id:token\titem_id:token\n1\t1\n")
    write_dreamrec(tmp_path / "yoochoose", 4, {"val_data.df": pd.DataFrame(
        dreamrec_rows([[1, 2]], 4), columns=["seq", "len_seq", "next"])})
    (tmp_path / "notes").mkdir()
    assert find_datasets(tmp_path) == ["planted", "beauty", "ml-1m", "yoochoose"]
    assert seqs(load_dataset("ml-1m", tmp_path)) == [[0, 1]]
    assert load_dataset("beauty", tmp_path).max_len == 50
    assert load_dataset("yoochoose", tmp_path).max_len == 10
    assert MAX_LEN["kuairec"] == 10 and max_len_for("ml-20m") == 70 and max_len_for("planted") == 20
    monkeypatch.setenv("DIMEREC_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir("elsewhere") == Path("elsewhere")
    monkeypatch.delenv("DIMEREC_DATA")
    assert resolve_data_dir(None) == Path("data")


# ---------------------------------------------------------------- download

def make_release(server: Path, md5: str | None = "right") -> bytes:
    zip_path = server / "ml-1m.zip"
    server.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("ml-1m/ratings.dat", "1::10::5::2\n1::20::4::1\n")
        z.writestr("ml-1m/movies.dat", "10::Ten (1990)::Drama\n20::Twenty (1991)::Comedy\n")
    payload = zip_path.read_bytes()
    if md5 is not None:
        digest = hashlib.md5(payload).hexdigest() if md5 == "right" else "0" * 32
        write(server / "ml-1m.zip.md5", f"MD5 (ml-1m.zip) = {digest}\n")
    return payload


@pytest.mark.parametrize("md5", ["right", None])
def test_download_unpacks(tmp_path, md5):
    make_release(tmp_path / "server", md5)
    data_dir = tmp_path / "data"
    folder = download("movielens-1m", data_dir, base_url=(tmp_path / "server").as_uri())
    assert folder == data_dir / "ml-1m"
    assert sorted(p.name for p in data_dir.iterdir()) == ["ml-1m", "ml-1m.zip"]
    assert seqs(load_dataset("ml-1m", data_dir)) == [[0, 1]]  # 20 (at time 1) is the first item
    # already unpacked: not fetched again
    assert download("movielens-1m", data_dir, base_url=(tmp_path / "gone").as_uri()) == folder


def test_download_url_from_env(tmp_path, monkeypatch):
    make_release(tmp_path / "server")
    monkeypatch.setenv("DIMEREC_MOVIELENS_URL", (tmp_path / "server").as_uri() + "/")
    assert download("movielens-1m", tmp_path / "data") == tmp_path / "data" / "ml-1m"


def test_download_md5_mismatch_leaves_nothing(tmp_path):
    make_release(tmp_path / "server", md5="wrong")
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as e:
        download("movielens-1m", data_dir, base_url=(tmp_path / "server").as_uri())
    assert_one_line_error(e, "MD5", "ml-1m.zip")
    assert list(data_dir.iterdir()) == []


def test_download_corrupt_zip(tmp_path):
    write(tmp_path / "server" / "ml-1m.zip", "not a zip")
    with pytest.raises(DataError) as e:
        download("movielens-1m", tmp_path / "data", base_url=(tmp_path / "server").as_uri())
    assert_one_line_error(e, "not a valid zip")
    assert list((tmp_path / "data").iterdir()) == []


def test_download_offline_message(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as e:
        download("movielens-10m", data_dir)
    assert_one_line_error(e, "could not reach files.grouplens.org",
                          "https://files.grouplens.org/datasets/movielens/ml-10m.zip", str(data_dir))
    assert list(data_dir.iterdir()) == []


# ---------------------------------------------------------------- errors

def test_error_missing_inter_file(tmp_path):
    with pytest.raises(DataError) as e:
        read_recbole(tmp_path, "toy", 50)
    assert_one_line_error(e, str(tmp_path / "toy.inter"), "not found")


@pytest.mark.parametrize("text, expected", [
    ("user_id:token\trating:float\n1\t5\n", "no item_id:token field"),
    ("user_id\titem_id\n1\t2\n", "line 1: field 'user_id' is not name:type"),
    ("1\t2\n", "line 1: field '1' is not name:type"),
    ("user_id:token\titem_id:int\n1\t2\n", "unknown type 'int'"),
    ("", "file is empty"),
    ("user_id:token\titem_id:token\n", "no interactions"),
    ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t5\n1\t3\tsoon\n",
     "line 3: field timestamp is not a number: 'soon'"),
    ("user_id:token\titem_id:token\n1\t2\n1\n", "line 3: expected 2 tab-separated fields as in the header, found 1"),
    ("user_id:token\titem_id:token\n1\t2\n1\t\n", "line 3: field item_id is empty"),
    ("user_id:token\titem_id:token\n1\t2\n1\t2\t3\n", "line 3: expected 2 tab-separated fields"),
])
def test_error_bad_inter(tmp_path, text, expected):
    path = write(tmp_path / "toy.inter", text)
    with pytest.raises(DataError) as e:
        read_recbole(tmp_path, "toy", 50)
    assert_one_line_error(e, str(path), expected)


@pytest.mark.parametrize("text, expected", [
    ("1::10::5::978300760\n2::20::4::978300760\nabc::30::3::978300760\n",
     "line 3: field UserID is not a number: 'abc'"),
    ("1::10::5::978300760\n1::x::5::978300760\n", "line 2: field MovieID is not a number: 'x'"),
    ("1::10::5::978300760\n1::20::5\n", "line 2: field Timestamp is not a number: ''"),
    ("1::10::5::978300760\n1:20::5::978300760::\n", "line 2: expected 4 fields"),
    ("", "file is empty"),
])
def test_error_bad_ratings_dat(tmp_path, text, expected):
    path = write(tmp_path / "ml-1m" / "ratings.dat", text)
    with pytest.raises(DataError) as e:
        load_dataset("ml-1m", tmp_path)
    assert_one_line_error(e, str(path), expected)


def test_error_dreamrec_sequence_without_items(tmp_path):
    rows = dreamrec_rows([[1, 2]], 4) + [([4.0] * 10, 1, 4.0), ([4.0] * 10, 1, 4.0)]
    write_dreamrec(tmp_path / "kuairec", 4, {
        "test_data.df": pd.DataFrame(rows, columns=["seq", "len_seq", "next"])})
    with pytest.raises(DataError) as e:
        load_dataset("kuairec", tmp_path)
    assert_one_line_error(e, str(tmp_path / "kuairec" / "test_data.df"), "row 2", "has no items")


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_bytes(b"not a pickle"), "not a readable pandas pickle"),
    (lambda p: pd.DataFrame({"history": [[4]], "next": [1]}).to_pickle(p), "expected columns seq"),
    (lambda p: pd.DataFrame({"seq": [[1.0] + [4.0] * 9], "next": [2.0]}).to_pickle(p),
     "row 0: history is not all padding"),
    (lambda p: pd.DataFrame({"seq": [[4.0] * 10], "next": [7.0]}).to_pickle(p),
     "row 0: field next is not an item id in 0..3: 7.0"),
    (lambda p: pd.DataFrame({"seq": [], "next": []}).to_pickle(p), "no rows"),
])
def test_error_bad_dreamrec_part(tmp_path, make, expected):
    write_dreamrec(tmp_path / "yoochoose", 4, {})
    make(tmp_path / "yoochoose" / "val_data.df")
    with pytest.raises(DataError) as e:
        load_dataset("yoochoose", tmp_path)
    assert_one_line_error(e, str(tmp_path / "yoochoose" / "val_data.df"), expected)


def test_error_missing_dataset_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("ml-1m", tmp_path)
    assert_one_line_error(e, str(tmp_path / "ml-1m" / "ratings.dat"),
                          "python -m dimerec download movielens-1m")
    with pytest.raises(DataError) as e:
        load_dataset("kuairec", tmp_path)
    assert_one_line_error(e, str(tmp_path / "kuairec" / "data_statis.df"))


def test_error_unknown_dataset(tmp_path):
    write(tmp_path / "beauty" / "beauty.inter", "user_id:token\titem_id:token\n1\t1\n")
    with pytest.raises(DataError) as e:
        load_dataset("bueaty", tmp_path)
    assert_one_line_error(e, "'bueaty'", "planted, beauty", str(tmp_path))


# ---------------------------------------------------------------- real data

@pytest.mark.real_data
def test_real_data(real_data_dir):
    start = time.perf_counter()
    ml = load_dataset("ml-1m", real_data_dir)
    seconds = time.perf_counter() - start
    assert (ml.n_users, ml.n_items, ml.n_interactions) == (6040, 3706, 1_000_209)
    assert len(ml.category_names) == 18
    assert all(ml.item_categories) and not any(t.startswith("item ") for t in ml.titles)
    assert seconds < 10, f"ml-1m took {seconds:.1f} s to load"
    assert load_dataset("yoochoose", real_data_dir).n_users == 25_694
    assert load_dataset("kuairec", real_data_dir).n_users == 18_418


def test_canonical_ids_left_the_committed_datasets_as_they_were(real_data_dir):
    """docs/protocols.md: canonical ids changed nothing for the committed results. These digests are the fingerprints at
    split seed 0 as the loaders gave them before `canonical_sequences` (first appearance in file order)."""
    before = {"ml-1m": "5d98103a72eae6e8", "yoochoose": "b067c7511e9702e9", "kuairec": "950968a9ce74d25e",
              "planted": "2c1ebcafe3d98fcc"}
    now = {name: load_dataset(name, real_data_dir).fingerprint(0)["digest"] for name in before}
    assert now == before


# ---------------------------------------------------------------- DreamRec's own split (--split given)

def dreamrec_parts(folder: Path, seq_size: int = 10, parts=("train_data.df", "val_data.df", "test_data.df")):
    """A DreamRec folder of 60 items: 30 training, 6 validation and 6 test sequences (ids 0..59, pad 60)."""
    pad, rng = 60, np.random.default_rng(0)
    sizes = {"train_data.df": 30, "val_data.df": 6, "test_data.df": 6}
    content = {p: [list(rng.integers(0, pad, size=int(rng.integers(3, 8)))) for _ in range(sizes[p])]
               for p in parts}
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"seq_size": [seq_size], "item_num": [pad]}).to_pickle(folder / "data_statis.df")
    for p, sequences in content.items():
        pd.DataFrame(dreamrec_rows(sequences, pad, width=seq_size), columns=["seq", "len_seq", "next"]).to_pickle(
            folder / p)
    return content


def test_split_given_keeps_dreamrecs_parts_whatever_the_seed(tmp_path):
    content = dreamrec_parts(tmp_path / "shop")
    data = load_dataset("shop", tmp_path, split="given")
    for seed in (0, 7):
        split = data.split(seed)
        assert [len(split.train), len(split.valid), len(split.test)] == [30, 6, 6]
        assert [data.sequences[u].tolist() for u in split.test] == [list(map(int, s)) for s in content["test_data.df"]]
        assert [data.sequences[u].tolist() for u in split.valid] == [list(map(int, s)) for s in content["val_data.df"]]
    random = load_dataset("shop", tmp_path)
    assert random.given_split is None and len(random.split(0).test) == 42 // 10
    assert data.fingerprint(0)["split"] == "given 30/6/6" and random.fingerprint(0)["split"] == "random"


def test_an_unregistered_dreamrec_folder_takes_its_seq_size_as_history_length(tmp_path):
    dreamrec_parts(tmp_path / "shop", seq_size=7)
    assert load_dataset("shop", tmp_path).max_len == 7  # was the default 50
    assert load_dataset("shop", tmp_path, split="given").max_len == 7


@pytest.mark.parametrize("name, make, says", [
    ("shop", lambda d: dreamrec_parts(d / "shop", parts=("val_data.df", "test_data.df")), "has no train_data.df"),
    ("planted", lambda d: None, "planted has no split of its own"),
    ("beauty", lambda d: write(d / "beauty" / "beauty.inter", "user_id:token\titem_id:token\n1\t1\n"),
     "beauty.inter has no split of its own"),
])
def test_split_given_without_parts_is_refused_in_one_line(name, make, says, tmp_path):
    make(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path, split="given")
    assert_one_line_error(e, "--split given", says, "--split random")


def test_train_and_evaluate_with_split_given(tmp_path, capsys):
    from dimerec.cli import main

    dreamrec_parts(tmp_path / "data" / "shop")
    run = tmp_path / "run"
    assert main(["train", "--model", "pop", "--dataset", "shop", "--data-dir", str(tmp_path / "data"),
                 "--split", "given", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train_config"]["split"] == "given" and config["data_fingerprint"]["split"] == "given 30/6/6"
    assert main(["evaluate", str(run)]) == 0
    again = json.loads((run / "metrics-eval-next-item-unmasked-torch.json").read_text())
    assert again["test"] == json.loads((run / "metrics.json").read_text())["test"]
    rc = main(["train", "--model", "pop", "--dataset", "shop", "--data-dir", str(tmp_path / "data"),
               "--split", "given2", "--out", str(tmp_path / "other")])
    assert rc == 2 and "--split" in capsys.readouterr().err


# ---- issue 31: a file of the wrong shape is named, not guessed at; what is dropped is counted ----------------

INTER = "user_id:token\titem_id:token\n" + "".join(f"{u}\t{i}\n" for u in range(3) for i in range(4))
ITEM_HEADER = "item_id:token\ttitle:token\tgenre:token_seq\n"


@pytest.mark.parametrize("item_bytes, expected", [
    ((ITEM_HEADER + "0\tA\tx y\n1\tB\n2\tC\tz\n3\tD\tw\n").encode(),
     "toy.item line 3: expected 3 tab-separated fields as in the header, found 2"),
    ((ITEM_HEADER + "0\tA\tx\n\n1\tB\tz\t9\n").encode(),  # the blank line is skipped but counted
     "toy.item line 4: expected 3 tab-separated fields as in the header, found 4"),
    ((ITEM_HEADER + "0\tA\tx\n1\tCaf\u00e9\tz\n").encode("latin-1"),
     "toy.item line 3: byte 0xe9 is not UTF-8 text; RecBole atomic files are UTF-8"),
])
def test_an_item_file_row_with_a_missing_or_extra_field_names_the_line(tmp_path, item_bytes, expected):
    write(tmp_path / "toy.inter", INTER)
    (tmp_path / "toy.item").write_bytes(item_bytes)
    with pytest.raises(DataError) as e:
        read_recbole(tmp_path, "toy", 50)
    assert_one_line_error(e, expected)


def test_a_blank_line_does_not_shift_the_line_a_message_names(tmp_path):
    write(tmp_path / "toy.inter", "user_id:token\titem_id:token\n1\t2\n\n\n1\t\n")
    with pytest.raises(DataError) as e:
        read_recbole(tmp_path, "toy", 50)
    assert_one_line_error(e, "toy.inter line 5: field item_id is empty")


def test_an_inter_file_that_is_not_utf8_names_the_line_and_the_encoding(tmp_path):
    (tmp_path / "toy.inter").write_bytes("user_id:token\titem_id:token\n1\t2\n1\tCaf\u00e9\n".encode("cp1252"))
    with pytest.raises(DataError) as e:
        read_recbole(tmp_path, "toy", 50)
    assert_one_line_error(e, "toy.inter line 3: byte 0xe9 is not UTF-8 text; RecBole atomic files are UTF-8 "
                             "(save the file as UTF-8)")


@pytest.mark.parametrize("folder_at", ["shop/shop.inter", "shop/shop.item", "yc/train_data.df", "ml-1m/ratings.dat"])
def test_a_folder_where_a_file_should_be_is_named(folder_at, tmp_path):
    data = tmp_path / "data"
    write(data / "shop" / "shop.inter", INTER) if folder_at != "shop/shop.inter" else None
    if folder_at == "yc/train_data.df":
        (data / "yc").mkdir(parents=True)
        pd.DataFrame({"seq_size": [10], "item_num": [5]}).to_pickle(data / "yc" / "data_statis.df")
    (data / folder_at).mkdir(parents=True)
    with pytest.raises(DataError) as e:
        load_dataset(folder_at.split("/")[0], data)
    assert_one_line_error(e, f"{data / folder_at} is a folder, not a file")


def test_items_an_item_file_leaves_without_a_category_are_counted(tmp_path):
    write(tmp_path / "toy.inter", INTER)
    write(tmp_path / "toy.item", ITEM_HEADER + "0\tA\tx\n1\tB\t\n")  # item 1: empty genre; items 2, 3: not listed
    data = read_recbole(tmp_path, "toy", 50)
    assert data.item_categories == [["x"], [], [], []]
    assert data.notes == [f"{tmp_path / 'toy.item'}: 2 of the 4 items are not listed (they are titled 'item ID' and "
                          f"have no category)",
                          f"{tmp_path / 'toy.item'}: 1 of the 4 items have an empty genre field, so no category"]


def test_what_is_dropped_is_said_once_and_kept_in_config_json(tmp_path, capsys):
    from dimerec.cli import main

    folder = tmp_path / "data" / "shop"
    rows = [(0, i) for i in range(12)] + [(u, (u * k) % 12) for u in range(1, 30) for k in (1, 2, 3, 5, 7)]
    rows += [(30, 3), (30, 4)]  # a user of two items: under loo a test row, but no validation row
    write(folder / "shop.inter", "user_id:token\titem_id:token\n" + "".join(f"{u}\t{i}\n" for u, i in rows))
    write(folder / "shop.item", ITEM_HEADER + "".join(f"{i}\tT{i}\tg{i % 3}\n" for i in range(10)))  # 10, 11 absent
    out = tmp_path / "run"
    assert main(["train", "--model", "pop", "--dataset", "shop", "--data-dir", str(tmp_path / "data"),
                 "--protocol", "loo", "--quiet", "--out", str(out)]) == 0
    notes = [line[len("note: "):] for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"{folder / 'shop.item'}: 2 of the 12 items are not listed (they are titled 'item ID' and have no category)",
        "--protocol loo: 1 of the 31 training users/sequences have fewer than 4 items, too few for a training "
        "sample, and are left out of it",
        "--protocol loo: 1 of the 31 validation users/sequences have fewer than 3 items, too few for a validation "
        "row, and are left out of it"]
    assert json.loads((out / "config.json").read_text())["data_notes"] == notes
