"""The one in-memory dataset type, the user split, and the training samplers.

Every reader (RecBole atomic files, DreamRec pickles, MovieLens releases, the
synthetic `planted` world) returns a `SeqDataset`. Item ids are dense,
0 .. n_items-1; id `n_items` is the padding id of every batch.

Batches are left-padded: a history of length n sits in the last n columns of a
[B, max_len] array, so column max_len-1 is always the most recent item and a
position index means "distance from the end" for every user.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from dimerec.errors import DataError

Sampling = Literal["windows", "prefixes", "random-cut"]
SAMPLINGS = ("windows", "prefixes", "random-cut")
Split = Literal["random", "given"]
SPLITS = ("random", "given")


@dataclass
class SeqDataset:
    name: str
    sequences: list[np.ndarray]  # per user (or session), oldest first, int64 item ids
    n_items: int
    max_len: int  # training/evaluation histories are truncated to the last max_len items
    titles: list[str] = field(default_factory=list)  # per item; empty when the source has none
    item_categories: list[list[str]] = field(default_factory=list)  # per item; empty when none
    raw_item_ids: list[str] = field(default_factory=list)  # the source's own id of each item
    ground_truth: dict | None = None  # planted world only: see dimerec.data.planted
    source: str = ""  # where it was read from, for messages
    given_split: UserSplit | None = None  # the source's own train/valid/test parts (`--split given`), if read so
    notes: list[str] = field(default_factory=list)  # what the reader dropped or defaulted, counted (a run reports it)

    def __post_init__(self):
        for u, seq in enumerate(self.sequences):
            if len(seq) == 0:
                raise DataError(f"{self.source or self.name}: sequence {u} has no items")
        if not self.titles:
            self.titles = [f"item {i}" for i in range(self.n_items)]
        if not self.raw_item_ids:
            self.raw_item_ids = [str(i) for i in range(self.n_items)]

    @property
    def pad_id(self) -> int:
        return self.n_items

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def category_names(self) -> list[str]:
        return sorted({c for cats in self.item_categories for c in cats})

    def stats(self) -> dict:
        lengths = np.array([len(s) for s in self.sequences])
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "avg_length": float(lengths.mean()),
            "max_len": self.max_len,
            "categories": len(self.category_names),
        }

    def fingerprint(self, split_seed: int) -> dict:
        """What ties a run to this data (issue 19): sizes, and short SHA-256 digests of the item id map (each
        dense id's source id and title, in id order), of the sequences (in user order), and of both with the
        split seed. Ids and the split do not depend on the file's row order (`canonical_sequences`;
        `id_order` says so, outside the digest, so runs from before it that match still load)."""
        items = hashlib.sha256(json.dumps([self.raw_item_ids, self.titles]).encode()).hexdigest()
        seqs = hashlib.sha256(np.array([len(q) for q in self.sequences], dtype="<i8").tobytes())
        seqs.update(np.concatenate(self.sequences).astype("<i8").tobytes())
        sequences = seqs.hexdigest()
        split = "random"
        if self.given_split is not None:
            parts = [len(self.given_split.train), len(self.given_split.valid), len(self.given_split.test)]
            split = f"given {parts[0]}/{parts[1]}/{parts[2]}"
        whole = hashlib.sha256(f"{self.n_items} {self.max_len} {items} {sequences} {split_seed} {split}".encode())
        return {"digest": whole.hexdigest()[:16], "n_items": self.n_items, "n_users": self.n_users,
                "n_interactions": self.n_interactions, "max_len": self.max_len, "split_seed": split_seed,
                "split": split, "items_digest": items[:16], "sequences_digest": sequences[:16],
                "id_order": "canonical"}

    def split(self, seed: int = 0) -> "UserSplit":
        """Seeded 8:1:1 split of users (SPEC §2): train / validation / test; the source's own parts instead
        when the dataset was read with them (`given_split`), whatever the seed."""
        if self.given_split is not None:
            return self.given_split
        order = np.random.default_rng(seed).permutation(self.n_users)
        n_valid = self.n_users // 10
        n_test = self.n_users // 10
        n_train = self.n_users - n_valid - n_test
        return UserSplit(
            train=np.sort(order[:n_train]),
            valid=np.sort(order[n_train:n_train + n_valid]),
            test=np.sort(order[n_train + n_valid:]),
        )

    def item_popularity(self, users: np.ndarray) -> np.ndarray:
        counts = np.zeros(self.n_items, dtype=np.int64)
        for u in users:
            np.add.at(counts, self.sequences[u], 1)
        return counts


def fingerprint_change(recorded: dict, now: dict) -> str | None:
    """How the data of fingerprint `now` differ from the `recorded` one, in words; None when they are the same."""
    if recorded.get("digest") == now["digest"]:
        return None
    for key, says in (("n_items", "it has {now:,} items, the run's data had {rec:,}"),
                      ("n_users", "it has {now:,} users/sequences, the run's data had {rec:,}"),
                      ("n_interactions", "it has {now:,} interactions, the run's data had {rec:,}"),
                      ("max_len", "its history length is {now}, the run's was {rec}"),
                      ("split_seed", "its split seed is {now}, the run's was {rec}"),
                      ("split", "its split is {now}, the run's was {rec}")):
        if key in recorded and recorded[key] != now[key]:
            return says.format(now=now[key], rec=recorded[key])
    if recorded.get("items_digest") != now["items_digest"]:
        if recorded.get("id_order") != "canonical":
            return ("same sizes, but the item ids map to other items: the run predates canonical ids (issue 19), "
                    "when ids followed the file's row order, or items were renamed; retrain it on this data")
        return "same sizes, but the item ids map to other items (were items renamed, added or dropped?)"
    if recorded.get("sequences_digest") != now["sequences_digest"]:
        return ("same sizes and items, but the sequences differ in content or order (without a timestamp column, "
                "a user's rows in file order are the order: were they reordered?)")
    return "same sizes, but different content"


def natural_ranks(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """The rank of each id among the distinct ids, and their count: ids sorted as numbers when every one is an
    integer (so 10 comes after 9; equal values such as "1" and "01" then by text), otherwise as text."""
    codes, distinct = pd.factorize(ids)
    text = np.asarray(distinct).astype(str)
    numbers = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(dtype=np.float64)
    if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
        order = np.lexsort((text, numbers))
    else:
        order = np.argsort(text, kind="stable")
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[order] = np.arange(len(distinct))
    return rank[codes], len(distinct)


def canonical_sequences(user_ids: np.ndarray, item_ids: np.ndarray,
                        timestamps: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-user item sequences and the source id of each dense item, the same whatever the rows' order (issue 19).

    The canonical order of the interactions: users by ascending source id (`natural_ranks`); a user's by
    timestamp, equal timestamps by ascending source item id; without a timestamp column a user's rows keep
    file order, which is then the data's only record of time. Dense user ids are ranks in that order (so the
    seeded split, a permutation of them, is canonical too); dense item ids number the items by first appearance
    in it. A file already in canonical order (ML-1M's atomic file: users ascending, no timestamps) keeps its
    first-appearance ids, so runs trained before this order existed still match their data.
    """
    user_rank, n_users = natural_ranks(user_ids)
    if timestamps is None:
        order = np.argsort(user_rank, kind="stable")  # user, then file row
    else:
        item_rank, _ = natural_ranks(item_ids)
        order = np.lexsort((item_rank, timestamps, user_rank))  # user, then time, then source item id
    items, raw_items = pd.factorize(np.asarray(item_ids)[order])
    counts = np.bincount(user_rank, minlength=n_users)
    return np.split(items.astype(np.int64), np.cumsum(counts)[:-1]), raw_items


@dataclass
class UserSplit:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def left_pad(histories: list[np.ndarray], max_len: int, pad_id: int) -> np.ndarray:
    """Histories (each already at most max_len long) -> [B, max_len] int64, right-aligned."""
    out = np.full((len(histories), max_len), pad_id, dtype=np.int64)
    for row, h in enumerate(histories):
        if len(h):
            out[row, max_len - len(h):] = h
    return out


def default_window_targets(max_len: int) -> int:
    """Targets per window when --window-targets is not given: half the history length (rounded up), so every
    target of a window sees at least max_len/2 earlier items and a window costs one pass for max_len/2 targets."""
    return max(1, -(-max_len // 2))


def window_targets_for(data: SeqDataset, window_targets: int | None) -> int:
    """The targets per window of --sampling windows on `data`: `window_targets`, else its default; a DataError
    unless it is in 1..max_len. The one check of --window-targets, for the trainer and for TrainSampler."""
    s = default_window_targets(data.max_len) if window_targets is None else window_targets
    if not 1 <= s <= data.max_len:
        raise DataError(f"--window-targets must be in 1..max_len = 1..{data.max_len} for {data.name} "
                        f"(a window holds the max_len items before its last target); got {s}")
    return s


class TrainSampler:
    """Draws training batches from the training users.

    - `windows` (for the models that score a window in one pass, `Recommender.takes_windows`; the default of
      those marked `windows_by_default`):
      each training sequence's target positions 1..n-1 are cut, from the end, into stretches of s =
      `window_targets` consecutive positions (the first stretch of a sequence may be shorter). A sample is
      one stretch: `hist` [max_len] holds the max_len items before its last target (left-padded), exactly
      that target's serving history, and `target` [s] its targets, the last one last; target j's most
      recent item sits in column max_len - s + j, so it sees the window's items up to that column
      (between max_len - s + 1 and max_len of them) at the positions the window gives them. One epoch
      visits every (user, position) target exactly once, in a seeded shuffled order of windows;
      `batch_size` counts targets (a batch is batch_size // s windows), so a step trains as many targets
      as under `prefixes`.
    - `prefixes`: every position k >= 1 of every training sequence is one sample (history = the items
      before it, truncated to max_len); one epoch visits each once in a seeded shuffled order. It matches
      the rows the next-item protocol evaluates, and is how DreamRec's data were made.
    - `random-cut`: ComiRec's sampler; each sample picks a random user and a random
      cut k, history = seq[k-max_len:k], target = seq[k]. An "epoch" is then the same
      number of samples as `prefixes` would give, so budgets compare.
    """

    def __init__(self, data: SeqDataset, users: np.ndarray, batch_size: int,
                 sampling: Sampling = "prefixes", seed: int = 0, window_targets: int | None = None):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.data, self.batch_size, self.sampling = data, batch_size, sampling
        self.users = np.array([u for u in users if len(data.sequences[u]) >= 2], dtype=np.int64)
        if len(self.users) == 0:
            raise DataError(f"{data.name}: no training sequence has two or more items")
        lengths = np.array([len(data.sequences[u]) for u in self.users])
        # all (user, position) pairs with position >= 1
        self.pair_user = np.repeat(self.users, lengths - 1)
        self.pair_pos = np.concatenate([np.arange(1, n) for n in lengths])
        self.window_targets = None
        if sampling == "windows":
            s = self.window_targets = window_targets_for(data, window_targets)
            # a window: (user, its last target's position, its number of targets); stretches cut from the end
            ends = [np.arange(n - 1, 0, -s) for n in lengths]
            self.window_user = np.repeat(self.users, [len(e) for e in ends])
            self.window_end = np.concatenate(ends)
            self.window_count = np.minimum(s, self.window_end)  # the first stretch stops at position 1
        self.rng = np.random.default_rng(seed)
        # where the current epoch stands, for a checkpoint taken within it: the generator's state when the
        # epoch drew its order, and the batches yielded since; _skip > 0 when epoch() resumes such an epoch
        self.epoch_rng, self.batches_done, self._skip = None, 0, 0
        self.shard = (0, 1)  # (rank, ranks): under torchrun each rank takes samples rank, rank + ranks, ... of a batch

    @property
    def mid_epoch(self) -> bool:
        """Whether the next epoch() continues an epoch interrupted by a checkpoint (load_state_dict)."""
        return self._skip > 0

    @property
    def samples_per_epoch(self) -> int:
        """Samples an epoch draws: windows under `windows`, (history, target) pairs otherwise."""
        return len(self.window_user) if self.window_targets else len(self.pair_user)

    @property
    def targets_per_epoch(self) -> int:
        """Targets an epoch trains: every (user, position >= 1) pair of the training sequences, for every sampling."""
        return len(self.pair_user)

    @property
    def samples_per_batch(self) -> int:
        return max(1, self.batch_size // self.window_targets) if self.window_targets else self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.samples_per_epoch // self.samples_per_batch)

    def epoch(self):
        """Yields (hist [B, L] int64, target [B] or, under `windows`, [B, s] int64) numpy batches for one epoch
        (after load_state_dict of a checkpoint taken within an epoch: that epoch's remaining batches, drawn in
        the same order)."""
        n, per_batch = self.samples_per_epoch, self.samples_per_batch
        self.epoch_rng = self.rng.bit_generator.state
        skip, self._skip = self._skip, 0
        if self.sampling == "windows":
            order = self.rng.permutation(n)
            users, positions = self.window_user[order], self.window_end[order]
        elif self.sampling == "prefixes":
            order = self.rng.permutation(n)
            users, positions = self.pair_user[order], self.pair_pos[order]
        else:
            users = self.rng.choice(self.users, size=n)
            lengths = np.array([len(self.data.sequences[u]) for u in users])
            positions = self.rng.integers(1, lengths)
        r, ranks = self.shard
        for index, start in enumerate(range(0, n, per_batch)):
            if index < skip:
                continue
            self.batches_done = index + 1
            stop = min(start + per_batch, n)
            if stop - start < ranks:  # a last batch too small to give every rank a sample
                continue
            yield self.make_batch(users[start + r:stop:ranks], positions[start + r:stop:ranks])
        self.batches_done = 0

    def make_batch(self, users: np.ndarray, positions: np.ndarray):
        """(hist, target) of the samples whose (last) target is seqs[u][k]; see the class docstring."""
        L, seqs = self.data.max_len, self.data.sequences
        hist = left_pad([seqs[u][max(0, k - L):k] for u, k in zip(users, positions)], L, self.data.pad_id)
        if not self.window_targets:
            return hist, np.array([seqs[u][k] for u, k in zip(users, positions)], dtype=np.int64)
        s = self.window_targets
        target = np.full((len(users), s), self.data.pad_id, dtype=np.int64)
        for row, (u, k) in enumerate(zip(users, positions)):
            first = max(1, k - s + 1)  # the stretch's first target position
            target[row, s - (k - first + 1):] = seqs[u][first:k + 1]
        return hist, target

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "epoch_rng": self.epoch_rng, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        done = state.get("batches_done", 0)  # absent in checkpoints written before mid-epoch ones
        if 0 < done < self.steps_per_epoch and state.get("epoch_rng"):
            self.rng.bit_generator.state, self._skip = state["epoch_rng"], done  # redraw that epoch, skip its start
