"""Sequence-level training (`--sampling windows`): the sampler visits every target once an epoch, and each
model that takes windows scores a window's targets in one pass exactly as it scores each target alone."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dimerec.data.dataset import SeqDataset, TrainSampler
from dimerec.models import MODELS
from dimerec.models.base import Batch
from dimerec.trainer import build_model, train_model

L, S = 8, 5  # history length and targets per window of the tiny world


@pytest.fixture(scope="module")
def distinct():
    """40 users whose every interaction is its own item, so a target names its (user, position)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=40)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    sequences = [np.arange(a, a + n, dtype=np.int64) for a, n in zip(starts, lengths)]
    return SeqDataset("distinct", sequences, int(lengths.sum()), L)


def all_batches(sampler):
    return [(h.copy(), t.copy()) for h, t in sampler.epoch()]


def test_windows_visit_every_target_once_an_epoch_with_its_exact_last_history(distinct):
    users = np.arange(distinct.n_users)
    sampler = TrainSampler(distinct, users, batch_size=3 * S, sampling="windows", seed=1, window_targets=S)
    expected = sorted(int(i) for u in users for i in distinct.sequences[u][1:])
    for _ in range(2):  # two epochs, each a new order
        seen = []
        for hist, target in all_batches(sampler):
            assert hist.shape[1] == L and target.shape[1] == S and len(hist) <= 3
            for h, t in zip(hist, target):
                real = t[t != distinct.pad_id]
                seen += real.tolist()
                assert (t[S - len(real):] != distinct.pad_id).all()  # a short stretch is padded on the left
                last = int(t[-1])  # ids are consecutive within a user: its history is the L ids before it
                want = np.arange(max(last - L, _start(distinct, last)), last)
                np.testing.assert_array_equal(h[L - len(want):], want)
                assert (h[:L - len(want)] == distinct.pad_id).all()
                for j in range(S):  # target j's most recent item sits in column L - S + j
                    if t[j] != distinct.pad_id:
                        assert h[L - S + j] == t[j] - 1
        assert sorted(seen) == expected
    assert sampler.targets_per_epoch == len(expected)


def _start(data, item):
    """The first item of the user holding `item` (ids are consecutive per user)."""
    for seq in data.sequences:
        if seq[0] <= item <= seq[-1]:
            return int(seq[0])
    raise AssertionError(item)


def test_windows_resume_within_an_epoch_redraws_the_same_rest(distinct):
    users = np.arange(distinct.n_users)
    full = TrainSampler(distinct, users, batch_size=2 * S, sampling="windows", seed=3, window_targets=S)
    first = all_batches(full)
    part = TrainSampler(distinct, users, batch_size=2 * S, sampling="windows", seed=3, window_targets=S)
    it = part.epoch()
    for _ in range(4):
        next(it)
    state = part.state_dict()
    again = TrainSampler(distinct, users, batch_size=2 * S, sampling="windows", seed=3, window_targets=S)
    again.load_state_dict(state)
    rest = all_batches(again)
    assert len(rest) == len(first) - 4
    for (h1, t1), (h2, t2) in zip(first[4:], rest):
        np.testing.assert_array_equal(h1, h2)
        np.testing.assert_array_equal(t1, t2)


def test_under_torchrun_each_rank_takes_its_shard_of_a_windows_batch(distinct):
    users = np.arange(distinct.n_users)
    whole = TrainSampler(distinct, users, batch_size=4 * S, sampling="windows", seed=5, window_targets=S)
    ranks = []
    for r in range(2):
        sampler = TrainSampler(distinct, users, batch_size=4 * S, sampling="windows", seed=5, window_targets=S)
        sampler.shard = (r, 2)
        ranks.append(all_batches(sampler))
    for (h, t), (h0, t0), (h1, t1) in zip(all_batches(whole), *ranks):
        np.testing.assert_array_equal(np.concatenate([h0, h1]), np.concatenate([h[0::2], h[1::2]]))
        np.testing.assert_array_equal(np.concatenate([t0, t1]), np.concatenate([t[0::2], t[1::2]]))


# (model, settings): every model that takes windows, each GEM of DimeRec, dropout off so a pass is deterministic
WINDOW_MODELS = [
    ("sasrec", dict(dropout=0.0)), ("sasrec", dict(dropout=0.0, loss_kind="ce")), ("gru4rec", {}),
    ("mind", {}), ("comirec-sa", {}), ("comirec-dr", {}), ("dreamrec", dict(dropout=0.0)),
    ("dimerec", {}), ("dimerec", dict(gem="rule")), ("dimerec", dict(gem="comirec-dr")),
    ("dimerec", dict(gem="sasrec")), ("dimerec", dict(gem="mlp")), ("dimerec", dict(p_uncond=0.2, loss_kind="ce")),
    ("dimerec-nodiff", {}),
]
POSITION_FREE = {"gru4rec"}  # reads a history from its first item: no position, so its alone-row is the prefix


def window_batch(data, seed=0):
    sampler = TrainSampler(data, np.arange(data.n_users), batch_size=6 * S, sampling="windows", seed=seed,
                           window_targets=S)
    hist, target = next(iter(sampler.epoch()))
    return Batch(torch.from_numpy(hist), torch.from_numpy(target), data.pad_id)


def each_target_alone(batch: Batch, position_free: bool) -> Batch:
    """One row per target of a windows batch, in the batch's target order, holding only that target's history:
    its window with every later column padded and its own slot (so the same draws fall to it), or for a
    position-free model the plain (left-padded history, next item) prefix row."""
    L, s = batch.hist.shape[1], batch.target.shape[1]
    row, j = (batch.target != batch.pad_id).nonzero(as_tuple=True)  # row-major, as the draws are made
    column, target = L - s + j, batch.target[row, j]  # written out here, not read from the code under test
    hist = batch.hist[row].masked_fill(torch.arange(L)[None, :] > column[:, None], batch.pad_id)
    if position_free:
        shifted = torch.stack([torch.roll(h, L - 1 - int(c)) for h, c in zip(hist, column)])
        return Batch(shifted, target, batch.pad_id)
    alone = torch.full((len(row), s), batch.pad_id, dtype=torch.long)
    alone[torch.arange(len(row)), column - (L - s)] = target
    return Batch(hist, alone, batch.pad_id)


def without_dropout(model):
    """model in training mode but with its dropout layers off: a dropout mask is drawn per position, so a window
    and its targets alone draw different ones (the sasrec GEM keeps SASRec's dropout 0.2)."""
    model.train()
    for module in model.modules():
        if isinstance(module, (torch.nn.Dropout, torch.nn.MultiheadAttention)):  # MHA drops attention weights
            module.eval()
    return model


def loss_and_grads(model, batch, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    terms = model.loss(batch)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in terms.items()}, grads


def assert_same(a, b):
    (terms_a, grads_a), (terms_b, grads_b) = a, b
    assert terms_a.keys() == terms_b.keys()
    for k in terms_a:
        assert terms_a[k] == pytest.approx(terms_b[k], rel=1e-5, abs=1e-6), k
    assert grads_a.keys() == grads_b.keys() and grads_a
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name, settings", WINDOW_MODELS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in s.items())}" for n, s in WINDOW_MODELS])
def test_a_window_scores_each_target_as_that_target_alone_same_draws_same_loss_and_gradients(
        distinct, name, settings):
    assert MODELS[name].takes_windows
    model = without_dropout(build_model(name, distinct, seed=0, **settings))
    batch = window_batch(distinct)
    assert batch.window_targets()[0].numel() > 2 * len(batch.hist)  # several targets a window
    whole = loss_and_grads(model, batch, seed=7)
    alone = loss_and_grads(model, each_target_alone(batch, name in POSITION_FREE), seed=7)
    assert_same(whole, alone)


@pytest.mark.parametrize("name, settings", WINDOW_MODELS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in s.items())}" for n, s in WINDOW_MODELS])
def test_a_windows_last_target_is_scored_as_its_prefix_sample(distinct, name, settings):
    """The last target of a window has its serving history in the window's columns: the windows path and the
    prefixes path of loss() agree on it, positions included."""
    model = without_dropout(build_model(name, distinct, seed=0, **settings))
    batch = window_batch(distinct, seed=2)
    last_only = batch.target.clone()
    last_only[:, :-1] = batch.pad_id
    window = loss_and_grads(model, Batch(batch.hist, last_only, batch.pad_id), seed=11)
    prefix = loss_and_grads(model, Batch(batch.hist, batch.target[:, -1], batch.pad_id), seed=11)
    assert_same(window, prefix)


def test_models_that_cannot_share_a_window_keep_prefixes_and_windows_are_the_default_where_positions_allow():
    assert {n for n, m in MODELS.items() if not m.takes_windows} == {"diffurec", "multvae", "pop"}
    assert {n for n, m in MODELS.items() if m.windows_by_default} == {"sasrec", "gru4rec", "mind"}
    assert all(MODELS[n].takes_windows for n, m in MODELS.items() if m.windows_by_default)


@pytest.mark.parametrize("model, want", [("gru4rec", "windows"), ("comirec-sa", "prefixes"), ("diffurec", "prefixes")])
def test_training_records_its_sampling_epochs_and_why_it_stopped(planted_small, tmp_path, model, want):
    out = tmp_path / model
    _, _, metrics = train_model(model, planted_small, out=out, max_epochs=2, patience=5, valid_max_rows=200,
                                final_max_rows=200, read_test=False, **({"T": 4} if model == "diffurec" else {}))
    saved = json.loads((out / "config.json").read_text())["train_config"]
    assert saved["sampling"] == metrics["sampling"] == want
    assert saved["window_targets"] == (-(-planted_small.max_len // 2) if want == "windows" else None)
    assert metrics["epochs"] == 2 and metrics["epochs_trained"] == 2.0 and metrics["stopped_by"] == "max_epochs"
    assert metrics["targets_per_epoch"] == sum(len(planted_small.sequences[u]) - 1
                                               for u in planted_small.split(0).train
                                               if len(planted_small.sequences[u]) >= 2)


class Killed(Exception):
    """Stands for kill -9 between two checkpoints."""


def test_a_windows_run_killed_mid_epoch_resumes_to_the_uninterrupted_run(planted_small, tmp_path, monkeypatch):
    from dimerec.models.sasrec import SASRec

    calls = {"n": 0}
    original = SASRec.loss

    def dies_at_step_9(self, batch):
        calls["n"] += 1
        if calls["n"] == 9:
            raise Killed
        return original(self, batch)

    common = dict(max_epochs=2, patience=5, valid_max_rows=100, final_max_rows=100, read_test=False,
                  checkpoint_every=4, sampling="windows")
    _, _, straight = train_model("sasrec", planted_small, out=tmp_path / "straight", **common)
    steps_per_epoch = straight["steps"] // 2
    assert steps_per_epoch > 9  # the kill falls within the first epoch, after the checkpoint at step 8
    monkeypatch.setattr(SASRec, "loss", dies_at_step_9)
    with pytest.raises(Killed):
        train_model("sasrec", planted_small, out=tmp_path / "killed", **common)
    monkeypatch.setattr(SASRec, "loss", original)
    _, _, resumed = train_model("sasrec", planted_small, out=tmp_path / "killed", resume=True, **common)
    assert (tmp_path / "killed" / "losses.csv").read_text() == (tmp_path / "straight" / "losses.csv").read_text()
    assert resumed["valid"] == straight["valid"] and resumed["steps"] == straight["steps"]


def test_windows_settings_that_cannot_work_are_refused_before_anything_is_written(planted_small, tmp_path):
    from dimerec.errors import DimeRecError

    with pytest.raises(DimeRecError, match="--sampling windows: diffurec"):
        train_model("diffurec", planted_small, out=tmp_path / "a", sampling="windows")
    with pytest.raises(DimeRecError, match="--window-targets must be in 1..max_len = 1..20"):
        train_model("sasrec", planted_small, out=tmp_path / "b", window_targets=21)
    with pytest.raises(DimeRecError, match="--window-targets 3 applies to --sampling windows only"):
        train_model("comirec-sa", planted_small, out=tmp_path / "d", sampling="prefixes", window_targets=3)
    with pytest.raises(DimeRecError, match="applies to --sampling windows only"):
        train_model("sasrec", planted_small, out=tmp_path / "c", sampling="prefixes", window_targets=3)
    assert not any(tmp_path.iterdir())


def test_a_windows_run_repeats_with_its_seed(planted_small, tmp_path):
    common = dict(max_steps=12, eval_every=6, valid_max_rows=100, final_max_rows=100, read_test=False,
                  sampling="windows")
    for run in "ab":
        train_model("dimerec", planted_small, out=tmp_path / run, **common)
    losses = {k: (tmp_path / k / "losses.csv").read_text() for k in "ab"}
    assert len(losses["a"].splitlines()) == 13 and losses["a"] == losses["b"]
    valid = {k: json.loads((tmp_path / k / "metrics.json").read_text())["valid"] for k in "ab"}
    assert valid["a"] == valid["b"]
