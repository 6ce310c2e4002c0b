"""The dataset registry: names -> readers, over one data directory.

Data directory: the `--data-dir` argument, else `$DIMEREC_DATA`, else `./data`.
A dataset is a folder there:

- `ml-1m/`, `ml-10M100K/` or `ml-10m/`, `ml-100k/`: MovieLens, as RecBole atomic files
  (`ml-1m.inter`, ...) when present, else the official GroupLens files;
- `yoochoose/`, `kuairec/`: DreamRec pickles (`data_statis.df`, `*_data.df`);
- any other `<name>/` holding `<name>.inter` (RecBole) or `data_statis.df` (DreamRec);
- `planted` needs no folder: a synthetic world generated from the seed.

Nothing is cached on disk.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from dimerec.data.dataset import SeqDataset, TrainSampler, UserSplit, left_pad
from dimerec.data.dreamrec import read_dreamrec
from dimerec.data.movielens import read_movielens_100k, read_movielens_dat
from dimerec.data.recbole import read_recbole
from dimerec.errors import DataError

__all__ = ["SeqDataset", "UserSplit", "TrainSampler", "left_pad", "MAX_LEN", "DEFAULT_MAX_LEN",
           "DATA_DIR_HELP", "resolve_data_dir", "check_data_dir", "max_len_for", "load_dataset", "find_datasets",
           "with_history_length"]

DATA_ENV = "DIMEREC_DATA"
DEFAULT_DATA_DIR = "data"  # the data directory when neither --data-dir nor $DIMEREC_DATA names one
DATA_DIR_RULE = f"--data-dir, else ${DATA_ENV}, else ./{DEFAULT_DATA_DIR}"
DATA_DIR_HELP = f"data directory (default: ${DATA_ENV}, else ./{DEFAULT_DATA_DIR})"
# histories are truncated to the last MAX_LEN items (MovieLens: the paper's 70)
MAX_LEN = {"yoochoose": 10, "kuairec": 10, "ml-1m": 70, "ml-10m": 70, "ml-100k": 70, "planted": 20}
DEFAULT_MAX_LEN = 50
# MovieLens name -> (candidate folders, official ratings file, download name)
MOVIELENS = {
    "ml-1m": (("ml-1m",), "ratings.dat", "movielens-1m"),
    "ml-10m": (("ml-10M100K", "ml-10m"), "ratings.dat", "movielens-10m"),
    "ml-100k": (("ml-100k",), "u.data", "movielens-100k"),
}
DREAMREC = ("yoochoose", "kuairec")
DREAMREC_SOURCE = "DreamRec's preprocessed data (github.com/YangZhengyi98/DreamRec, data/)"


def resolve_data_dir(arg: str | Path | None) -> Path:
    """The data directory: `arg`, else $DIMEREC_DATA, else ./data."""
    if arg:
        return Path(arg)
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def check_data_dir(data_dir: Path, hint: str = "") -> Path:
    """`data_dir`, or a DataError saying it does not exist (or is not a folder) and where it came from."""
    if not data_dir.is_dir():
        what = "is not a folder" if data_dir.exists() else "does not exist"
        raise DataError(f"data directory {data_dir} {what} (it is {DATA_DIR_RULE}); "
                        f"{hint or 'only the generated `planted` dataset needs none'}")
    return data_dir


def max_len_for(name: str) -> int:
    if name in MAX_LEN:
        return MAX_LEN[name]
    return MAX_LEN["ml-1m"] if name.startswith("ml-") else DEFAULT_MAX_LEN


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0, split: str = "random") -> SeqDataset:
    """Read dataset `name` from the data directory (`planted` is generated from `seed`). `split="given"`: keep
    the source's own train/validation/test parts as the split (DreamRec folders holding all three parts)."""
    if split not in ("random", "given"):
        raise DataError(f"--split must be random or given; got {split!r}")
    if split == "given" and (name == "planted" or name in MOVIELENS):
        raise DataError(f"--split given: {name} has no split of its own (only a DreamRec-format folder with "
                        f"train_data.df, val_data.df and test_data.df has); use --split random")
    if name == "planted":
        from dimerec.data.planted import make_planted
        return make_planted(seed=seed)
    hint = f"run `python -m dimerec download {MOVIELENS[name][2]}` to fetch {name}" if name in MOVIELENS else ""
    data_dir = check_data_dir(resolve_data_dir(data_dir), hint)
    if name in MOVIELENS:
        return load_movielens(name, data_dir)
    folder = data_dir / name
    kind = folder_kind(folder, name)
    if kind == "recbole":
        if split == "given":
            raise DataError(f"--split given: {folder / (name + '.inter')} has no split of its own (only a "
                            f"DreamRec-format folder with train_data.df, val_data.df and test_data.df has); "
                            f"use --split random")
        return read_recbole(folder, name, max_len_for(name))
    if kind == "dreamrec":  # an unregistered one: the history length its data_statis.df says (seq_size)
        return read_dreamrec(folder, name, MAX_LEN.get(name), split)
    if name in DREAMREC:
        raise DataError(f"{name}: no {folder / 'data_statis.df'}; put {DREAMREC_SOURCE} "
                        f"into {folder}")
    if folder.is_dir():
        raise DataError(f"{name}: {folder} holds neither {name}.inter (RecBole) "
                        f"nor data_statis.df (DreamRec)")
    found = ", ".join(find_datasets(data_dir))
    raise DataError(f"unknown dataset {name!r}; datasets in {data_dir}: {found} "
                    f"(a dataset is a folder <name>/ holding <name>.inter or data_statis.df)")


def with_history_length(data: SeqDataset, max_len: int | None) -> SeqDataset:
    """`data` read with histories of the last `max_len` items (`--max-len`; None: the dataset's own length)."""
    return data if max_len is None or max_len == data.max_len else dataclasses.replace(data, max_len=max_len)


def load_run_dataset(config: dict, data_dir: str | Path | None = None) -> SeqDataset:
    """The dataset a run (its config.json as a dict) trained on, read as it read it: its split seed and split; for
    `planted`, the world of the parameters the run recorded (`planted_params`), or, for a run from before they were
    recorded, the default world of the run's size (dataset_stats' users: the notebooks' fast worlds are smaller).
    The run's fingerprint still has to match (dimerec.runs.load_run checks it)."""
    name, train_config = config["dataset"], config.get("train_config", {})
    seed, split = int(train_config.get("split_seed", 0)), train_config.get("split", "random")
    if name == "planted":
        from dimerec.data.planted import make_planted

        params = config.get("planted_params")
        if params is None:
            users = config.get("dataset_stats", {}).get("users")
            params = {"seed": seed, **({"n_users": int(users)} if users else {})}
        return with_history_length(make_planted(**params), train_config.get("max_len"))
    return with_history_length(load_dataset(name, data_dir or config.get("data_dir"), seed=seed, split=split),
                               train_config.get("max_len"))


def same_world(config: dict, other: dict) -> bool:
    """Whether two runs (their config.json as dicts) trained on the same data and split, so that one can be set
    beside the other's references: their fingerprints' data digests (items, sequences, split seed) when both have
    one, else their dataset name, number of users and split seed (runs from before fingerprints)."""
    digests = [(c.get("data_fingerprint") or {}).get("digest") for c in (config, other)]
    if all(digests):
        return digests[0] == digests[1]

    def coarse(c: dict) -> tuple:
        return (c.get("dataset"), c.get("dataset_stats", {}).get("users"),
                c.get("train_config", {}).get("split_seed", 0))
    return coarse(config) == coarse(other)


def load_movielens(name: str, data_dir: Path) -> SeqDataset:
    folders, official, download_name = MOVIELENS[name]
    max_len = max_len_for(name)
    for folder in (data_dir / f for f in folders):
        if (folder / f"{name}.inter").exists():
            return read_recbole(folder, name, max_len)
        if (folder / official).exists():
            reader = read_movielens_100k if name == "ml-100k" else read_movielens_dat
            return reader(folder, name, max_len)
    looked = " or ".join(str(data_dir / f / official) for f in folders)
    raise DataError(f"{name}: no data at {looked} (nor a RecBole {name}.inter there); "
                    f"run `python -m dimerec download {download_name}` or unzip the GroupLens "
                    f"release into {data_dir}")


def folder_kind(folder: Path, name: str) -> str | None:
    if (folder / f"{name}.inter").exists():  # a folder of that name: its reader says so
        return "recbole"
    if (folder / "data_statis.df").exists():
        return "dreamrec"
    return None


def movielens_present(name: str, data_dir: Path) -> bool:
    folders, official, _ = MOVIELENS[name]
    return any((data_dir / f / official).is_file() or (data_dir / f / f"{name}.inter").is_file()
               for f in folders)


def find_datasets(data_dir: str | Path | None) -> list[str]:
    """Names of the datasets present in the data directory, `planted` first."""
    data_dir = resolve_data_dir(data_dir)
    names = {n for n in MOVIELENS if movielens_present(n, data_dir)}
    if data_dir.is_dir():
        names |= {p.name for p in data_dir.iterdir()
                  if p.is_dir() and folder_kind(p, p.name) is not None}
    names -= {"ml-10M100K"}  # listed as ml-10m
    return ["planted"] + sorted(names)
